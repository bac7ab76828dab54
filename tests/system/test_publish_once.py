"""A job's results are stored exactly once, whatever instant a `kill -9` hits the worker.

A real `fieldbox serve worker` runs the job with a test-only pause point set
(`FIELDBOX_TEST_PAUSE_AT`, see `appliance/job_kinds.py`): at that point it writes a
marker and blocks, the test sends SIGKILL, and a new worker (no pause) finishes the job.
Then the location holds exactly one asset per (job, output), the outbox exactly one row
per asset and no row for an asset that never came to be, and the results are whole.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.job_kinds import PAUSE_AT_ENV, PAUSE_MARKER_ENV
from perception.scene_facts import validate
from tests.conftest import Server, make_config, make_token
from tests.system.conftest import StartServer
from tests.system.helpers import (
    WorkerProc,
    check_blobs,
    check_databases,
    client,
    create_location,
    integrity_check,
    tus_create,
    tus_finish,
    wait_job,
)
from tests.videos import moving_square_video

# Short leases so a killed worker's job is claimed again within seconds; enough attempts
# for every kill of the chained splat test (each lapsed lease counts as one).
CONFIG = """
[queue]
lease_s = 2.0
backoff_s = [0.5]
max_attempts = 8
[worker]
heartbeat_s = 0.3
poll_s = 0.1
[perception]
fps = 30.0
[splat]
iterations = 40
max_gaussians = 3000
checkpoint_every = 20
"""

Box = tuple[Server, httpx.Client, Path]


@pytest.fixture
def box(tmp_path: Path, start_server: StartServer) -> Iterator[Box]:
    """An api process with location `site1`, a client with a field key, and the config path."""
    data = tmp_path / "data"
    config = tmp_path / "fieldbox.toml"
    config.write_text(CONFIG)
    server = start_server(config, data)
    with client(server.url, make_token(make_config(data))) as c:
        create_location(c, "site1")
        yield server, c, config


def _location_db(data: Path) -> Path:
    return data / "locations" / "acme" / "u4pr" / "site1" / "location.db"


def _rows(db: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _job_assets(data: Path, job_id: str) -> list[tuple[str, str, str]]:
    """(id, kind, sha256) of every asset the job stored."""
    rows = _rows(
        _location_db(data),
        "SELECT id, kind, sha256 FROM assets WHERE json_extract(metadata, '$.job_id') = ?",
        (job_id,),
    )
    return [(str(a), str(k), str(s)) for a, k, s in rows]


def _outbox(data: Path) -> list[tuple[str, str]]:
    """(asset_id, sha256) of every outbox row."""
    return [
        (str(a), str(s))
        for a, s in _rows(data / "outbox.db", "SELECT asset_id, sha256 FROM outbox")
    ]


def _kill_at(data: Path, config: Path, point: str, marker: Path) -> WorkerProc:
    """Run a worker until it pauses at `point`, then SIGKILL it."""
    worker = WorkerProc(data, config, env={PAUSE_AT_ENV: point, PAUSE_MARKER_ENV: str(marker)})
    try:
        deadline = time.monotonic() + 420
        while not marker.exists():
            assert worker.proc.poll() is None, worker.log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, f"the worker never reached {point}"
            time.sleep(0.05)
        assert marker.read_text() == point
        worker.kill()
    finally:
        worker.stop()
    return worker


def _finish(c: httpx.Client, data: Path, config: Path, job_id: str) -> dict[str, Any]:
    worker = WorkerProc(data, config)
    try:
        done = wait_job(c, job_id, {"succeeded", "failed", "dead"}, timeout=420)
    finally:
        worker.stop()
    assert done["status"] == "succeeded", (done, worker.log_path.read_text()[-3000:])
    return done


def _check_stored_once(data: Path, job_id: str, result: dict[str, Any], outputs: set[str]) -> None:
    """One asset per (job, output), named by the result; one outbox row per asset, no orphan."""
    stored = _job_assets(data, job_id)
    assert Counter(kind for _, kind, _ in stored) == Counter(outputs), stored
    named = {v for k, v in result.items() if k.endswith("_asset_id")}
    assert {a for a, _, _ in stored} == named, (stored, result)
    every_asset = {str(a) for (a,) in _rows(_location_db(data), "SELECT id FROM assets")}
    rows = _outbox(data)
    assert Counter(a for a, _ in rows) == Counter(every_asset), rows
    assert len({s for _, s in rows}) == len(rows), rows  # no blob owed S3 twice
    check_databases(data)
    assert integrity_check(data / "outbox.db") == "ok"
    assert integrity_check(data / "queue.db") == "ok"
    assert check_blobs(data) == len(every_asset)


def _upload(c: httpx.Client, path: Path) -> str:
    body = path.read_bytes()
    return tus_finish(c, tus_create(c, "site1", len(body), path.name), body)


@pytest.mark.parametrize(
    "point",
    [
        # The outbox row is committed, the asset row is not.
        "publish:scene_facts:outbox",
        # The asset row is committed, `publish.done` is not written.
        "publish:scene_facts:asset",
    ],
)
def test_a_perception_job_killed_while_publishing_stores_its_facts_once(
    tmp_path: Path, box: Box, point: str
) -> None:
    """kill -9 mid-publish, a new worker finishes: one scene-facts asset, one outbox row for
    it (the one the killed worker wrote), and the facts are a valid document."""
    server, c, config = box
    data = server.data_dir
    asset = _upload(c, moving_square_video(tmp_path / "walk.mp4", frames=30))
    job = c.post("/v1/jobs", json={"kind": "perception", "asset_id": asset}).json()
    _kill_at(data, config, point, tmp_path / "paused")
    # What the killed worker left: an outbox row for the facts, and (at `asset`) their row.
    before = {a for a, _ in _outbox(data)} - {asset}
    assert len(before) == 1, before
    assert len(_job_assets(data, job["id"])) == (1 if point.endswith(":asset") else 0)
    assert c.get(f"/v1/jobs/{job['id']}").json()["status"] == "running"

    done = _finish(c, data, config, job["id"])
    assert done["attempts"] == 2
    result = done["result"]
    # The frames with tracks are published after the facts, so only by the new worker.
    assert set(result) == {"scene_facts_asset_id", "frames_asset_id"}
    _check_stored_once(data, job["id"], result, {"scene_facts", "frames"})
    assert {result["scene_facts_asset_id"]} == before  # the retry reused what was there
    facts = c.get(f"/v1/assets/{result['scene_facts_asset_id']}/content").json()
    validate(facts, "scene-facts")
    assert facts["tracks"], facts


def _splat_job(tmp_path: Path, c: httpx.Client) -> str:
    from perception.splat.synthetic import write_video

    video = tmp_path / "room.mp4"
    write_video(video, frames=36)
    resp = c.post(
        "/v1/jobs", json={"kind": "splat", "asset_id": _upload(c, video), "params": {"fps": 12.0}}
    )
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def _events(c: httpx.Client, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in c.get(f"/v1/jobs/{job_id}/events").text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            out.append((lines["event"], json.loads(lines.get("data") or "{}")))
    return out


def _check_splat(tmp_path: Path, c: httpx.Client, result: dict[str, Any]) -> None:
    from perception.splat.ply import read_ply

    path = tmp_path / "got.ply"
    path.write_bytes(c.get(f"/v1/assets/{result['splat_asset_id']}/content").content)
    splat, names = read_ply(path)  # raises unless the properties are the 3DGS layout
    assert {"x", "f_dc_0", "opacity", "scale_0", "rot_0"} <= set(names), names
    assert 100 <= len(splat.means) <= 3000
    thumb = c.get(f"/v1/assets/{result['thumbnail_asset_id']}/content").content
    assert thumb[:3] == b"\xff\xd8\xff" and len(thumb) > 1000


# Each in turn: after SfM, mid-training (just past the checkpoint at iteration 20 of 40),
# during export (the .ply written, the thumbnail not), after the splat's asset row, and
# after the thumbnail's outbox row, and after the cameras' asset row.
SPLAT_POINTS = [
    "sfm:done",
    "train:0.45",
    "export:0.8",
    "publish:splat:asset",
    "publish:thumbnail:outbox",
    "publish:splat_cameras:asset",
]


def test_a_splat_job_killed_at_every_stage_stores_each_output_once(
    tmp_path: Path, box: Box
) -> None:
    """One splat job, its worker killed after SfM, mid-training, during export and three
    times while publishing: it resumes each time where it stood (SfM once, training from its
    checkpoint) and ends with one .ply, one thumbnail and one cameras asset, each with one
    outbox row."""
    pytest.importorskip("torch")
    pytest.importorskip("pycolmap")
    server, c, config = box
    data = server.data_dir
    job_id = _splat_job(tmp_path, c)
    for n, point in enumerate(SPLAT_POINTS):
        _kill_at(data, config, point, tmp_path / f"paused-{n}")
    done = _finish(c, data, config, job_id)
    assert done["attempts"] == len(SPLAT_POINTS) + 1
    result = done["result"]
    assert set(result) == {"splat_asset_id", "thumbnail_asset_id", "cameras_asset_id", "quality"}
    _check_stored_once(data, job_id, result, {"splat", "thumbnail", "splat_cameras"})
    # The held-out views were scored (every 8th of the sampled frames).
    q = result["quality"]
    assert q["held_out"] is True and q["eval_views"] >= 1 and q["psnr"] > 0, q
    _check_splat(tmp_path, c, result)
    events = _events(c, job_id)
    started = Counter(d.get("stage") for e, d in events if e == "stage_started")
    # Killed after `sfm.done`: frames and SfM ran once; train began twice, the second time
    # from the checkpoint the first one left.
    assert started["frames"] == 1 and started["sfm"] == 1, started
    assert started["train"] == 2 and started["export"] == 2, started
    train_done = [d for e, d in events if e == "stage_done" and d.get("stage") == "train"]
    assert [d["resumed_at"] for d in train_done] == [20], train_done
