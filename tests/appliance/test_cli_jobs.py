"""`fieldbox jobs ...` from the box's shell: list, show, cancel, retry, and clean errors."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from appliance.cli import main
from store.paths import Layout
from store.queue import Queue
from tests.conftest import make_config


def test_list_show_cancel_retry(tmp_path: Path) -> None:
    """A queued job is listed and shown with its events; cancel then retry moves it back
    to the queue; an unknown id is a one-line error with exit code 1."""
    data = tmp_path / "data"
    cfg = make_config(data)
    Layout(data).ensure()
    queue = Queue(str(Layout(data).queue_db), cfg.store, cfg.queue)
    job, _ = queue.enqueue("perception", {"asset_id": "loc1.x"}, location="loc1")
    queue.close()
    runner = CliRunner()
    env = {"FIELDBOX_DATA": str(data)}

    listed = runner.invoke(main, ["jobs", "list"], env=env)
    assert listed.exit_code == 0 and job.id in listed.output and "queued" in listed.output
    shown = runner.invoke(main, ["jobs", "show", job.id], env=env)
    assert json.loads(shown.output)["job"]["id"] == job.id
    assert "cancelled" in runner.invoke(main, ["jobs", "cancel", job.id], env=env).output
    assert "queued" in runner.invoke(main, ["jobs", "retry", job.id], env=env).output

    missing = runner.invoke(main, ["jobs", "show", "nope"], env=env)
    assert missing.exit_code == 1 and "no job 'nope'" in missing.output
    assert "Traceback" not in missing.output
