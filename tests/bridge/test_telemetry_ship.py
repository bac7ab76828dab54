"""Telemetry shipping against a real S3 API (moto's server), with spool files written by the
real `store.telemetry.Spool`: past hours through a stand-in `time` module, the live hour with
the real clock."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import store.telemetry
from bridge import s3
from bridge.config import BridgeConfig
from bridge.telemetry_batches import FINISH_GRACE_S, Batch, Journal, SpoolFile, finished_files
from bridge.telemetry_ship import ShipResult, TelemetryShipper
from store.paths import Layout
from store.telemetry import Spool
from tests.bridge.s3server import Bucket, s3_env, s3_toml
from tests.conftest import free_port, make_config

KEY = re.compile(r"^fieldbox/telemetry/box1/(\d{4})/(\d{2})/(\d{2})/(\d{2})-(\d{6})\.jsonl\.gz$")
FAST = "connect_timeout_s = 1.0\nread_timeout_s = 2.0\n"  # still inside [bridge.s3]


def _setup(
    tmp_path: Path, endpoint: str, bucket: str, extra: str = ""
) -> tuple[BridgeConfig, Layout]:
    cfg = make_config(tmp_path / "data", s3_toml(endpoint, bucket) + FAST + extra)
    layout = Layout(cfg.data_dir)
    layout.ensure()
    return cfg.bridge, layout


def _write(
    monkeypatch: pytest.MonkeyPatch, root: Path, writer: str, at: float, n: int, **kw: Any
) -> list[bytes]:
    """`n` records from a Spool whose clock reads `at`; returns the lines as written."""
    fake = SimpleNamespace(
        time=lambda: at, gmtime=time.gmtime, strftime=time.strftime, monotonic=time.monotonic
    )
    with monkeypatch.context() as m:
        m.setattr(store.telemetry, "time", fake)
        spool = Spool(root, writer=writer, **kw)
        lines = [_record(spool, writer, i) for i in range(n)]
        spool.close()
    return lines


def _record(spool: Spool, writer: str, i: int) -> bytes:
    record = {"writer": writer, "i": i, "pad": "x" * (i % 37)}
    spool.append(record)
    return store.telemetry._encoder.encode(record) + b"\n"


def _objects(bucket: Bucket) -> dict[str, bytes]:
    out = {}
    for k in bucket.keys("fieldbox/telemetry/"):
        out[k] = gzip.decompress(bucket.client.get_object(Bucket=bucket.name, Key=k)["Body"].read())
    return out


def _in_seq_order(objects: dict[str, bytes]) -> bytes:
    return b"".join(objects[k] for k in sorted(objects, key=lambda k: KEY.match(k)[5]))  # type: ignore[index]


def _ship(shipper: TelemetryShipper) -> ShipResult:
    async def go() -> ShipResult:
        async with s3.open_client(shipper.cfg.s3) as client:
            return await shipper.ship_once(client)

    return asyncio.run(go())


def _files(layout: Layout) -> set[str]:
    return {p.name for p in layout.telemetry_dir.glob("*/*.jsonl")}


def test_finished_files_ship_as_gzip_objects_and_are_pruned_after(
    tmp_path: Path, bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past-hour files (rotated) and a rotated-away current file ship as objects at the right
    keys, cut under max_object_bytes, whose lines are exactly the lines written, in order; each
    file is deleted only once S3 holds its object; the live files stay; a second pass ships
    nothing."""
    cfg, layout = _setup(
        tmp_path, bucket.endpoint, bucket.name, "[bridge.telemetry]\nmax_object_bytes = 3000\n"
    )
    root = layout.telemetry_dir
    past = time.time() - 3 * 3600
    old = _write(monkeypatch, root, "gateway-7", past, 120, max_file_bytes=2500)
    rotated = Spool(root, writer="worker-9", max_file_bytes=100)
    rotated_lines = [_record(rotated, "worker-9", i) for i in range(6)]
    live = Spool(root, writer="gateway-8")
    _record(live, "gateway-8", 0)
    live_now, rotated_now = live.current_path, rotated.current_path
    assert live_now is not None and rotated_now is not None
    finished_rotated = rotated_now.name.replace(".1.jsonl", ".0.jsonl")
    assert rotated_now.name.endswith(".1.jsonl")
    rotated_finished_bytes = (rotated_now.parent / finished_rotated).read_bytes()
    assert len(list(root.glob("*/*-gateway-7.*.jsonl"))) > 2  # the writer rotated

    shipper = TelemetryShipper(cfg, layout)
    finish = shipper.journal.finish
    seen: list[str] = []

    def checked_finish(batch: Batch) -> int:
        stored = bucket.keys()
        assert batch.key in stored, "files pruned before S3 held the object"
        assert all((root / p.rel).exists() for p in batch.pieces if p.last)
        seen.append(batch.key)
        return finish(batch)

    monkeypatch.setattr(shipper.journal, "finish", checked_finish)
    result = _ship(shipper)

    objects = _objects(bucket)
    assert set(objects) == set(result.keys) == set(seen) and result.objects == len(objects) > 2
    hour = time.gmtime(past)
    old_keys = [k for k in objects if KEY.match(k)[4] == f"{hour.tm_hour:02d}"]  # type: ignore[index]
    for k in objects:
        m = KEY.match(k)
        assert m is not None, k
    for k in old_keys:
        m = KEY.match(k)
        assert m is not None
        assert (m[1], m[2], m[3]) == tuple(time.strftime("%Y %m %d", hour).split())
        assert len(objects[k]) <= 3000
    assert b"".join(objects[k] for k in sorted(old_keys)) == b"".join(old)
    assert _in_seq_order(objects).count(rotated_finished_bytes) == 1
    assert b"".join(rotated_lines).startswith(rotated_finished_bytes)
    assert _files(layout) == {live_now.name, rotated_now.name}
    assert result.files_pruned > 3

    again = _ship(TelemetryShipper(cfg, layout))
    assert again.objects == 0 and set(_objects(bucket)) == set(objects)
    status = shipper.status()
    assert status["shipped_objects"] == len(objects) and status["spool_files"] == 2
    live.close()
    rotated.close()


def test_a_crash_between_upload_and_prune_neither_loses_nor_duplicates(
    tmp_path: Path, bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after PutObject and before the prune: the restart finds its own object under the
    journaled key (412, same sha256), prunes, and the bucket holds every line exactly once. A
    crash before PutObject: the restart sends the same batch to the same key."""
    cfg, layout = _setup(tmp_path, bucket.endpoint, bucket.name)
    lines = _write(monkeypatch, layout.telemetry_dir, "gateway-1", time.time() - 7200, 40)
    lines += _write(monkeypatch, layout.telemetry_dir, "gateway-1", time.time() - 3 * 3600, 30)

    class Crash(Exception):
        pass

    first = TelemetryShipper(cfg, layout)

    def crash(batch: Batch) -> int:
        raise Crash

    monkeypatch.setattr(first.journal, "finish", crash)
    with pytest.raises(Crash):
        _ship(first)
    landed = set(_objects(bucket))
    assert len(landed) == 1 and len(_files(layout)) == 2

    second = TelemetryShipper(cfg, layout)
    journaled = second.journal.state.pending
    assert journaled is not None and journaled.key in landed

    async def no_put(*args: Any, **kw: Any) -> bool:
        raise Crash

    monkeypatch.setattr(second, "_put", no_put)
    with pytest.raises(Crash):
        _ship(second)  # the first batch is pruned, the second is journaled, then the "crash"
    planned = TelemetryShipper(cfg, layout).journal.state.pending
    assert planned is not None and planned.key not in _objects(bucket)

    third = TelemetryShipper(cfg, layout)
    result = _ship(third)
    objects = _objects(bucket)
    assert result.keys == [planned.key] and len(objects) == 2
    assert sorted(_in_seq_order(objects).splitlines()) == sorted(b"".join(lines).splitlines())
    assert _files(layout) == set()


def test_s3_unreachable_deletes_nothing_and_run_stops_promptly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the endpoint on a closed port, `run` reports the error in status, keeps every
    file, and returns soon after `stop` is set."""
    cfg, layout = _setup(
        tmp_path,
        f"http://127.0.0.1:{free_port()}",
        "nobucket",
        "[bridge.telemetry]\ninterval_s = 0.2\n",
    )
    for name, value in s3_env().items():
        monkeypatch.setenv(name, value)
    _write(monkeypatch, layout.telemetry_dir, "gateway-1", time.time() - 3 * 3600, 10)
    before = _files(layout)
    shipper = TelemetryShipper(cfg, layout)

    async def go() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(shipper.run(stop, lambda: s3.open_client(cfg.s3)))
        for _ in range(200):
            if shipper.last_error:
                break
            await asyncio.sleep(0.05)
        stop.set()
        started = time.monotonic()
        await asyncio.wait_for(task, timeout=10)
        return time.monotonic() - started

    assert asyncio.run(go()) < 5
    assert shipper.status()["last_error"]
    assert _files(layout) == before
    assert shipper.status()["shipped_objects"] == 0


def test_cap_drops_the_oldest_finished_files_and_counts_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over `max_spool_bytes`, the oldest finished files go first, the live file never, nothing
    outside the spool; the counter is reported and survives a restart."""
    cfg, layout = _setup(
        tmp_path, "http://127.0.0.1:9", "nobucket", "[bridge.telemetry]\nmax_spool_bytes = 3000\n"
    )
    root = layout.telemetry_dir
    now = time.time()
    for hours_ago in (5, 4, 3):
        _write(monkeypatch, root, "gateway-1", now - hours_ago * 3600, 30)
    live = Spool(root, writer="gateway-2")
    _record(live, "gateway-2", 0)
    other = root / "notes.txt"
    other.write_text("not telemetry")
    sizes = {p.name: p.stat().st_size for p in root.glob("*/*.jsonl")}
    oldest = sorted(root.glob("*/*-gateway-1.0.jsonl"))

    shipper = TelemetryShipper(cfg, layout)
    dropped = shipper.enforce_cap()

    left = {p.name for p in root.glob("*/*.jsonl")}
    assert dropped >= 1 and not oldest[0].exists()
    assert live.current_path is not None and live.current_path.name in left
    assert sum(sizes[n] for n in left) <= 3000
    gone = set(sizes) - left
    assert len(gone) == dropped
    assert other.exists()
    for status in (shipper.status(), TelemetryShipper(cfg, layout).status()):
        assert status["dropped_files"] == dropped
        assert status["dropped_bytes"] == sum(sizes[n] for n in gone)
    assert shipper.enforce_cap() == 0
    live.close()


def _file(writer: str, day: str, hour: int, n: int) -> SpoolFile:
    return SpoolFile(Path("x"), f"{day}/{hour:02d}-{writer}.{n}.jsonl", day, hour, writer, n, 1)


@pytest.mark.parametrize(
    ("after_hour_s", "newer", "finished"),
    [
        (-600, False, False),  # the hour is still on
        (FINISH_GRACE_S / 2, False, False),  # just over: a late line may still come
        (FINISH_GRACE_S + 1, False, True),
        (-600, True, True),  # the writer rotated to a later file
    ],
)
def test_the_finished_rule(after_hour_s: float, newer: bool, finished: bool) -> None:
    """A writer's newest file is finished only a grace period after its hour; older ones at once."""
    f = _file("gw-1", "2026-01-02", 10, 0)
    files = [f, _file("gw-1", "2026-01-02", 10, 1)] if newer else [f]
    assert (f in finished_files(files, f.hour_end() + after_hour_s)) is finished


def test_journal_keys_never_repeat_across_restarts(tmp_path: Path) -> None:
    """The seq counter is journaled with each batch, so a restart never reuses a key."""
    layout = Layout(tmp_path)
    root = layout.telemetry_dir

    def key_for(day: str, hour: int, seq: int) -> str:
        return f"{day}/{hour}-{seq}"

    keys = []
    for i in range(3):
        (root / "2026-01-02").mkdir(parents=True, exist_ok=True)
        (root / "2026-01-02" / f"10-w.{i}.jsonl").write_bytes(b'{"a":1}\n')
        journal = Journal(layout, key_for, lambda: 2e9, None)
        with journal.exclusive():
            planned = journal.plan(1000)
            assert planned is not None
            keys.append(planned[0].key)
            journal.finish(planned[0])
    assert len(set(keys)) == 3


def test_a_key_holding_other_content_is_never_overwritten(
    tmp_path: Path, bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A foreign object under the next key (a lost journal) stays as it was and the batch takes
    the next seq; sending the same batch twice is a 412 that counts as shipped."""
    cfg, layout = _setup(tmp_path, bucket.endpoint, bucket.name)
    past = time.time() - 3 * 3600
    lines = _write(monkeypatch, layout.telemetry_dir, "gateway-1", past, 20)
    day = time.strftime("%Y/%m/%d", time.gmtime(past))
    taken = f"fieldbox/telemetry/box1/{day}/{time.gmtime(past).tm_hour:02d}-000000.jsonl.gz"
    bucket.client.put_object(Bucket=bucket.name, Key=taken, Body=gzip.compress(b"other\n"))

    shipper = TelemetryShipper(cfg, layout)
    result = _ship(shipper)

    objects = _objects(bucket)
    assert objects[taken] == b"other\n"
    assert result.keys == [taken.replace("-000000.", "-000001.")]
    assert objects[result.keys[0]] == b"".join(lines)

    async def again() -> bool:
        batch = Batch(result.keys[0], 1, "", 0, [], hashlib.sha256(b"".join(lines)).hexdigest(), 0)
        async with s3.open_client(cfg.s3) as client:
            return await shipper._put(client, batch, gzip.compress(b"".join(lines), 9))

    assert asyncio.run(again()) is True
    assert _objects(bucket)[result.keys[0]] == b"".join(lines)
