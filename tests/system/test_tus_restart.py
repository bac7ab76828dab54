"""tus uploads survive a server restart (SIGTERM or kill -9), and a stalled PATCH lets go."""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.system.conftest import StartServer
from tests.system.helpers import (
    OCTETS,
    TUS,
    asset_bytes,
    check_blobs,
    check_databases,
    client,
    create_location,
    sha256,
    tus_create,
    tus_finish,
    tus_offset,
    tus_patch,
    write_config,
)

KIB = 1024


def _patch_head(url: str, token: str, length: int, offset: int = 0) -> bytes:
    """The head of a raw tus PATCH at `offset` announcing `length` bytes (for raw sockets)."""
    return (
        f"PATCH {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Tus-Resumable: 1.0.0\r\nUpload-Offset: {offset}\r\nContent-Type: {OCTETS}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


MIB = 1024 * KIB


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_resume_after_restart(start_server: StartServer, token: str, how: str) -> None:
    """HEAD after a restart gives the acknowledged offset; the rest completes the exact file."""
    data = os.urandom(600 * KIB + 123)
    half = len(data) // 2
    first = start_server()
    with client(first.url, token) as c:
        create_location(c, "site")
        url = tus_create(c, "site", len(data), "clip.bin")
        r = tus_patch(c, url, 0, data[:half])
        assert r.status_code == 204, r.text
        assert int(r.headers["upload-offset"]) == half
    if how == "sigterm":
        first.stop()
    else:
        first.kill()
    data_dir = first.data_dir
    check_databases(data_dir)

    second = start_server()
    with client(second.url, token) as c:
        assert tus_offset(c, url) == half
        stale = tus_patch(c, url, 0, data[:10])
        assert stale.status_code == 409, stale.text
        r = tus_patch(c, url, half, data[half:])
        assert r.status_code == 204, r.text
        assert int(r.headers["upload-offset"]) == len(data)
        asset_id = r.headers["fieldbox-asset-id"]
        assert asset_bytes(c, asset_id) == data
        status = c.get(url).json()
        assert status["asset_id"] == asset_id
        assert status["offset"] == len(data)
    second.stop()
    check_databases(data_dir)
    assert check_blobs(data_dir) == 1


def _read_response(sock: socket.socket, deadline: float) -> bytes:
    """Whatever the server answers on a raw socket until it closes or the deadline passes."""
    got = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except OSError:
            break
        if not chunk:
            break
        got += chunk
        if b"\r\n\r\n" in got:
            break
    return got


def test_stalled_patch_releases_lock_and_keeps_bytes(
    start_server: StartServer, token: str, tmp_path: Path
) -> None:
    """A silent PATCH holds its lock (423) until the stall timeout, then keeps its bytes."""
    config = write_config(tmp_path / "fieldbox.toml", "[api]\nupload_stall_timeout_s = 1.0\n")
    srv = start_server(config_path=config)
    data = os.urandom(MIB)
    sent = 200 * KIB
    with client(srv.url, token) as c:
        create_location(c, "site")
        url = tus_create(c, "site", len(data), "stall.bin")
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        try:
            sock.sendall(_patch_head(url, token, len(data)) + data[:sent])
            time.sleep(0.2)
            # An empty PATCH at offset 0 is harmless if it gets in before the stalled one
            # takes the lock; once that one holds it, it must be turned away with 423.
            probes: list[int] = []
            for _ in range(10):
                probe = tus_patch(c, url, 0, b"")
                probes.append(probe.status_code)
                if probe.status_code == 423:
                    assert probe.json()["status"] == 423
                    break
                time.sleep(0.03)
            assert probes[-1] == 423, f"second PATCH while the first is in flight got {probes}"
            answer = _read_response(sock, time.monotonic() + 15)
        finally:
            sock.close()
        status_line = answer.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1.1 204"), answer[:500]
        offset = tus_offset(c, url)
        assert offset == sent  # every byte that arrived before the stall was kept
        assert f"upload-offset: {offset}".encode() in answer.lower()
        # The lock is free again: the rest goes in and the file is exactly the original.
        asset_id = tus_finish(c, url, data)
        assert asset_bytes(c, asset_id) == data


def test_patch_after_stall_timeout_is_not_locked(
    start_server: StartServer, token: str, tmp_path: Path
) -> None:
    """A client that vanished mid-PATCH (socket closed) leaves the upload resumable at once."""
    config = write_config(tmp_path / "fieldbox.toml", "[api]\nupload_stall_timeout_s = 1.0\n")
    srv = start_server(config_path=config)
    data = os.urandom(512 * KIB)
    with client(srv.url, token) as c:
        create_location(c, "site")
        url = tus_create(c, "site", len(data), "gone.bin")
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        sock.sendall(_patch_head(url, token, len(data)) + data[: 100 * KIB])
        time.sleep(0.2)
        sock.close()
        offset = 0
        for _ in range(100):
            r = c.head(url, headers=TUS)
            offset = int(r.headers["upload-offset"])
            if offset > 0:
                break
            time.sleep(0.05)
        assert offset == 100 * KIB  # everything sent before the client vanished
        for _ in range(100):
            r = tus_patch(c, url, offset, data[offset:])
            if r.status_code != 423:
                break
            time.sleep(0.05)
        assert r.status_code == 204, r.text
        assert asset_bytes(c, r.headers["fieldbox-asset-id"]) == data
        unknown = c.get("/v1/uploads/" + "0" * 32)
        assert (unknown.status_code, unknown.json()["error"]) == (404, "not_found")


def test_sigterm_during_patch(start_server: StartServer, token: str) -> None:
    """A restart while a client is still sending ends that PATCH cleanly; resume completes."""
    srv = start_server()
    data = os.urandom(2 * MIB)
    with client(srv.url, token) as c:
        create_location(c, "site")
        url = tus_create(c, "site", len(data), "slow.bin")
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    sent = 256 * KIB
    sock.sendall(_patch_head(url, token, len(data)) + data[:sent])
    stop_sending = threading.Event()

    def trickle() -> None:
        """A slow link: a little more every 100 ms until the server stops listening."""
        pos = sent
        while not stop_sending.is_set() and pos < len(data) - 8 * KIB:
            try:
                sock.sendall(data[pos : pos + 8 * KIB])
            except OSError:
                return
            pos += 8 * KIB
            stop_sending.wait(0.1)

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    try:
        time.sleep(0.5)
        assert srv.proc is not None
        srv.proc.terminate()
        answer = _read_response(sock, time.monotonic() + 30)
    finally:
        stop_sending.set()
        sender.join(5)
        sock.close()
    srv.stop()
    # A graceful stop ends the PATCH with a 204 that acknowledges what had arrived.
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 204"), answer[:300]
    second = start_server()
    with client(second.url, token) as c:
        offset = tus_offset(c, url)
        assert sent <= offset < len(data)
        assert f"upload-offset: {offset}".encode() in answer.lower()
        assert asset_bytes(c, tus_finish(c, url, data)) == data
    assert check_blobs(second.data_dir) == 1


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_kill9_mid_patch_keeps_every_ack(start_server: StartServer, token: str) -> None:
    """kill -9 while a PATCH is half received: after the restart HEAD gives at least every
    acknowledged offset and no more than the part file held, those bytes are the client's,
    and finishing from there stores a blob with the file's sha256."""
    data = os.urandom(4 * MIB)
    first = start_server()
    with client(first.url, token) as c:
        create_location(c, "site")
        url = tus_create(c, "site", len(data), "cut.bin")
        acked: list[int] = []
        for start in range(0, MIB + 1, 256 * KIB):
            r = tus_patch(c, url, start, data[start : start + 256 * KIB])
            assert r.status_code == 204, r.text
            acked.append(int(r.headers["upload-offset"]))
    assert acked == [n * 256 * KIB for n in range(1, 6)]
    part = first.data_dir / "uploads" / f"{url.rsplit('/', 1)[1]}.part"
    sock = socket.create_connection(("127.0.0.1", first.port), timeout=10)
    try:
        sock.sendall(_patch_head(url, token, len(data) - acked[-1], offset=acked[-1]))
        sock.sendall(data[acked[-1] : acked[-1] + 512 * KIB])
        # The crash instant: the server has written part of a PATCH it never acknowledged.
        _wait_for(lambda: part.stat().st_size > acked[-1], 15, "the in-flight bytes on disk")
        first.kill()
    finally:
        sock.close()
    on_disk = part.stat().st_size
    check_databases(first.data_dir)

    second = start_server()
    with client(second.url, token) as c:
        offset = tus_offset(c, url)
        assert max(acked) <= offset <= on_disk, (acked, offset, on_disk)
        assert part.read_bytes()[:offset] == data[:offset]
        asset_id = tus_finish(c, url, data)
        assert c.get(f"/v1/assets/{asset_id}").json()["sha256"] == sha256(data)
        assert asset_bytes(c, asset_id) == data
    second.stop()
    check_databases(second.data_dir)
    assert check_blobs(second.data_dir) == 1


def test_restart_after_power_loss_reads_offset_from_part_file(
    start_server: StartServer, token: str
) -> None:
    """Offsets are committed without the WAL's fsync, which a power loss may roll back. The
    state it leaves is built on disk (uploads.db behind the fsynced part file, the boot id of
    another boot): the restart takes the part file's size, so no acknowledgement is lost."""
    data = os.urandom(MIB)
    first = start_server()
    with client(first.url, token) as c:
        create_location(c, "site")
        url = tus_create(c, "site", len(data), "power.bin")
        for start in range(0, 768 * KIB, 256 * KIB):
            r = tus_patch(c, url, start, data[start : start + 256 * KIB])
            assert r.status_code == 204, r.text
        acked = int(r.headers["upload-offset"])
    assert acked == 768 * KIB
    first.kill()
    data_dir = first.data_dir
    conn = sqlite3.connect(data_dir / "uploads.db")
    with conn:
        rolled = conn.execute(
            "UPDATE uploads SET offset = ? WHERE id = ?", (256 * KIB, url.rsplit("/", 1)[1])
        )
        assert rolled.rowcount == 1
    conn.close()
    marker = data_dir / "uploads" / "boot_id"
    marker.write_text("a-boot-before-the-power-loss\n")

    second = start_server()
    with client(second.url, token) as c:
        assert tus_offset(c, url) == acked
        asset_id = tus_finish(c, url, data)
        assert c.get(f"/v1/assets/{asset_id}").json()["sha256"] == sha256(data)
    assert marker.read_text().strip() != "a-boot-before-the-power-loss"
    second.stop()
    check_databases(data_dir)
