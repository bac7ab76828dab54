"""sd_notify and the watchdog: the protocol on its own, then real daemons under a stand-in
for systemd (`watchdog_harness`) that kills a frozen process and restarts it."""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance import sdnotify
from tests.conftest import ROOT, free_port
from tests.system.watchdog_harness import Event, ServiceManager, UnitSpec

WATCHDOG_S = 3.0  # pings every 1.5 s: slack for a busy machine


# -- the protocol ----------------------------------------------------------------------


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_outside_systemd_every_call_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    """No $NOTIFY_SOCKET: nothing is sent, nothing fails, and there is no watchdog."""
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)
    assert not sdnotify.ready()
    assert not sdnotify.watchdog_ping()
    assert not sdnotify.stopping("bye")
    assert sdnotify.watchdog_interval_s() is None
    assert sdnotify.ping_every_s(5.0) == 5.0


def test_path_and_abstract_sockets_get_the_datagram(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filesystem socket and an `@` abstract one both receive `KEY=VALUE` lines; a status
    text with newlines stays one line."""
    path = str(tmp_path / "notify.sock")
    name = f"fieldbox-unit-{os.getpid()}"
    with _receiver(path) as by_path, _receiver("\0" + name) as abstract:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert sdnotify.ready("up\nand running")
        assert by_path.recv(4096) == b"READY=1\nSTATUS=up and running"
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.watchdog_ping()
        assert abstract.recv(4096) == b"WATCHDOG=1"
    monkeypatch.setenv("NOTIFY_SOCKET", path)  # the listener is gone: no exception
    assert not sdnotify.status("nobody listens")


def test_the_watchdog_interval_is_for_the_named_process_only() -> None:
    """WATCHDOG_USEC in seconds; a WATCHDOG_PID that is not us (or junk) means no watchdog."""
    me = str(os.getpid())
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "2000000"}) == 2.0
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": me}) == 2.0
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "soon"}) is None
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None


# -- real daemons under the harness ----------------------------------------------------


@pytest.fixture(params=["worker", "api", "bridge"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServiceManager]:
    """`fieldbox serve worker`, `serve api` or `serve bridge` run like its unit: Type=notify,
    WatchdogSec=3, Restart=on-failure."""
    process: str = request.param
    argv = [sys.executable, "-m", "appliance", "serve", process]
    if process == "api":
        argv += ["--host", "127.0.0.1", "--port", str(free_port())]
    spec = UnitSpec(
        argv,
        env={"FIELDBOX_DATA": str(tmp_path / "data")},
        watchdog_s=WATCHDOG_S,
        stop_timeout_s=15.0,
        cwd=str(ROOT),
        log_path=str(tmp_path / f"{process}.log"),
    )
    manager = ServiceManager(spec).start()
    try:
        yield manager
    finally:
        manager.close()


def _of(events: list[Event], kind: str, pid: int) -> list[Event]:
    return [e for e in events if e.kind == kind and e.pid == pid]


def test_a_frozen_daemon_is_killed_by_the_watchdog_and_restarted(
    service: ServiceManager,
) -> None:
    """READY=1, pings every half period; SIGSTOP: the deadline passes, the process is
    aborted, the restart is for the watchdog, and the new process is ready and pinging.
    Then a clean stop: STOPPING=1 and exit status 0, and no restart."""
    first = service.wait_for("ready", timeout=60).pid
    service.wait_for("ping", pid=first, count=2, timeout=10)
    assert not [e for e in service.events if e.kind in ("watchdog", "exited")], service.events

    frozen = service.freeze()
    fired = service.wait_for("watchdog", timeout=10)
    assert fired.pid == first
    last_ping = max(e.at for e in _of(service.events, "ping", first))
    assert fired.at - last_ping >= WATCHDOG_S, "fired before the deadline"
    assert fired.at - frozen.at <= WATCHDOG_S + 1.0, "fired late"
    assert not [e for e in _of(service.events, "ping", first) if e.at > frozen.at + 0.2]
    gone = service.wait_for("exited", pid=first, timeout=20)
    assert gone.detail == f"{-signal.SIGABRT} (watchdog)", gone

    restart = service.wait_for("started", count=2, timeout=10)
    assert restart.detail == "restart after watchdog"
    second = service.wait_for("ready", count=2, timeout=60).pid
    assert second == restart.pid != first
    service.wait_for("ping", pid=second, timeout=10)

    assert service.stop() == 0, (service.spec.log_path, service.events[-5:])
    service.wait_for("stopping", pid=second, timeout=5)
    assert len([e for e in service.events if e.kind == "started"]) == 2
    assert not [e for e in service.events if e.kind == "ignored"], "a non-main process sent"
