"""A stand-in for `systemctl`, for running the Ansible playbooks against a throwaway target.

`tests/fleet/bin/systemctl` runs this; the tests put that directory first on PATH, so
Ansible's `systemd_service` module (and anything else) calls it instead of the real one.
It treats `$FAKE_SYSTEMCTL_ROOT` as `/`: units are read from `$ROOT/etc/systemd/system`,
and every absolute path in a unit's `ExecStart=`, `Environment=` and `WorkingDirectory=`
is moved under `$ROOT`, so the real units from `systemd/` run unchanged against a temp
dir. It refuses to do anything without `$FAKE_SYSTEMCTL_ROOT`.

Only the services named in `$FAKE_SYSTEMCTL_RUN` (comma-separated) really run; the other
units are bookkeeping (active or not, enabled or not), so a test can run the api alone.
Started processes are detached (own session, output to `$ROOT/var/log/fake-systemd/`) and
their pids kept in `$ROOT/run/fake-systemd/`. `start` returns at once, like
`systemctl --no-block`: there is no sd_notify here, readiness is for the caller to check.
Stopping sends SIGTERM to the main process, then SIGKILL to its process group after
`TimeoutStopSec=` (at most `$FAKE_SYSTEMCTL_STOP_TIMEOUT`, default 15 s), as KillMode=mixed.
Every call is appended to `$ROOT/run/fake-systemd/calls.log`, noting whether the file
`$FAKE_SYSTEMCTL_WATCH` (if set) existed at that moment.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

_REWRITE = ("/opt/", "/etc/", "/var/", "/run/", "/srv/", "/Library/")


class Box:
    """The fake system under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.unit_dir = root / "etc/systemd/system"
        self.state = root / "run/fake-systemd"
        self.logs = root / "var/log/fake-systemd"
        self.state.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        run = os.environ.get("FAKE_SYSTEMCTL_RUN", "")
        self.run = {u.strip() for u in run.split(",") if u.strip()}
        self.stop_timeout = float(os.environ.get("FAKE_SYSTEMCTL_STOP_TIMEOUT", "15"))

    # -- units ------------------------------------------------------------------------

    def unit(self, name: str) -> dict[str, list[str]] | None:
        """The unit file's `Key=value` lines (all sections), or None if there is none."""
        path = self.unit_dir / name
        if not path.is_file():
            return None
        keys: dict[str, list[str]] = {}
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", ";", "[")) or "=" not in line:
                continue
            k, v = line.split("=", 1)
            keys.setdefault(k.strip(), []).append(v.strip())
        return keys

    def members(self, target: str) -> list[str]:
        """The units a target pulls in (`Wants=`/`Requires=`) that exist here."""
        unit = self.unit(target) or {}
        names = [n for k in ("Wants", "Requires") for v in unit.get(k, []) for n in v.split()]
        return [n for n in names if self.unit(n) is not None]

    def rewrite(self, value: str) -> str:
        """An absolute path moved under the root; anything else unchanged."""
        if value.startswith(_REWRITE) and not value.startswith(str(self.root)):
            return str(self.root) + value
        return value

    # -- state ------------------------------------------------------------------------

    def _pid_file(self, name: str) -> Path:
        return self.state / f"{name}.pid"

    def _marker(self, name: str) -> Path:
        return self.state / f"{name}.active"

    def enabled_file(self, name: str) -> Path:
        return self.state / f"{name}.enabled"

    def pid(self, name: str) -> int | None:
        """The live main pid of a running service, if any."""
        try:
            pid = int(self._pid_file(name).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if alive(pid) else None

    def is_active(self, name: str) -> bool:
        """Whether a unit counts as active (a live process, or a marked stub/target)."""
        if name.endswith(".service") and name in self.run:
            return self.pid(name) is not None
        return self._marker(name).exists()

    def is_enabled(self, name: str) -> bool:
        """Whether `enable` was called for the unit."""
        return self.enabled_file(name).exists()

    # -- actions ----------------------------------------------------------------------

    def start(self, name: str) -> None:
        """Start a unit (a target: its members) unless it is active."""
        if name.endswith(".target"):
            for member in self.members(name):
                self.start(member)
            self._marker(name).touch()
            return
        if self.is_active(name):
            return
        if name not in self.run:
            self._marker(name).touch()
            return
        unit = self.unit(name) or {}
        argv = [self.rewrite(a) for a in shlex.split(unit["ExecStart"][-1].lstrip("-@"))]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        for assignment in unit.get("Environment", []):
            for item in shlex.split(assignment):
                k, _, v = item.partition("=")
                env[k] = self.rewrite(v)
        cwd = self.rewrite(unit.get("WorkingDirectory", ["/"])[-1])
        log = (self.logs / f"{name}.log").open("ab")
        log.write(f"--- start {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd if Path(cwd).is_dir() else str(self.root),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self._pid_file(name).write_text(str(proc.pid))

    def stop(self, name: str) -> None:
        """Stop a unit (a target: every unit that is `PartOf=` it, and its members)."""
        if name.endswith(".target"):
            part_of = [
                f.name
                for f in sorted(self.unit_dir.glob("*.service"))
                if name in " ".join((self.unit(f.name) or {}).get("PartOf", [])).split()
            ]
            for member in dict.fromkeys(part_of + self.members(name)):
                self.stop(member)
            self._marker(name).unlink(missing_ok=True)
            return
        self._marker(name).unlink(missing_ok=True)
        pid = self.pid(name)
        self._pid_file(name).unlink(missing_ok=True)
        if pid is None:
            return
        unit = self.unit(name) or {}
        timeout = min(float(unit.get("TimeoutStopSec", ["90"])[-1]), self.stop_timeout)
        stop_process(pid, timeout)


def alive(pid: int) -> bool:
    """Whether pid is a live process (not gone, not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def stop_process(pid: int, timeout: float) -> None:
    """SIGTERM to the main process; SIGKILL to its group after timeout, and to what is left."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # the session leader's group: whatever is left


def _show(box: Box, name: str) -> str:
    if box.unit(name) is None:
        return f"Id={name}\nLoadState=not-found\nActiveState=inactive\nSubState=dead\n"
    active = box.is_active(name)
    return (
        f"Id={name}\nLoadState=loaded\n"
        f"ActiveState={'active' if active else 'inactive'}\n"
        f"SubState={'running' if active else 'dead'}\n"
        f"UnitFileState={'enabled' if box.is_enabled(name) else 'disabled'}\n"
        f"MainPID={box.pid(name) or 0}\n"
    )


def main(argv: Sequence[str]) -> int:
    """Run one `systemctl` command line; the exit code systemctl would give."""
    root = os.environ.get("FAKE_SYSTEMCTL_ROOT", "")
    if not root or not Path(root).is_dir():
        print("fake systemctl: FAKE_SYSTEMCTL_ROOT is not set to a directory", file=sys.stderr)
        return 1
    box = Box(Path(root).resolve())
    # $FAKE_SYSTEMCTL_WATCH: a file whose presence each call notes (e.g. the drain flag).
    watch = os.environ.get("FAKE_SYSTEMCTL_WATCH", "")
    note = f" [{Path(watch).name} present]" if watch and Path(watch).exists() else ""
    with (box.state / "calls.log").open("a") as calls:
        calls.write(" ".join(argv) + note + "\n")
    args = [a for a in argv if not a.startswith("-")]
    if not args:
        return 0
    command, units = args[0], args[1:]
    if command in ("daemon-reload", "daemon-reexec"):
        return 0
    if command == "show":
        sys.stdout.write("".join(_show(box, u) for u in units))
        return 0
    missing = [u for u in units if box.unit(u) is None]
    if command == "is-enabled":
        if missing:
            print(f"Failed to get unit file state for {missing[0]}: No such file or directory")
            return 1
        states = ["enabled" if box.is_enabled(u) else "disabled" for u in units]
        print("\n".join(states))
        return 0 if all(s == "enabled" for s in states) else 1
    if command == "is-active":
        states = ["active" if box.is_active(u) else "inactive" for u in units]
        print("\n".join(states))
        return 0 if all(s == "active" for s in states) else 3
    if missing:
        print(f"Failed to {command} {missing[0]}: Unit {missing[0]} not found.", file=sys.stderr)
        return 5
    for unit in units:
        if command == "enable":
            box.enabled_file(unit).touch()
        elif command == "disable":
            box.enabled_file(unit).unlink(missing_ok=True)
        elif command == "start":
            box.start(unit)
        elif command == "stop":
            box.stop(unit)
        elif command in ("restart", "reload", "try-restart", "reload-or-restart"):
            box.stop(unit)
            box.start(unit)
        else:
            print(f"fake systemctl: {command} is not supported", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
