"""Blob uploads when things go wrong: a killed process, a dead or half-open link, a restarted
S3 server, bad settings. Nothing is lost, nothing is marked done early, nothing hangs."""

from __future__ import annotations

import os
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bridge.faultproxy import FaultProxy
from tests.bridge.s3server import Bucket, MotoServer, s3_env, s3_toml
from tests.bridge.uploadbox import (
    MIB,
    UPLOAD,
    blob_bytes,
    crc,
    get,
    make_box,
    proxy_for,
)
from tests.conftest import ROOT, free_port, make_config


@pytest.fixture
def proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    """A fault proxy in front of the session's moto server."""
    yield from proxy_for(moto_server)


def test_sigkill_mid_multipart_then_restart_stores_the_object_once(
    tmp_path: Path, bucket: Bucket
) -> None:
    box = make_box(tmp_path, bucket.endpoint, bucket.name)
    upload = UPLOAD.replace("concurrency = 4", "concurrency = 2")
    cap = f"bandwidth_bytes_per_s = {4 * MIB}\n"  # 12 MiB takes about 3 s
    cfg_path = tmp_path / "fieldbox.toml"
    cfg_path.write_text(s3_toml(bucket.endpoint, bucket.name) + upload + cap)
    data = blob_bytes(12 * MIB, 9)
    asset = box.add(data, "big.mp4")
    argv = [sys.executable, "-m", "appliance", "--config", str(cfg_path), "sync", "now"]
    env = {**os.environ, "FIELDBOX_DATA": str(box.layout.root), **s3_env()}

    first = subprocess.Popen(
        argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    upload_id = None
    while upload_id is None:
        assert first.poll() is None, first.communicate()[0].decode()[-2000:]
        assert time.monotonic() < deadline, "no part arrived in S3"
        for up in bucket.multipart_uploads():
            if "/blobs/" not in up["Key"]:
                continue  # the server check's (bridge/s3probe.py), not the blob's
            parts = bucket.client.list_parts(
                Bucket=bucket.name, Key=up["Key"], UploadId=up["UploadId"]
            )
            if parts.get("Parts"):
                upload_id = up["UploadId"]
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert box.outbox.pending()[0].multipart_upload_id == upload_id  # resumable

    second = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, timeout=120)

    assert second.returncode == 0, second.stdout.decode() + second.stderr.decode()
    assert bucket.keys(box.key("")) == [box.key(asset.sha256)]
    body, head = get(bucket, box.key(asset.sha256))
    assert body == data and head["ChecksumCRC64NVME"] == crc(data)
    assert bucket.multipart_uploads() == []
    assert box.outbox.pending() == []


def test_blobs_cross_a_slow_distant_link_intact(
    tmp_path: Path, s3_bucket: Bucket, s3_proxy: FaultProxy
) -> None:
    bucket, proxy = s3_bucket, s3_proxy
    # 40 ms round trips and one 8 MB/s uplink that every connection shares, as a field
    # office's; small, single-PUT and multipart blobs.
    rate = 8_000_000
    proxy.latency(0.02)
    proxy.bandwidth(rate)
    # Not a dead-link test: a loaded machine may keep a part's answer past 2 s (seen
    # once in a whole-suite run: "no reply within 2s" on the 12 MiB blob).
    box = make_box(tmp_path, proxy.url, bucket.name, read_timeout_s=15.0)
    datas = [blob_bytes(n, 40 + i) for i, n in enumerate((100_000, 3 * MIB, 12 * MIB + 7))]
    made = [box.add(d) for d in datas]

    start = time.monotonic()
    result = box.drain()
    elapsed = time.monotonic() - start

    assert (result.uploaded, result.failed, result.error) == (3, 0, None)
    for asset, data in zip(made, datas, strict=True):
        body, head = get(bucket, box.key(asset.sha256))
        assert body == data and head["ChecksumCRC64NVME"] == crc(data)
    assert bucket.multipart_uploads() == [] and box.outbox.pending() == []
    # The link really was in the way: every byte crossed it, no faster than its rate.
    total = sum(map(len, datas))
    assert proxy.bytes_up >= total
    assert elapsed >= 0.95 * total / rate


def test_unreachable_s3_keeps_rows_pending_then_the_backlog_drains(
    tmp_path: Path, bucket: Bucket, proxy: FaultProxy
) -> None:
    box = make_box(tmp_path, proxy.url, bucket.name)
    datas = [blob_bytes(n, i) for i, n in enumerate((10_000, 200_000, 6 * MIB))]
    made = [box.add(d) for d in datas]

    # A reset shows up as refused or reset depending on when it hits; both name the target.
    for fault, words in ((proxy.down, "cannot connect"), (proxy.blackhole, "stopped answering"),
                         (proxy.reset, f"S3 at {proxy.url}")):  # fmt: skip
        fault()
        box.outbox.retry_all_now()
        up = box.uploader()
        start = time.monotonic()
        result = box.drain(up)
        assert time.monotonic() - start < 30
        assert result.done == 0 and result.error is not None and words in result.error
        assert words in (up.status()["last_error"] or "")
        pending = box.outbox.pending()
        assert len(pending) == 3 and all(i.state == "pending" for i in pending)
        tried = [i for i in pending if i.attempts]
        assert tried and all(words in (i.last_error or "") for i in tried)
        assert words in (box.outbox.backlog().last_error or "")
    assert bucket.keys() == []

    proxy.passthrough()
    box.outbox.retry_all_now()
    result = box.drain()
    assert (result.uploaded, result.error) == (3, None)
    assert box.outbox.pending() == []
    for asset, data in zip(made, datas, strict=True):
        assert get(bucket, box.key(asset.sha256))[0] == data
    assert bucket.multipart_uploads() == []


def test_backlog_drains_after_the_s3_server_itself_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_env().items():
        monkeypatch.setenv(name, value)
    server = MotoServer(tmp_path).start()
    try:
        server.client().create_bucket(Bucket="restart-test")  # type: ignore[attr-defined]
        box = make_box(tmp_path, server.url, "restart-test")
        datas = [blob_bytes(n, i) for i, n in enumerate((1_000, 7 * MIB))]
        made = [box.add(d) for d in datas]
        server.stop()

        result = box.drain()
        assert result.done == 0 and "cannot connect" in (result.error or "")
        assert len(box.outbox.pending()) == 2

        server = MotoServer(tmp_path, port=server.port).start()
        client: Any = server.client()
        client.create_bucket(Bucket="restart-test")
        box.outbox.retry_all_now()
        result = box.drain()
        assert (result.uploaded, result.error) == (2, None)
        for asset, data in zip(made, datas, strict=True):
            key = box.key(asset.sha256)
            assert client.get_object(Bucket="restart-test", Key=key)["Body"].read() == data
        assert box.outbox.pending() == []
    finally:
        server.stop()


def test_bad_config_gives_a_clear_error_and_no_crash(tmp_path: Path, bucket: Bucket) -> None:
    cases = [
        (bucket.endpoint, "no-such-bucket-here", "", "does not exist"),
        (f"http://127.0.0.1:{free_port()}", bucket.name, "", "cannot connect"),
        (bucket.endpoint, bucket.name, f'credentials_file = "{tmp_path}/missing"\n',
         "credentials"),
    ]  # fmt: skip
    for i, (endpoint, name, extra_s3, words) in enumerate(cases):
        box = make_box(tmp_path / str(i), endpoint, name)
        if extra_s3:
            toml = s3_toml(endpoint, name) + extra_s3 + UPLOAD
            box.cfg = make_config(box.layout.root, toml)
        box.add(b"a blob")
        up = box.uploader()
        result = box.drain(up)
        assert result.done == 0 and words in (result.error or ""), result.error
        status = up.status()
        assert words in (status["last_error"] or "") and status["retry_at"] > time.time() - 1
        assert box.outbox.backlog().items == 1


class _Refuser(socketserver.BaseRequestHandler):
    """S3 refusing a PUT that did not wait for 100-continue, as a client can see it: the
    PUT's connection is reset before any answer comes through; a HEAD gets 403."""

    def handle(self) -> None:
        stream = self.request.makefile("rb")
        method = stream.readline().split(b" ")[0]
        while stream.readline() not in (b"\r\n", b""):
            pass
        if method == b"HEAD":
            self.request.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.request.close()


def test_a_small_put_refused_before_its_body_is_read_reports_the_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small PUTs go without `Expect: 100-continue`, so S3 can refuse one before reading
    its body, and the reset may hide the answer; a HEAD of the key then shows the refusal,
    and the bridge reports access denied, not a broken link. The rows stay pending."""
    for name, value in s3_env().items():
        monkeypatch.setenv(name, value)
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Refuser)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        box = make_box(tmp_path, url, "bkt")
        for n in (1_000, 200_000, MIB - 1):
            box.add(blob_bytes(n, n))
            result = box.drain()
            assert result.done == 0 and "access denied" in (result.error or ""), result.error
            box.outbox.retry_all_now()
        assert len(box.outbox.pending()) == 3
    finally:
        server.shutdown()
        server.server_close()
