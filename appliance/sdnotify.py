"""The sd_notify protocol, without libsystemd: readiness, status, stopping and watchdog pings.

Each message is one datagram of `KEY=VALUE` lines sent to the AF_UNIX socket named by
`$NOTIFY_SOCKET` (a leading `@` means Linux's abstract namespace). Outside systemd that
variable is unset and every call here does nothing, so the daemons call these freely.
The units use `NotifyAccess=main`: only the process systemd started may send, which is
why the pings come from the daemon's own loops and never from a helper process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Mapping

# systemd reads at most this much of one notification; longer status texts are cut.
_MAX_DATAGRAM = 4096


def _address(env: Mapping[str, str]) -> str | None:
    raw = env.get("NOTIFY_SOCKET", "")
    if not raw:
        return None
    if raw.startswith("@"):
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    return None  # systemd only ever hands out absolute paths or abstract names


def notify(*lines: str, env: Mapping[str, str] | None = None) -> bool:
    """Send one notification of `KEY=VALUE` lines; True if it was sent, False outside systemd."""
    address = _address(os.environ if env is None else env)
    if address is None or not lines:
        return False
    payload = "\n".join(lines).encode()[:_MAX_DATAGRAM]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(payload, address)
    except OSError:
        # A manager that went away must not take the daemon down with it.
        return False
    return True


def ready(status_text: str | None = None) -> bool:
    """Startup is finished: systemd moves the unit to `active` and starts the watchdog."""
    lines = ["READY=1"]
    if status_text:
        lines.append(f"STATUS={_one_line(status_text)}")
    return notify(*lines)


def stopping(status_text: str | None = None) -> bool:
    """Shutdown has begun (so a slow stop is not mistaken for a hang)."""
    lines = ["STOPPING=1"]
    if status_text:
        lines.append(f"STATUS={_one_line(status_text)}")
    return notify(*lines)


def status(text: str) -> bool:
    """A one-line status shown by `systemctl status`."""
    return notify(f"STATUS={_one_line(text)}")


def watchdog_ping() -> bool:
    """Tell systemd the process is alive; call at least every `watchdog_interval_s()`."""
    return notify("WATCHDOG=1")


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """systemd's watchdog timeout in seconds (`$WATCHDOG_USEC`), or None if none applies.

    `$WATCHDOG_PID`, when set, names the process the watchdog is meant for; a child that
    inherited the environment is not it and must not ping.
    """
    env = os.environ if env is None else env
    raw_pid = env.get("WATCHDOG_PID")
    if raw_pid:
        try:
            if int(raw_pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None


def ping_every_s(default: float | None = None) -> float | None:
    """How often to ping: half the watchdog timeout (systemd's advice), else `default`."""
    timeout = watchdog_interval_s()
    return timeout / 2 if timeout is not None else default


async def watchdog_loop() -> None:
    """Ping for as long as the event loop runs; returns at once when no watchdog is set.

    Run it as a task on the loop that serves requests: if that loop blocks, the pings
    stop and systemd restarts the process, which is the point.
    """
    every = ping_every_s()
    if every is None:
        return
    while True:
        watchdog_ping()
        await asyncio.sleep(every)


async def stop_task(task: asyncio.Task[None] | None) -> None:
    """Cancel a watchdog task and wait for it to end."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _one_line(text: str) -> str:
    return " ".join(text.split())
