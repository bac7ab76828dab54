"""A throwaway target for the playbooks: a temp root, tiny releases, an inventory, a runner.

The target is this machine over Ansible's `local` connection with every path under a
temp dir (`fieldbox_root`), no user creation, no packages, no firewall loading, and
`systemctl` replaced by `tests/fleet/bin/systemctl` (first on PATH). A release is a
directory with `bin/fieldbox`: a launcher that runs this checkout's real `fieldbox` with
a `fieldbox-{version}.dist-info` of its own first on `sys.path`, so `fieldbox --version`
and the api's `/version` report that release's version. A broken release does the same
for every command but `serve`, which never gets ready.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.fleet.fake_systemctl import alive, stop_process

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
FLEET_DIR = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
SERVE_NEVER_READY = """
case " $* " in
  *" serve "*) echo "this release is broken: it never gets ready" >&2; exec sleep 3600 ;;
esac
"""

_LAUNCHER = """#!/bin/sh
# fieldbox {version} for the fleet tests: this checkout's code, reporting version {version}.
here="$(cd "$(dirname "$0")/.." && pwd -P)"
{broken}
PYTHONPATH="$here/lib${{PYTHONPATH:+:$PYTHONPATH}}" exec {fieldbox} "$@"
"""


def make_release(out_dir: Path, version: str, *, broken: bool = False) -> Path:
    """Build the archive of a tiny release (`bin/fieldbox`, `lib/*.dist-info`); its path."""
    tree = out_dir / f"tree-{version}"
    (tree / "bin").mkdir(parents=True)
    dist = tree / "lib" / f"fieldbox-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fieldbox\nVersion: {version}\n")
    launcher = tree / "bin" / "fieldbox"
    launcher.write_text(
        _LAUNCHER.format(
            version=version,
            broken=SERVE_NEVER_READY if broken else "",
            fieldbox=BIN / "fieldbox",
        )
    )
    launcher.chmod(0o755)
    archive = out_dir / f"fieldbox-{version}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(tree.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(tree)), recursive=False)
    return archive


@dataclass
class Recap:
    """One host's line of the PLAY RECAP."""

    ok: int
    changed: int
    unreachable: int
    failed: int
    skipped: int
    rescued: int


@dataclass
class Run:
    """An ansible-playbook run: exit code, output, and the host's recap."""

    rc: int
    output: str
    recap: Recap | None = field(default=None)


_RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)\s+"
    r"skipped=(?P<skipped>\d+)\s+rescued=(?P<rescued>\d+)",
    re.MULTILINE,
)


def parse_recap(output: str, host: str) -> Recap | None:
    """The PLAY RECAP counters for `host` (the last recap in the output)."""
    found = [m for m in _RECAP.finditer(output) if m.group("host") == host]
    if not found:
        return None
    m = found[-1]
    return Recap(
        ok=int(m["ok"]),
        changed=int(m["changed"]),
        unreachable=int(m["unreachable"]),
        failed=int(m["failed"]),
        skipped=int(m["skipped"]),
        rescued=int(m["rescued"]),
    )


class Target:
    """The throwaway box: its root, its inventory and the environment to run Ansible in."""

    host = "testbox"
    later_host = "laterbox"

    def __init__(self, work: Path, port: int) -> None:
        self.work = work
        self.root = work / "root"
        self.root.mkdir()
        self.port = port
        self.releases = work / "releases"
        self.releases.mkdir()
        self.inventory = work / "inventory.yml"
        self.home = work / "ansible-home"
        self.home.mkdir()

    @property
    def current(self) -> Path:
        """The `current` release link."""
        return self.root / "opt/fieldbox/current"

    @property
    def previous(self) -> Path:
        """The `previous` release link."""
        return self.root / "opt/fieldbox/previous"

    @property
    def drain_flag(self) -> Path:
        """The drain flag `fieldbox drain` writes under the data root."""
        return self.root / "var/lib/fieldbox/drain"

    def release_dir(self, version: str) -> Path:
        """Where release `version` is installed."""
        return self.root / "opt/fieldbox/releases" / version

    def write_inventory(self, **extra: Any) -> None:
        """An inventory for this box: local connection, everything under the root."""
        user = os.environ.get("USER") or _whoami()
        group = subprocess.run(
            ["id", "-gn"], capture_output=True, text=True, check=True
        ).stdout.strip()
        host_vars: dict[str, Any] = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "fieldbox_root": str(self.root),
            "fieldbox_become": False,
            "fieldbox_manage_user": False,
            "fieldbox_manage_packages": False,
            "fieldbox_user": user,
            "fieldbox_group": group,
            "fieldbox_admin_user": user,
            "fieldbox_admin_group": group,
            "fieldbox_python": sys.executable,
            "fieldbox_install_method": "archive",
            "fieldbox_release_archive": str(
                self.releases / "fieldbox-{{ fieldbox_version }}.tar.gz"
            ),
            "fieldbox_config": {
                "api": {"host": "127.0.0.1", "port": self.port},
                "log": {"format": "console"},
            },
            "fieldbox_s3_access_key_id": "AKIATESTTESTTEST",
            "fieldbox_s3_secret_access_key": "not-a-real-secret",
            "firewall_apply": False,
            "firewall_lan_cidrs": ["192.168.50.0/24", "fd00:50::/64"],
            "fieldbox_drain_timeout": 30,
            "fieldbox_ready_retries": 40,
            "fieldbox_ready_delay": 1,
            **extra,
        }
        # A second box after the canary that is never provisioned: if a failed canary did
        # not stop the rollout, its batch would run and fail on it.
        later_vars = {**host_vars, "fieldbox_root": str(self.work / "never-provisioned")}
        inventory = {
            "all": {
                "children": {
                    "fieldbox": {
                        "hosts": {self.later_host: later_vars},
                        "children": {"canary": {"hosts": {self.host: host_vars}}},
                    }
                }
            }
        }
        self.inventory.write_text(json.dumps(inventory, indent=2))

    def env(self) -> dict[str, str]:
        """Environment for ansible-playbook: the systemctl double first on PATH."""
        env = dict(os.environ)
        env.update(
            {
                "PATH": f"{FLEET_DIR / 'bin'}{os.pathsep}{BIN}{os.pathsep}{env.get('PATH', '')}",
                "FAKE_SYSTEMCTL_ROOT": str(self.root),
                "FAKE_SYSTEMCTL_RUN": "fieldbox-api.service",
                "FAKE_SYSTEMCTL_PYTHON": sys.executable,
                "FAKE_SYSTEMCTL_WATCH": str(self.drain_flag),
                "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
                "ANSIBLE_HOME": str(self.home),
                "ANSIBLE_LOCAL_TEMP": str(self.home / "tmp"),
                "ANSIBLE_REMOTE_TEMP": str(self.home / "tmp"),
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_FORCE_COLOR": "0",
                "ANSIBLE_RETRY_FILES_ENABLED": "0",
                "ANSIBLE_DEPRECATION_WARNINGS": "0",
                "PYTHONDONTWRITEBYTECODE": "1",
            }
        )
        env.pop("FIELDBOX_CONFIG", None)
        env.pop("FIELDBOX_DATA", None)
        return env

    def playbook(self, name: str, *args: str, timeout: float = 240) -> Run:
        """Run ansible-playbook `name` (against both boxes unless `--limit`); never raises."""
        proc = subprocess.run(
            [str(BIN / "ansible-playbook"), "-i", str(self.inventory), name, *args],
            cwd=ANSIBLE_DIR,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        output = proc.stdout + proc.stderr
        return Run(rc=proc.returncode, output=output, recap=parse_recap(output, self.host))

    def systemctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the systemctl double against this box."""
        return subprocess.run(
            [str(FLEET_DIR / "bin" / "systemctl"), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    def calls(self) -> list[str]:
        """Every command line the systemctl double was given, in order."""
        log = self.root / "run/fake-systemd/calls.log"
        return log.read_text().splitlines() if log.exists() else []

    def stop_everything(self) -> None:
        """Stop every process the double started (the target, then any pid left over)."""
        self.systemctl("stop", "fieldbox.target")
        for pid_file in (self.root / "run/fake-systemd").glob("*.pid"):
            pid = int(pid_file.read_text())
            if alive(pid):
                stop_process(pid, 10)

    def get(self, path: str) -> httpx.Response:
        """GET a path on the box's api."""
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=5)

    def wait_version(self, version: str, timeout_s: float = 60) -> str:
        """Wait until /version answers (any version); the last version seen or an error."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                r = self.get("/version")
                ok = r.status_code == 200
                last = str(r.json().get("version")) if ok else f"HTTP {r.status_code}"
                if last == version:
                    return last
            except httpx.HTTPError as exc:
                last = f"no answer ({type(exc).__name__})"
            time.sleep(0.2)
        return last


def _whoami() -> str:
    return subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
