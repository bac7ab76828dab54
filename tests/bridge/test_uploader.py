"""Blob uploads from the outbox to a real S3 API (moto's server; the core cases on SeaweedFS
too, through `s3_bucket`): what arrives, and when."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from click.testing import CliRunner

from appliance.cli import main
from bridge import s3
from bridge.throttle import Throttle
from bridge.transfer import Body, Calls
from store import blobs
from tests.bridge.faultproxy import FaultProxy
from tests.bridge.s3server import Bucket, MotoServer, s3_env, s3_toml
from tests.bridge.uploadbox import (
    MIB,
    blob_bytes,
    crc,
    get,
    make_box,
    proxy_for,
)
from tests.conftest import ROOT, free_port


@pytest.fixture
def proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    """A fault proxy in front of the session's moto server."""
    yield from proxy_for(moto_server)


def test_blobs_of_every_size_arrive_once_with_their_metadata(
    tmp_path: Path, s3_bucket: Bucket, s3_proxy: FaultProxy
) -> None:
    bucket, proxy = s3_bucket, s3_proxy
    box = make_box(tmp_path, proxy.url, bucket.name)
    sizes = [0, 3, 100_000, 5 * MIB - 1, 5 * MIB, 12 * MIB + 7]  # the last two go in parts
    datas = [blob_bytes(n, i) for i, n in enumerate(sizes)]
    made = [box.add(d, f"f{i}.bin") for i, d in enumerate(datas)]
    seen: list[tuple[int, int]] = []

    result = asyncio.run(box.uploader().drain_once(lambda d, t: seen.append((d, t))))

    assert (result.uploaded, result.failed, result.error) == (6, 0, None)
    for asset, data in zip(made, datas, strict=True):
        body, head = get(bucket, box.key(asset.sha256))
        assert body == data
        assert head["ChecksumCRC64NVME"] == crc(data)
        # The first asset with these bytes: its metadata rides on the blob object.
        assert head["Metadata"]["asset-id"] == asset.id
        assert (head["Metadata"]["location"], head["Metadata"]["kind"]) == ("site1", "capture")
        assert unquote(head["Metadata"]["filename"]) == asset.filename
        assert head["ContentType"] == "application/octet-stream"
    assert box.outbox.pending() == [] and box.outbox.backlog().items == 0
    assert bucket.multipart_uploads() == []
    assert seen and seen[-1][0] == seen[-1][1] == sum(sizes)
    first = {a.sha256: get(bucket, box.key(a.sha256))[1]["LastModified"] for a in made}

    # The same files stored again as new assets: S3 has their blobs, so only metadata goes up
    # (blobs under 1 MiB try a conditional PUT, refused with 412, instead of a HEAD first).
    again = [box.add(d, f"again{i}.bin") for i, d in enumerate(datas)]
    before = proxy.bytes_up
    result = box.drain()
    assert (result.uploaded, result.already_there, result.failed) == (0, 6, 0)
    assert proxy.bytes_up - before < 300_000  # the small PUTs, HEADs and six JSON documents
    assert box.outbox.pending() == []
    assert bucket.multipart_uploads() == []  # the uploads started beside the HEADs: aborted
    meta_key = s3.location_key(box.cfg.bridge.s3, "acme", "eu", "site1", "assets")
    for a in again:
        assert get(bucket, box.key(a.sha256))[1]["LastModified"] == first[a.sha256]
        meta = json.loads(get(bucket, f"{meta_key}/{a.id}.json")[0])
        assert (meta["asset_id"], meta["sha256"], meta["filename"]) == (a.id, a.sha256, a.filename)
        assert (meta["location"], meta["kind"], meta["size"]) == ("site1", "capture", a.size)
    assert box.drain().done == 0  # nothing left due: a further pass sends nothing


def test_existing_objects_are_kept_and_never_overwritten(tmp_path: Path, s3_bucket: Bucket) -> None:
    bucket = s3_bucket
    box = make_box(tmp_path, bucket.endpoint, bucket.name)
    same = box.add(blob_bytes(50_000, 1), "same.bin")
    small = box.add(blob_bytes(60_000, 2), "small.bin")
    large = box.add(blob_bytes(6 * MIB, 3), "large.bin")
    put = bucket.client.put_object
    put(Bucket=bucket.name, Key=box.key(same.sha256), Body=blob_bytes(50_000, 1),
        ChecksumAlgorithm="CRC64NVME")  # fmt: skip
    for asset in (small, large):
        put(Bucket=bucket.name, Key=box.key(asset.sha256), Body=b"someone else's bytes",
            ChecksumAlgorithm="CRC64NVME")  # fmt: skip
    stamp = get(bucket, box.key(same.sha256))[1]["LastModified"]

    result = box.drain()

    assert (result.done, result.already_there, result.uploaded, result.failed) == (1, 1, 0, 2)
    assert get(bucket, box.key(same.sha256))[1]["LastModified"] == stamp
    pending = {i.asset_id: i for i in box.outbox.pending()}
    assert set(pending) == {small.id, large.id}
    for asset in (small, large):
        assert get(bucket, box.key(asset.sha256))[0] == b"someone else's bytes"
        error = pending[asset.id].last_error or ""
        assert "different object already exists" in error and "not overwritten" in error
    assert bucket.multipart_uploads() == []


def test_bandwidth_cap_is_honoured(tmp_path: Path, bucket: Bucket) -> None:
    box = make_box(tmp_path, bucket.endpoint, bucket.name)
    for i in range(3):
        box.add(blob_bytes(MIB, i))
    up = box.uploader(rate=MIB)
    start = time.monotonic()
    result = box.drain(up)
    elapsed = time.monotonic() - start
    assert result.uploaded == 3
    assert result.bytes_sent / elapsed <= 1.3 * MIB  # loose: the point is it is capped


def test_uploads_wait_for_the_window_stop_when_it_closes_and_resume_reusing_parts(
    tmp_path: Path, bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = make_box(tmp_path, bucket.endpoint, bucket.name)
    data = blob_bytes(12 * MIB, 5)  # parts of 5, 5 and 2 MiB, sent side by side
    asset = box.add(data)
    up = box.uploader(rate=4 * MIB)
    allowed = False

    def parts_in_s3() -> list[dict[str, Any]]:
        ups = [u for u in bucket.multipart_uploads() if "/blobs/" in u["Key"]]
        if not ups:
            return []
        found = bucket.client.list_parts(
            Bucket=bucket.name, Key=ups[0]["Key"], UploadId=ups[0]["UploadId"]
        )
        return list(found.get("Parts", []))

    async def scenario() -> float:
        nonlocal allowed
        stop = asyncio.Event()
        task = asyncio.create_task(up.run(stop, lambda: allowed))
        await asyncio.sleep(0.5)
        assert up.status()["state"] == "waiting for a sync window"
        assert box.outbox.pending()[0].attempts == 0 and bucket.multipart_uploads() == []
        allowed = True
        deadline = time.monotonic() + 30
        while not await asyncio.to_thread(parts_in_s3):
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.05)
        assert up.status()["in_flight"] == 1
        allowed = False  # the window closes mid-upload: the pass stops, the upload waits
        while up.status()["state"] != "waiting for a sync window":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert up.status()["in_flight"] == 0
        stop.set()
        start = time.monotonic()
        await asyncio.wait_for(task, 5)
        return time.monotonic() - start

    assert asyncio.run(scenario()) < 2
    row = box.outbox.pending()[0]
    assert [u["UploadId"] for u in bucket.multipart_uploads()] == [row.multipart_upload_id]
    finished = {p["PartNumber"] for p in parts_in_s3()}
    assert 0 < len(finished) < 3

    # moto's ListParts leaves out part checksums; S3 reports the CRC64NVME of what it got,
    # so add the checksums of the bytes that went up, and count what is sent again.
    sent: list[int] = []
    real_call = Calls.__call__

    async def s3_like(self: Calls, op: str, body: Any = None, **kw: Any) -> dict[str, Any]:
        out = await real_call(self, op, body, **kw)
        if op == "list_parts":
            for p in out.get("Parts", []):
                start = (p["PartNumber"] - 1) * 5 * MIB
                p["ChecksumCRC64NVME"] = crc(data[start : start + p["Size"]])
        if op == "upload_part" and "/blobs/" in kw["Key"]:  # not the server check's
            sent.append(kw["PartNumber"])
        return out

    monkeypatch.setattr(Calls, "__call__", s3_like)
    result = box.drain()
    assert result.uploaded == 1
    assert sorted(sent) == sorted({1, 2, 3} - finished)
    assert get(bucket, box.key(asset.sha256))[0] == data
    assert bucket.multipart_uploads() == [] and box.outbox.pending() == []


def test_with_no_bucket_the_uploader_idles_and_the_outbox_waits(tmp_path: Path) -> None:
    box = make_box(tmp_path, "", "")
    box.add(b"kept for later")
    up = box.uploader()

    async def idle() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(up.run(stop, lambda: True))
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.wait_for(task, 2)

    asyncio.run(idle())
    assert up.status()["remote"] == "no remote"
    assert "no remote" in (box.drain(up).error or "")
    assert box.outbox.backlog().items == 1


def test_odd_rows_are_closed_with_a_note_and_orphan_uploads_are_aborted(
    tmp_path: Path, bucket: Bucket
) -> None:
    box = make_box(tmp_path, bucket.endpoint, bucket.name)
    loc = box.locs.get("site1")
    # A crash between the outbox row and the asset row: the blob exists, the asset never did.
    orphan_blob = blob_bytes(20_000, 1)
    src = box.files / "crashed"
    src.write_bytes(orphan_blob)
    sha = blobs.sha256_file(src)
    blobs.adopt(box.layout, loc, src, sha)
    common = dict(account="acme", geo_prefix="eu", location="site1", kind="capture",
                  filename="x", mime_type="application/octet-stream")  # fmt: skip
    box.outbox.add(asset_id="site1.0000000000000000dead", sha256=sha, size=20_000, **common)
    # A row whose blob file is gone.
    box.outbox.add(asset_id="site1.0000000000000000beef", sha256="ab" * 32, size=5, **common)
    # A multipart upload under one of our blob keys that no row refers to, and one that is
    # not ours (another prefix) which must be left alone.
    mine = box.key("cd" * 32)
    bucket.client.create_multipart_upload(Bucket=bucket.name, Key=mine)
    bucket.client.create_multipart_upload(Bucket=bucket.name, Key="elsewhere/blobs/" + "cd" * 32)
    up = box.uploader()
    up.asset_grace_s = 0  # the rows above are fresh; a real crash leaves old ones

    result = box.drain(up)

    assert (result.done, result.failed) == (2, 0)
    assert box.outbox.pending() == []
    notes = {r[0]: r[1] for r in box.outbox.db.read().execute("SELECT asset_id, note FROM outbox")}
    assert "never created" in notes["site1.0000000000000000dead"]
    assert "gone" in notes["site1.0000000000000000beef"]
    assert get(bucket, box.key(sha))[0] == orphan_blob
    assert not [k for k in bucket.keys(prefix="") if "/assets/" in k]
    assert [u["Key"] for u in bucket.multipart_uploads()] == ["elsewhere/blobs/" + "cd" * 32]


def test_sync_status_shows_the_backlog_and_sync_now_fails_while_s3_is_down(
    tmp_path: Path, bucket: Bucket
) -> None:
    runner = CliRunner()
    cfg_path = tmp_path / "fieldbox.toml"
    box = make_box(tmp_path, "", "")
    box.add(blob_bytes(3 * MIB, 1))
    env = {"FIELDBOX_DATA": str(box.layout.root)}
    for toml, remote in (("", "no remote"), (s3_toml(bucket.endpoint, bucket.name), bucket.name)):
        cfg_path.write_text(toml)
        out = runner.invoke(main, ["--config", str(cfg_path), "sync", "status"], env=env)
        assert out.exit_code == 0, out.output
        assert remote in out.output
        assert "1 items, 3.0 MiB" in out.output and "last error:    none" in out.output
        args = ["--config", str(cfg_path), "sync", "status", "--json"]
        assert json.loads(runner.invoke(main, args, env=env).output)["backlog"]["items"] == 1

    dead = f"http://127.0.0.1:{free_port()}"
    cfg_path.write_text(s3_toml(dead, bucket.name) + "connect_timeout_s = 1.0\n")
    argv = [sys.executable, "-m", "appliance", "--config", str(cfg_path), "sync", "now"]
    run = subprocess.run(argv, env={**os.environ, **env, **s3_env()}, cwd=ROOT,
                         capture_output=True, timeout=60)  # fmt: skip
    assert run.returncode == 1
    assert "cannot connect" in run.stderr.decode() and "backlog: 1 items" in run.stdout.decode()
    out = runner.invoke(main, ["--config", str(cfg_path), "sync", "status"], env=env)
    assert "last error:    cannot connect" in out.output


def test_a_lifted_cap_releases_waiting_uploads_at_once() -> None:
    throttle = Throttle(1000)  # 100 kB would take 100 s at this rate

    async def scenario() -> float:
        start = time.monotonic()
        waiter = asyncio.create_task(throttle.acquire(100_000))
        await asyncio.sleep(0.1)
        # A sync window opens: the scheduler thread lifts the cap.
        await asyncio.to_thread(throttle.set_rate, 0)
        await asyncio.wait_for(waiter, 2)
        return time.monotonic() - start

    assert asyncio.run(scenario()) < 2


def test_a_row_another_process_is_uploading_is_left_to_it(tmp_path: Path, bucket: Bucket) -> None:
    box = make_box(tmp_path, bucket.endpoint, bucket.name)
    asset = box.add(b"being sent by the daemon")
    row = box.outbox.pending()[0].id
    lock = box.layout.root / "bridge" / "uploader.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], "
         "os.O_RDWR | os.O_CREAT); fcntl.lockf(fd, fcntl.LOCK_EX, 1, int(sys.argv[2])); "
         "print('held', flush=True); time.sleep(60)", str(lock), str(row)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        result = box.drain()
        assert (result.busy, result.done) == (1, 0)
        assert box.outbox.pending()[0].attempts == 0 and bucket.keys() == []
    finally:
        holder.kill()
        holder.wait()
    assert box.drain().uploaded == 1
    assert get(bucket, box.key(asset.sha256))[0] == b"being sent by the daemon"


def test_small_puts_skip_the_100_continue_round_trip(tmp_path: Path, bucket: Bucket) -> None:
    """A small PutObject goes without `Expect: 100-continue` (a round trip saved per blob);
    a large body (a part) still asks first, so S3 can refuse it before it is sent."""
    box = make_box(tmp_path, bucket.endpoint, bucket.name)
    cfg = box.cfg.bridge.s3
    sent: list[tuple[str, Any]] = []

    def record(request: Any, **_: Any) -> None:
        expect = request.headers.get("Expect")  # bytes, once prepared
        sent.append((request.method, expect.decode() if isinstance(expect, bytes) else expect))

    async def run() -> None:
        async with s3.open_client(cfg) as client:
            client.meta.events.register("before-send.s3", record)
            calls = Calls(client, cfg)
            throttle = Throttle(0)
            for n in (100_000, 2 * MIB):
                data = blob_bytes(n, n)
                body = Body(data, throttle, lambda _: None)
                await calls("put_object", body=body, Key=f"expect/{n}", ContentLength=n)

    asyncio.run(run())
    assert sent == [("PUT", None), ("PUT", "100-continue")]
