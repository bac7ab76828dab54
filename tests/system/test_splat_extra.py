"""A splat job on a box without the `splat` extra: one attempt, failed for good, and an error
that says what to install, through the real api and a real worker process.

The worker runs with a `sitecustomize` that makes torch and pycolmap unimportable, as on a
box where `pip install fieldbox` was run without `[splat]`; the api keeps them, as the api
of a site whose splat worker is on another, smaller box would.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server
from tests.system.conftest import StartServer
from tests.system.helpers import (
    FAST_WORKER_CONFIG,
    WorkerProc,
    api_with_location,
    tus_create,
    tus_finish,
    wait_job,
)
from tests.videos import moving_square_video

# Imported by every Python process that has this folder on its path (site.py does it).
WITHOUT_EXTRA = """
import sys

class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "pycolmap"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
"""


@pytest.fixture
def box(tmp_path: Path, start_server: StartServer) -> Iterator[tuple[Server, httpx.Client, Path]]:
    """An api process with a location, a client with a field key, and the config path."""
    yield from api_with_location(tmp_path, start_server, FAST_WORKER_CONFIG)


def _without_extra(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "no-splat-extra"
    site.mkdir()
    (site / "sitecustomize.py").write_text(WITHOUT_EXTRA)
    paths = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(paths)}


def _event_types(c: httpx.Client, job_id: str) -> list[str]:
    text = c.get(f"/v1/jobs/{job_id}/events").text
    return [
        line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event: ")
    ]


def test_a_splat_job_without_the_extra_fails_once_saying_what_to_install(
    tmp_path: Path, box: tuple[Server, httpx.Client, Path]
) -> None:
    """No torch, no pycolmap on the worker: the job is `failed` after its first attempt (not
    retried three times into `dead`), and its error names the extra and the pip command."""
    server, c, config = box
    video = moving_square_video(tmp_path / "walk.mp4")
    data = video.read_bytes()
    asset = tus_finish(c, tus_create(c, "site1", len(data), video.name), data)
    resp = c.post("/v1/jobs", json={"kind": "splat", "asset_id": asset, "params": {}})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    worker = WorkerProc(server.data_dir, config, env=_without_extra(tmp_path))
    try:
        done = wait_job(c, job_id, {"succeeded", "failed", "dead"}, timeout=60)
        alive = worker.proc.poll() is None
    finally:
        worker.stop()
    log = worker.log_path.read_text()[-3000:]
    assert done["status"] == "failed", (done, log)
    assert done["attempts"] == 1, done
    assert "pip install 'fieldbox[splat]'" in done["error"], done
    assert "torch" in done["error"] and "pycolmap" in done["error"], done
    events = _event_types(c, job_id)
    assert events.count("started") == 1 and "retrying" not in events, events
    assert alive, log  # one job's missing extra does not take the worker down
