"""The units in systemd/: `systemd-analyze verify` finds nothing to say about any of them,
and `systemd-analyze security --offline` scores each fieldbox service at 2.0 or better.

Verification runs against a throwaway root (`--root`): the units and drop-ins installed
where a box has them, the host's own system units beside them (for the default
dependencies), and stand-ins for the executables, which verify insists exist.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SYSTEMD = ROOT / "systemd"
HOST_UNITS = Path("/usr/lib/systemd/system")
SERVICES = ["api", "gateway", "worker", "bridge"]
# Every unit a box loads, by the name it is installed under.
UNIT_NAMES = [*(f"fieldbox-{s}.service" for s in SERVICES), "fieldbox.target"]
VLLM_INSTANCE = "fieldbox-vllm@qwen.service"
MAX_EXPOSURE = 2.0
# Stand-in for Ollama's own unit, as its installer writes it; we only ship a drop-in.
OLLAMA_UNIT = """\
[Unit]
Description=Ollama Service
After=network-online.target

[Service]
ExecStart=/usr/local/bin/ollama serve
User=ollama
Group=ollama
Restart=always

[Install]
WantedBy=default.target
"""
EXECUTABLES = ["opt/fieldbox/current/bin/fieldbox", "opt/fieldbox/vllm/bin/vllm"]
EXECUTABLES += ["usr/local/bin/ollama"]


def _analyze() -> str:
    if not sys.platform.startswith("linux"):
        pytest.skip("systemd units are checked on Linux")
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is missing: `make install` installs Debian's systemd package"
    return found


def _install(root: Path, *, gpu: bool) -> Path:
    """A filesystem root with the units installed as on a box (the GPU drop-ins if asked)."""
    shutil.copytree(HOST_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    for unit in [*SYSTEMD.glob("*.service"), *SYSTEMD.glob("*.target")]:
        shutil.copy(unit, etc / unit.name)
    (etc / "ollama.service").write_text(OLLAMA_UNIT)
    (etc / "ollama.service.d").mkdir()
    shutil.copy(SYSTEMD / "ollama.service.d/fieldbox.conf", etc / "ollama.service.d")
    if gpu:
        for name in ("worker", "gateway"):
            (etc / f"fieldbox-{name}.service.d").mkdir()
            shutil.copy(SYSTEMD / "gpu.conf", etc / f"fieldbox-{name}.service.d/gpu.conf")
    for exe in EXECUTABLES:
        path = root / exe
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)
    return root


def _verify(analyze: str, root: Path, *units: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [analyze, "verify", "--man=no", f"--root={root}", *units],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _exposure(analyze: str, root: Path, unit: str) -> float:
    done = subprocess.run(
        [analyze, "security", "--offline=true", f"--root={root}", "--no-pager", unit],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout + done.stderr)
    assert match, f"no exposure level for {unit}: {done.stdout[-2000:]}{done.stderr}"
    return float(match.group(1))


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu-box", "gpu-box"])
def test_systemd_analyze_verify_is_silent_on_every_unit(tmp_path: Path, gpu: bool) -> None:
    """Every unit and drop-in loads with no error and no warning (an unknown or misspelt
    directive is only a warning to systemd, so any output at all fails)."""
    analyze = _analyze()
    root = _install(tmp_path / "root", gpu=gpu)
    units = [*UNIT_NAMES, VLLM_INSTANCE, "ollama.service"]
    done = _verify(analyze, root, *units)
    assert (done.returncode, done.stdout + done.stderr) == (0, ""), done


def test_verify_catches_a_misspelt_directive(tmp_path: Path) -> None:
    """The check above can fail: a unit with a typo in it is reported."""
    analyze = _analyze()
    root = _install(tmp_path / "root", gpu=False)
    unit = root / "etc/systemd/system/fieldbox-api.service"
    unit.write_text(unit.read_text().replace("ProtectHome=", "ProtectHomes="))
    done = _verify(analyze, root, "fieldbox-api.service")
    assert "ProtectHomes" in done.stdout + done.stderr


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu-box", "gpu-box"])
def test_every_fieldbox_service_scores_2_or_better(tmp_path: Path, gpu: bool) -> None:
    """`systemd-analyze security --offline=true`: each fieldbox service (and the vLLM
    template's instance) is at an overall exposure of 2.0 or lower, drop-ins applied."""
    analyze = _analyze()
    root = _install(tmp_path / "root", gpu=gpu)
    scores = {
        unit: _exposure(analyze, root, unit)
        for unit in [*(f"fieldbox-{s}.service" for s in SERVICES), VLLM_INSTANCE]
    }
    assert all(score <= MAX_EXPOSURE for score in scores.values()), scores


def test_units_run_fieldbox_as_the_box_expects() -> None:
    """The paths and settings other parts rely on: the release symlink, the config path,
    the data root, notify + watchdog, the S3 credential on the bridge only."""
    for name in SERVICES:
        text = (SYSTEMD / f"fieldbox-{name}.service").read_text()
        exec_start = (
            "ExecStart=/opt/fieldbox/current/bin/fieldbox --config /etc/fieldbox/fieldbox.toml "
            f"serve {name}\n"
        )
        assert exec_start in text
        for line in ("Type=notify", "NotifyAccess=main", "Restart=on-failure", "User=fieldbox"):
            assert f"\n{line}\n" in text, (name, line)
        assert "\nEnvironment=FIELDBOX_DATA=/var/lib/fieldbox\n" in text
        assert re.search(r"\nWatchdogSec=\d+\n", text), name
        assert ("LoadCredential=s3:/etc/fieldbox/credentials/s3" in text) == (name == "bridge")
    target = (SYSTEMD / "fieldbox.target").read_text()
    assert all(f"fieldbox-{s}.service" in target for s in SERVICES)
