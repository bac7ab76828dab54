"""`fieldbox status`: the person at the box sees every process and what the box still owes,
and a script sees exit 1 when something is down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import ROOT
from tests.system.test_up import Up, _stop


def _status(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FIELDBOX_CONFIG"}
    env["FIELDBOX_DATA"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "appliance", "status", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_status_of_a_box_with_nothing_running_says_so_and_exits_1(tmp_path: Path) -> None:
    done = _status(tmp_path / "data", "--json")
    assert done.returncode == 1, done.stderr
    facts: dict[str, Any] = json.loads(done.stdout)
    assert facts["healthy"] is False
    states = {row["name"]: row["state"] for row in facts["rows"]}
    assert states == {"api": "down", "gateway": "down", "worker": "down", "bridge": "down"}
    assert facts["jobs"]["queued"] == 0
    assert facts["backlog"]["items"] == 0


def test_status_under_up_shows_every_process_healthy_and_down_once_up_stops(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    up = Up(data)
    try:
        up.banner()
        deadline = time.monotonic() + 60
        facts: dict[str, Any] = {}
        while time.monotonic() < deadline:
            done = _status(data, "--json")
            facts = json.loads(done.stdout)
            if done.returncode == 0:
                break
        assert facts.get("healthy") is True, facts
        names = [row["name"] for row in facts["rows"]]
        assert names[:4] == ["api", "gateway", "worker", "bridge"], names
        assert all(row["state"] == "ok" for row in facts["rows"]), facts["rows"]
        api = facts["rows"][0]
        assert up.url in api["detail"] and api["pid"] == up.child_pid("api")
        assert any(name.startswith("backend ") for name in names), names
        screen = _status(data)
        assert screen.returncode == 0
        assert screen.stdout.startswith("fieldbox: healthy")
        for line in ("processes", "jobs ", "not in S3 ", "last sync ", "litestream ", "disk "):
            assert line in screen.stdout, screen.stdout
        _stop(up, whole_group=True)
        after = _status(data, "--json")
        assert after.returncode == 1
        assert {row["name"]: row["state"] for row in json.loads(after.stdout)["rows"]}["api"] == (
            "down"
        )
    finally:
        up.kill()
