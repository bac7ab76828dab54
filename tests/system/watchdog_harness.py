"""A small stand-in for systemd's service manager, for tests where systemd is not PID 1.

It does for one service what the units ask systemd to do: passes `$NOTIFY_SOCKET`,
`$WATCHDOG_USEC` and `$WATCHDOG_PID` to the process, accepts notifications only from the
main process (`NotifyAccess=main`, checked through the sender's SCM_CREDENTIALS), counts
the service up at READY=1, kills it with SIGABRT (then SIGKILL) when a watchdog deadline
passes without a WATCHDOG=1, and restarts it on failure (`Restart=on-failure`,
`RestartSec=`, `StartLimitBurst=` within `StartLimitIntervalSec=`). Everything it sees
and does is kept as a list of `Event`s for the test to assert on.
"""

from __future__ import annotations

import os
import secrets
import select
import signal
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field

# SIGTERM and friends end a service cleanly as far as Restart=on-failure is concerned.
_CLEAN_SIGNALS = {signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE}
_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True)
class Event:
    """One thing the manager saw or did, at a monotonic time, about one process."""

    at: float
    kind: str  # started ready ping status stopping ignored watchdog start_timeout exited ...
    pid: int
    detail: str = ""


@dataclass
class UnitSpec:
    """The parts of a service unit the harness honours."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    watchdog_s: float = 2.0  # WatchdogSec=
    restart_s: float = 0.2  # RestartSec=
    start_timeout_s: float = 60.0  # TimeoutStartSec=
    stop_timeout_s: float = 30.0  # TimeoutStopSec= (and TimeoutAbortSec=)
    start_limit_burst: int = 5  # StartLimitBurst=
    start_limit_interval_s: float = 60.0  # StartLimitIntervalSec=
    cwd: str | None = None
    log_path: str | None = None


class NotifySocket:
    """The manager's end: an abstract-namespace datagram socket that reads sender creds."""

    def __init__(self) -> None:
        self.name = f"@fieldbox-test-{secrets.token_hex(6)}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)

    def receive(self, timeout: float) -> tuple[int, dict[str, str]] | None:
        """(sender pid, fields) of the next datagram, or None after `timeout` seconds."""
        if not select.select([self.sock], [], [], timeout)[0]:
            return None
        data, ancdata, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(_CREDS.size))
        pid = 0
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = _CREDS.unpack(payload[: _CREDS.size])[0]
        fields = dict(
            line.split("=", 1) for line in data.decode(errors="replace").splitlines() if "=" in line
        )
        return pid, fields

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


class ServiceManager:
    """Runs one service like systemd would, from a thread of its own."""

    def __init__(self, spec: UnitSpec) -> None:
        self.spec = spec
        self.notify = NotifySocket()
        self.events: list[Event] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self._changed = threading.Condition()
        self._quit = threading.Event()
        self._stop_requested = False
        self._starts: list[float] = []
        self._state = "dead"  # starting -> active -> dead (exit seen and handled)
        self._started_at = 0.0
        self._last_ping = 0.0
        self._restart_at: float | None = None
        self._restart_reason = ""
        self._log = open(spec.log_path, "ab") if spec.log_path else None  # noqa: SIM115
        self._thread = threading.Thread(target=self._run, name="service-manager", daemon=True)

    # -- the test's side ---------------------------------------------------------------

    def start(self) -> ServiceManager:
        """Start the service and the manager's loop."""
        self._spawn("start")
        self._thread.start()
        return self

    @property
    def pid(self) -> int:
        """The main process's pid (0 before the first start)."""
        return self.proc.pid if self.proc is not None else 0

    def wait_for(
        self, kind: str, *, pid: int | None = None, count: int = 1, timeout: float = 60.0
    ) -> Event:
        """The `count`-th event of `kind` (of `pid` if given); AssertionError past `timeout`."""
        deadline = time.monotonic() + timeout

        def found() -> list[Event]:
            return [e for e in self.events if e.kind == kind and pid in (None, e.pid)]

        with self._changed:
            while len(found()) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {kind} event (pid {pid}) in time: {self.events}")
                self._changed.wait(left)
            return found()[count - 1]

    def freeze(self) -> Event:
        """SIGSTOP the main process: the hang the watchdog is there for."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        return self._record("frozen", self.proc.pid)

    def stop(self) -> int | None:
        """Stop the service like `systemctl stop`: SIGTERM, SIGKILL after the stop timeout."""
        self._stop_requested = True
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        self._record("stop_requested", proc.pid)
        self._kill(proc, signal.SIGTERM, self.spec.stop_timeout_s)
        return proc.returncode

    def close(self) -> None:
        """Stop the service if it runs, end the loop, release the socket."""
        self.stop()
        self._quit.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.notify.close()
        if self._log is not None:
            self._log.close()

    # -- the manager's side ------------------------------------------------------------

    def _record(self, kind: str, pid: int, detail: str = "") -> Event:
        event = Event(time.monotonic(), kind, pid, detail)
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()
        return event

    def _spawn(self, why: str) -> None:
        now = time.monotonic()
        self._starts = [t for t in self._starts if now - t < self.spec.start_limit_interval_s]
        if len(self._starts) >= self.spec.start_limit_burst:
            self._record("start_limit_hit", 0, why)
            return
        self._starts.append(now)
        env = {
            **os.environ,
            **self.spec.env,
            "NOTIFY_SOCKET": self.notify.name,
            "WATCHDOG_USEC": str(int(self.spec.watchdog_s * 1_000_000)),
        }
        # systemd sets WATCHDOG_PID to the main pid; `exec` from a shell keeps its pid, so
        # the shell can name it. No core files from the watchdog's SIGABRT.
        wrapper = ["sh", "-c", 'ulimit -c 0; WATCHDOG_PID=$$ exec "$@"', "sh"]
        out = self._log if self._log is not None else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [*wrapper, *self.spec.argv], env=env, cwd=self.spec.cwd, stdout=out, stderr=out
        )
        self._state = "starting"
        self._started_at = now
        self._record("started", self.proc.pid, why)

    def _run(self) -> None:
        while not self._quit.is_set():
            got = self.notify.receive(0.05)
            if got is not None:
                self._on_message(*got)
            self._check()

    def _on_message(self, pid: int, fields: dict[str, str]) -> None:
        if self.proc is None or pid != self.proc.pid:
            self._record("ignored", pid, repr(fields))  # NotifyAccess=main
            return
        now = time.monotonic()
        if fields.get("READY") == "1" and self._state == "starting":
            self._state, self._last_ping = "active", now
            self._record("ready", pid, fields.get("STATUS", ""))
        if fields.get("WATCHDOG") == "1":
            self._last_ping = now
            self._record("ping", pid)
        if fields.get("STOPPING") == "1":
            self._record("stopping", pid, fields.get("STATUS", ""))
        if "STATUS" in fields:
            self._record("status", pid, fields["STATUS"])

    def _check(self) -> None:
        proc = self.proc
        now = time.monotonic()
        if proc is None:
            return
        if proc.poll() is None and not self._stop_requested:
            if self._state == "active" and now - self._last_ping > self.spec.watchdog_s:
                late = now - self._last_ping
                self._record("watchdog", proc.pid, f"no ping for {late:.2f} s")
                self._kill(proc, signal.SIGABRT, self.spec.stop_timeout_s)
                self._exited(proc, failed=True, reason="watchdog")
            elif self._state == "starting" and now - self._started_at > self.spec.start_timeout_s:
                self._record("start_timeout", proc.pid)
                self._kill(proc, signal.SIGTERM, self.spec.stop_timeout_s)
                self._exited(proc, failed=True, reason="start-timeout")
        elif proc.poll() is not None and self._state != "dead":
            self._exited(proc, failed=_failed(proc.returncode), reason="exit")
        if self._restart_at is not None and now >= self._restart_at and not self._stop_requested:
            self._restart_at = None
            self._spawn(f"restart after {self._restart_reason}")

    def _exited(self, proc: subprocess.Popen[bytes], *, failed: bool, reason: str) -> None:
        self._record("exited", proc.pid, f"{proc.returncode} ({reason})")
        self._state = "dead"
        if failed and not self._stop_requested:
            self._restart_at = time.monotonic() + self.spec.restart_s
            self._restart_reason = reason

    def _kill(self, proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
        # Like systemd: the signal, then SIGCONT so a stopped process can act on it.
        _signal(proc, sig)
        _signal(proc, signal.SIGCONT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._record("sigkill", proc.pid)
            proc.kill()
            proc.wait()


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, sig)


def _failed(returncode: int) -> bool:
    if returncode >= 0:
        return returncode != 0
    return signal.Signals(-returncode) not in _CLEAN_SIGNALS
