"""The Ansible playbooks: lint, syntax, and real runs against a throwaway target.

The target (tests/fleet/target.py) is this machine over a `local` connection with every
path under a temp dir and `systemctl` replaced by a test double that really starts
`fieldbox serve api` from this checkout. Nothing outside the temp dir is touched: no
users, no packages, no real systemctl, no firewall rules loaded.
"""

from __future__ import annotations

import filecmp
import os
import socket
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet.target import ANSIBLE_DIR, BIN, REPO, Run, Target, make_release, parse_recap

pytestmark = pytest.mark.timeout(400)

PLAYBOOKS = ("site.yml", "update.yml", "rollback.yml")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tool_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(ANSIBLE_DIR / "ansible.cfg")
    env["NO_COLOR"] = "1"
    env["ANSIBLE_NOCOLOR"] = "1"
    return env


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A fresh throwaway target with three releases built: 0.1.0, 0.2.0, broken 0.3.0."""
    target = Target(tmp_path_factory.mktemp("fleet"), _free_port())
    make_release(target.releases, "0.1.0")
    make_release(target.releases, "0.2.0")
    make_release(target.releases, "0.3.0", broken=True)
    target.write_inventory(fieldbox_version="0.1.0")
    try:
        yield target
    finally:
        target.stop_everything()


@pytest.fixture(scope="module")
def provisioned(box: Target) -> Run:
    """The first site.yml run on the fresh target (0.1.0)."""
    run = box.playbook("site.yml", "--limit", box.host)
    assert run.rc == 0, run.output[-4000:]
    return run


def _link(path: Path) -> Path:
    assert path.is_symlink(), f"{path} is not a symlink"
    return Path(os.readlink(path))


def test_ansible_lint_production_profile_is_clean() -> None:
    """ansible-lint with the production profile (ansible/.ansible-lint) reports nothing."""
    proc = subprocess.run(
        [str(BIN / "ansible-lint"), "--nocolor", "-c", ".ansible-lint"],
        cwd=ANSIBLE_DIR,
        env=_tool_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "0 failure(s), 0 warning(s)" in out, out
    assert "Profile 'production' was required, and it passed" in out, out


def test_every_playbook_passes_syntax_check() -> None:
    """`ansible-playbook --syntax-check` accepts every playbook with the example inventory."""
    for playbook in PLAYBOOKS:
        proc = subprocess.run(
            [
                str(BIN / "ansible-playbook"),
                "--syntax-check",
                "-i",
                "inventory/example/hosts.yml",
                playbook,
            ],
            cwd=ANSIBLE_DIR,
            env=_tool_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, f"{playbook}: {proc.stdout}{proc.stderr}"
        assert f"playbook: {playbook}" in proc.stdout


def test_example_inventory_renders_a_valid_config(tmp_path: Path) -> None:
    """The example inventory's fieldbox_config renders to TOML that check-config accepts."""
    env = _tool_env()
    env["ANSIBLE_HOME"] = str(tmp_path / "ansible-home")
    proc = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            str(ANSIBLE_DIR / "inventory/example/hosts.yml"),
            str(Path(__file__).parent / "render_config.yml"),
            "-e",
            f"out={tmp_path}",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for host in ("box-oslo-01", "box-bergen-01"):
        path = tmp_path / f"{host}.toml"
        parsed = tomllib.loads(path.read_text())
        assert parsed["bridge"]["s3"]["box_id"] == host
        checked = subprocess.run(
            [str(BIN / "fieldbox"), "check-config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert checked.returncode == 0, f"{host}: {checked.stdout}{checked.stderr}"


def test_site_provisions_the_box(box: Target, provisioned: Run) -> None:
    """site.yml: release installed and current, config, credential, units, rules, api up."""
    assert provisioned.recap is not None and provisioned.recap.failed == 0
    assert provisioned.recap.changed > 0
    assert _link(box.current) == box.release_dir("0.1.0")
    assert (box.release_dir("0.1.0") / "bin/fieldbox").is_file()

    config = box.root / "etc/fieldbox/fieldbox.toml"
    parsed = tomllib.loads(config.read_text())
    assert parsed["api"] == {"host": "127.0.0.1", "port": box.port}
    assert stat.S_IMODE(config.stat().st_mode) == 0o640

    credential = box.root / "etc/fieldbox/credentials/s3"
    assert stat.S_IMODE(credential.stat().st_mode) == 0o600
    assert stat.S_IMODE(credential.parent.stat().st_mode) == 0o700
    text = credential.read_text()
    assert "[default]" in text
    assert "aws_access_key_id = AKIATESTTESTTEST" in text
    assert "aws_secret_access_key = not-a-real-secret" in text

    units = box.root / "etc/systemd/system"
    for name in ("fieldbox-api.service", "fieldbox-bridge.service", "fieldbox.target"):
        assert filecmp.cmp(units / name, REPO / "systemd" / name, shallow=False), name
    assert (
        "LoadCredential=s3:/etc/fieldbox/credentials/s3"
        in (units / "fieldbox-bridge.service").read_text()
    )

    rules = (box.root / "etc/nftables.d/fieldbox.nft").read_text()
    assert "policy drop;" in rules
    assert "ip saddr { 192.168.50.0/24 } tcp dport { 8080, 8081 } accept" in rules
    assert "ip6 saddr { fd00:50::/64 } tcp dport { 8080, 8081 } accept" in rules

    calls = box.calls()
    assert "enable fieldbox.target" in calls
    assert any(c.startswith(("start fieldbox.target", "restart fieldbox.target")) for c in calls)
    assert box.wait_version("0.1.0") == "0.1.0"
    assert box.get("/ready").status_code == 200


def test_site_twice_changes_nothing(box: Target, provisioned: Run) -> None:
    """A second site.yml run on a provisioned box reports changed=0."""
    again = box.playbook("site.yml", "--limit", box.host)
    assert again.rc == 0, again.output[-4000:]
    assert again.recap is not None, again.output[-2000:]
    assert again.recap.failed == 0
    assert again.recap.changed == 0, again.output


def test_update_then_broken_update_then_rollback(box: Target, provisioned: Run) -> None:
    """update.yml to a good release, to a broken one (rolled back, rollout stops), rollback.yml."""
    before = box.wait_version("0.1.0")
    assert before == "0.1.0"

    # A good release: drained while restarting, new version answers, symlink switched.
    calls_before = len(box.calls())
    good = box.playbook("update.yml", "--limit", box.host, "-e", "fieldbox_version=0.2.0")
    assert good.rc == 0, good.output[-4000:]
    assert good.recap is not None and good.recap.failed == 0 and good.recap.rescued == 0
    assert _link(box.current) == box.release_dir("0.2.0")
    assert _link(box.previous) == box.release_dir("0.1.0")
    assert box.get("/version").json()["version"] == "0.2.0"
    assert box.get("/ready").status_code == 200
    restarts = [c for c in box.calls()[calls_before:] if c.startswith("restart fieldbox.target")]
    assert restarts == ["restart fieldbox.target [drain present]"]
    assert not box.drain_flag.exists()

    # A release that never gets ready: rolled back, the old one answers, the play fails,
    # and the box after the canary is never touched.
    calls_before = len(box.calls())
    broken = box.playbook(
        "update.yml",
        "-e",
        "fieldbox_version=0.3.0",
        "-e",
        "fieldbox_ready_retries=6",
        "-e",
        "fieldbox_rollback_ready_retries=60",
    )
    assert broken.rc != 0, broken.output[-4000:]
    assert broken.recap is not None
    assert broken.recap.failed == 1 and broken.recap.rescued == 1, broken.output[-4000:]
    assert "update to 0.3.0 failed on testbox: rolled back, 0.2.0 runs again" in broken.output
    later = parse_recap(broken.output, box.later_host)
    assert later is None or (later.ok == 0 and later.failed == 0), broken.output[-4000:]
    assert (box.release_dir("0.3.0") / "bin/fieldbox").is_file()  # installed beside
    assert _link(box.current) == box.release_dir("0.2.0")
    assert _link(box.previous) == box.release_dir("0.1.0")
    assert box.get("/version").json()["version"] == "0.2.0"
    restarts = [c for c in box.calls()[calls_before:] if c.startswith("restart fieldbox.target")]
    assert len(restarts) == 2, restarts  # to 0.3.0, and back
    assert not box.drain_flag.exists()

    # rollback.yml: back to the release before the last update; `previous` swaps.
    back = box.playbook("rollback.yml", "--limit", box.host)
    assert back.rc == 0, back.output[-4000:]
    assert _link(box.current) == box.release_dir("0.1.0")
    assert _link(box.previous) == box.release_dir("0.2.0")
    assert box.get("/version").json()["version"] == "0.1.0"
    assert not box.drain_flag.exists()
