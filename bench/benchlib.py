"""Shared pieces of the benchmarks: a lean HTTP/1.1 client, the api process, machine facts."""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent


class BenchError(RuntimeError):
    """Something went wrong that makes the measurement meaningless (a non-2xx, a dead server)."""


@dataclass
class HttpResponse:
    """Status, lower-cased headers and body of one response."""

    status: int
    headers: dict[str, str]
    body: bytes


class RawHttp:
    """One persistent keep-alive HTTP/1.1 connection with almost no client-side overhead."""

    def __init__(self, host: str, port: int, timeout: float = 120.0) -> None:
        self.host = host
        self.port = port
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = bytearray()

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | memoryview = b"",
    ) -> HttpResponse:
        """Send one request (body streamed with sendall) and read the whole response."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if len(body) <= 64 * 1024:
            self.sock.sendall(head + bytes(body))
        else:
            self.sock.sendall(head)
            self.sock.sendall(body)
        return self._read_response(method)

    def _read_response(self, method: str) -> HttpResponse:
        buf = self._buf
        while (end := buf.find(b"\r\n\r\n")) < 0:
            self._fill()
        head = bytes(buf[:end]).decode("latin-1").split("\r\n")
        del buf[: end + 4]
        status = int(head[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            return HttpResponse(status, headers, self._read_chunked())
        length = 0 if method == "HEAD" else int(headers.get("content-length", "0"))
        while len(buf) < length:
            self._fill()
        body = bytes(buf[:length])
        del buf[:length]
        return HttpResponse(status, headers, body)

    def _read_chunked(self) -> bytes:
        # node's http server (the tus peer) sends bodies chunked; no trailers expected.
        buf, body = self._buf, bytearray()
        while True:
            while (eol := buf.find(b"\r\n")) < 0:
                self._fill()
            size = int(bytes(buf[:eol]).split(b";")[0], 16)
            while len(buf) < eol + 2 + size + 2:
                self._fill()
            body += buf[eol + 2 : eol + 2 + size]
            del buf[: eol + 2 + size + 2]
            if size == 0:
                return bytes(body)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise BenchError(f"server at {self.host}:{self.port} closed the connection")
        self._buf += chunk

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


def expect_2xx(resp: HttpResponse, what: str) -> HttpResponse:
    """Return `resp`, or raise BenchError naming `what` when the status is not 2xx."""
    if not 200 <= resp.status < 300:
        raise BenchError(f"{what}: HTTP {resp.status}: {resp.body[:300]!r}")
    return resp


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LoggedProcess:
    """A child process with its output in `log_path`: stopped and read the same way."""

    proc: subprocess.Popen[bytes] | None
    log_path: Path
    _log: IO[bytes] | None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; close the log file."""
        stop_process(self.proc)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the process wrote (for error reports)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class ApiServer(LoggedProcess):
    """A real `fieldbox serve api` process on a free port, its log in a file."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    token: str = ""
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=Path)
    _log: IO[bytes] | None = None
    # Another server to start instead of fieldbox ({host}, {port} and {dir} filled in).
    command: list[str] | None = None

    def env(self) -> dict[str, str]:
        """The environment of every fieldbox command this bench runs."""
        return {**os.environ, "FIELDBOX_DATA": str(self.data_dir), "PYTHONUNBUFFERED": "1"}

    def create_key(self) -> str:
        """`fieldbox keys create --scope field`; the token is the last word printed."""
        out = subprocess.run(
            [sys.executable, "-m", "appliance", "keys", "create", "--scope=field", "--name=bench"],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0 or not out.stdout.split():
            raise BenchError(f"keys create failed ({out.returncode}): {out.stderr.strip()}")
        self.token = out.stdout.split()[-1]
        return self.token

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until /health answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        argv = [
            sys.executable,
            *("-m", "appliance", "serve", "api"),
            f"--host={self.host}",
            f"--port={self.port}",
        ]
        if self.command is not None:
            fill = {"host": self.host, "port": str(self.port), "dir": str(self.data_dir)}
            argv = [part.format(**fill) for part in self.command]
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            **child_options(),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                conn = RawHttp(self.host, self.port, timeout=5)
            except OSError:
                time.sleep(0.05)
                continue
            try:
                if conn.request("GET", "/health").status == 200:
                    return
            except (OSError, BenchError):
                pass
            finally:
                conn.close()
            time.sleep(0.05)
        raise BenchError(f"server did not answer /health within {timeout:.0f}s")

    def auth(self) -> dict[str, str]:
        """The Authorization header for the bench key."""
        return {"Authorization": f"Bearer {self.token}"}

    def connect(self) -> RawHttp:
        """A fresh keep-alive connection to the server."""
        return RawHttp(self.host, self.port)

    def create_location(self, loc_id: str) -> None:
        """POST /v1/locations (expects 2xx)."""
        body = json.dumps({"id": loc_id, "account": "bench", "geo_prefix": "b0", "name": loc_id})
        conn = self.connect()
        try:
            resp = conn.request(
                "POST",
                "/v1/locations",
                {**self.auth(), "Content-Type": "application/json"},
                body.encode(),
            )
            expect_2xx(resp, "POST /v1/locations")
        finally:
            conn.close()


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the bench process dies (Linux only)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def child_options() -> dict[str, Any]:
    """Popen options for a helper: its own session, and SIGTERM if the bench dies first."""
    # Own session: a terminal's Ctrl-C reaches only the bench, which stops helpers in order.
    return {"start_new_session": True, "preexec_fn": _die_with_parent}


def stop_process(proc: subprocess.Popen[Any] | None, grace: float = 10.0) -> None:
    """Stop a child we started: SIGTERM, wait, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _mount_of(path: Path) -> tuple[str, str, str, str]:
    """(device, mount point, fstype, options) of the filesystem holding `path`."""
    real = str(path.resolve())
    best = ("?", "/", "?", "")
    try:
        with open("/proc/mounts") as fh:
            for line in fh:
                dev, mnt, fstype, opts = line.split()[:4]
                mnt = mnt.replace("\\040", " ")
                inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= len(best[1]):
                    best = (dev, mnt, fstype, opts)
    except OSError:
        pass
    return best


def machine_facts(data_dir: Path) -> list[str]:
    """Lines describing the machine and the data dir's filesystem."""
    dev, mnt, fstype, opts = _mount_of(data_dir)
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "?"
            )
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"cpu        {os.cpu_count()} cores ({affinity} usable), {cpu}; load avg {load}",
        f"python     {platform.python_version()} ({sys.executable}), "
        f"sqlite {sqlite3.sqlite_version}",
        f"kernel     {platform.system()} {platform.release()}",
        f"data dir   {data_dir}",
        f"filesystem {fstype} on {dev} at {mnt} ({opts})",
    ]
