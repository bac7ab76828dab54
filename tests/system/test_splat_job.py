"""A splat job through the real api and worker processes: a video of the synthetic room is
uploaded with tus, queued as `splat`, and comes back as a 3DGS `.ply` asset and a thumbnail
of the same location, with the stage events in order on the SSE feed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server
from tests.system.conftest import StartServer
from tests.system.helpers import (
    WorkerProc,
    api_with_location,
    tus_create,
    tus_finish,
    wait_job,
)

pytest.importorskip("torch")
pytest.importorskip("pycolmap")

# Short training: this checks the job's path through the box, not splat quality (the
# pipeline's own tests check convergence and the SfM poses).
CONFIG = """
[queue]
lease_s = 5.0
[worker]
heartbeat_s = 0.5
poll_s = 0.1
[splat]
iterations = 40
max_gaussians = 3000
checkpoint_every = 20
"""


@pytest.fixture
def box(tmp_path: Path, start_server: StartServer) -> Iterator[tuple[Server, httpx.Client, Path]]:
    """An api process with a location, a client with a field key, and the config path."""
    yield from api_with_location(tmp_path, start_server, CONFIG)


def _stages(sse: str) -> list[str]:
    names = []
    for block in sse.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if lines.get("event") == "stage_started":
            names.append(httpx.Response(200, content=lines["data"]).json()["stage"])
    return names


def test_a_splat_job_turns_a_video_into_a_ply_asset(
    tmp_path: Path, box: tuple[Server, httpx.Client, Path]
) -> None:
    """Upload the room video, queue a splat job: it succeeds, and its `.ply` asset opens
    with the 3DGS properties and a plausible number of Gaussians."""
    from perception.splat.ply import read_ply
    from perception.splat.synthetic import write_video

    server, c, config = box
    video = tmp_path / "room.mp4"
    write_video(video, frames=36)
    data = video.read_bytes()
    asset = tus_finish(c, tus_create(c, "site1", len(data), video.name), data)
    resp = c.post("/v1/jobs", json={"kind": "splat", "asset_id": asset, "params": {"fps": 12.0}})
    assert resp.status_code == 202, resp.text
    job = resp.json()
    worker = WorkerProc(server.data_dir, config)
    try:
        done = wait_job(c, job["id"], {"succeeded", "failed", "dead"}, timeout=420)
    finally:
        worker.stop()
    assert done["status"] == "succeeded", (done, worker.log_path.read_text()[-3000:])
    ply_id = done["result"]["splat_asset_id"]
    meta = c.get(f"/v1/assets/{ply_id}").json()
    assert meta["location"] == "site1"
    body = c.get(f"/v1/assets/{ply_id}/content").content
    path = tmp_path / "got.ply"
    path.write_bytes(body)
    splat, names = read_ply(path)  # raises unless the properties are the 3DGS layout
    for want in ("x", "y", "z", "nx", "f_dc_0", "opacity", "scale_0", "rot_0"):
        assert want in names, names
    assert 100 <= len(splat.means) <= 3000
    thumb = c.get(f"/v1/assets/{done['result']['thumbnail_asset_id']}/content").content
    assert thumb[:3] == b"\xff\xd8\xff" and len(thumb) > 1000  # a JPEG with a picture
    stages = _stages(c.get(f"/v1/jobs/{job['id']}/events").text)
    assert stages[:1] == ["frames"] and stages[-1] == "publish", stages
    assert {"sfm", "train", "export"} <= set(stages), stages
