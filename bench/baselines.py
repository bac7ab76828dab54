"""The baselines fieldbox is compared with: a raw SQLite commit loop and a raw TCP-to-file copy.

Run as a script (`python baselines.py sink DIR`) it is the raw TCP sink server: it prints its
port, then for each connection reads an 8-byte big-endian length and that many bytes into a
new file in DIR, fsyncs it, answers b"OK" and deletes the file.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

from benchlib import BenchError, child_options

DOCUMENTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    collection TEXT NOT NULL, key TEXT NOT NULL, body BLOB NOT NULL, etag TEXT NOT NULL,
    project TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (collection, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS documents_project ON documents (project, collection, key)
"""


def raw_sqlite_writes(
    db_path: Path, body: bytes, *, keys: int, warmup: float, duration: float
) -> float:
    """Commits per second of `BEGIN IMMEDIATE; INSERT OR REPLACE; COMMIT` (WAL, synchronous=FULL).

    The row has the shape and size of a fieldbox document row; `keys` keys are written in turn.
    """
    conn = sqlite3.connect(str(db_path), isolation_level=None)
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise BenchError(f"baseline could not switch to WAL (got {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        for statement in DOCUMENTS_SCHEMA.split(";"):
            conn.execute(statement)
        sql = (
            "INSERT OR REPLACE INTO documents "
            "(collection, key, body, etag, project, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        names = [f"w{i}" for i in range(keys)]
        count = 0
        n = 0
        start = time.perf_counter() + warmup
        end = start + duration
        now = time.perf_counter()
        while now < end:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(sql, ("bench", names[n % keys], body, f'"{n:020x}"', "p1", now, now))
            conn.execute("COMMIT")
            n += 1
            now = time.perf_counter()
            if now >= start:
                count += 1
        return count / duration
    finally:
        conn.close()


class RawSink:
    """The raw TCP sink server, in its own process."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "sink", str(directory)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            **child_options(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.isdigit():
            self.proc.kill()
            raise BenchError(f"raw sink did not start (said {line!r})")
        self.port = int(line)

    def copy(self, data: bytes) -> float:
        """Seconds from the first byte sent until the sink says the file is fsynced."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=300) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t0 = time.perf_counter()
            sock.sendall(struct.pack(">Q", len(data)))
            sock.sendall(data)
            ack = sock.recv(16)
            elapsed = time.perf_counter() - t0
        if ack != b"OK":
            raise BenchError(f"raw sink answered {ack!r}")
        return elapsed


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = conn.recv(n - len(out))
        if not chunk:
            raise ConnectionError("client went away")
        out += chunk
    return bytes(out)


def serve_sink(directory: Path) -> None:
    """Accept connections forever; copy each one's bytes into an fsynced file (see module doc)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    print(server.getsockname()[1], flush=True)
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    seq = 0
    while True:
        conn, _ = server.accept()
        with conn:
            (length,) = struct.unpack(">Q", _recv_exact(conn, 8))
            seq += 1
            path = directory / f"copy-{seq}.bin"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                left = length
                while left:
                    n = conn.recv_into(view, min(left, len(buf)))
                    if not n:
                        raise ConnectionError("client went away mid-copy")
                    done = 0
                    while done < n:
                        done += os.write(fd, view[done:n])
                    left -= n
                os.fsync(fd)
            finally:
                os.close(fd)
            conn.sendall(b"OK")
            path.unlink()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "sink":
        with contextlib.suppress(KeyboardInterrupt):
            serve_sink(Path(sys.argv[2]))
    else:
        sys.exit("usage: baselines.py sink DIR")
