"""The worker as a real process: a perception job end to end, and a kill -9 in the middle of
one that resumes at its last finished stage under a new worker."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from store.paths import Layout
from store.queue import Queue
from tests.conftest import Server, make_config, make_token
from tests.system.conftest import StartServer
from tests.system.helpers import FAST_WORKER_CONFIG, WorkerProc, tus_create, tus_finish, wait_job
from tests.videos import moving_square_video

CONFIG = FAST_WORKER_CONFIG


@pytest.fixture
def box(tmp_path: Path, start_server: StartServer) -> Iterator[tuple[Server, httpx.Client, Path]]:
    """An api process with a location, a client with a field key, and the config path."""
    data = tmp_path / "data"
    config = tmp_path / "fieldbox.toml"
    config.write_text(CONFIG)
    token = make_token(make_config(data))
    server = start_server(config, data)
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        resp = client.post(
            "/v1/locations",
            json={"id": "site1", "account": "acme", "geo_prefix": "u4pr", "name": "Site 1"},
        )
        assert resp.status_code == 201, resp.text
        yield server, client, config


def _upload(client: httpx.Client, path: Path) -> str:
    data = path.read_bytes()
    return tus_finish(client, tus_create(client, "site1", len(data), path.name), data)


def _events(client: httpx.Client, job_id: str) -> list[str]:
    text = client.get(f"/v1/jobs/{job_id}/events").text
    return [
        line.split(": ", 1)[1] + (":" + _stage(block) if _stage(block) else "")
        for block in text.strip().split("\n\n")
        for line in block.splitlines()
        if line.startswith("event: ")
    ]


def _stage(block: str) -> str:
    for line in block.splitlines():
        if line.startswith("data: ") and '"stage"' in line:
            return str(json.loads(line[6:]).get("stage", ""))
    return ""


def test_a_perception_job_runs_to_scene_facts(
    tmp_path: Path, box: tuple[Server, httpx.Client, Path]
) -> None:
    """Upload a video, queue perception: the job succeeds and its scene facts are an asset of
    the same location, listing the moving square as a track."""
    server, client, config = box
    asset = _upload(client, moving_square_video(tmp_path / "walk.mp4", frames=30))
    job = client.post("/v1/jobs", json={"kind": "perception", "asset_id": asset}).json()
    worker = WorkerProc(server.data_dir, config)
    try:
        done = wait_job(client, job["id"], {"succeeded", "failed", "dead"})
    finally:
        worker.stop()
    assert done["status"] == "succeeded", (done, worker.log_path.read_text()[-3000:])
    facts_id = done["result"]["scene_facts_asset_id"]
    assert facts_id.startswith("site1.")
    facts = client.get(f"/v1/assets/{facts_id}/content").json()
    assert facts["tracks"], facts
    assert not (Layout(server.data_dir).jobs_dir / job["id"]).exists()
    # The worker's publish indexed every track for `ask` in the asset's own write.
    db = next(server.data_dir.glob("locations/*/*/site1/location.db"))
    with sqlite3.connect(db) as conn:
        tracks = conn.execute(
            "SELECT track_id, t, frame FROM search_chunks WHERE source = 'track' AND asset_id = ?",
            (facts_id,),
        ).fetchall()
    assert sorted(t for t, _, _ in tracks) == sorted(t["id"] for t in facts["tracks"])
    firsts = {t["id"]: t["frames"][0] for t in facts["tracks"]}
    assert all(frame == firsts[tid]["frame"] for tid, _, frame in tracks)


def test_kill_9_mid_job_resumes_at_the_last_finished_stage(
    tmp_path: Path, box: tuple[Server, httpx.Client, Path]
) -> None:
    """A worker killed during segmentation: after the lease expires a new worker claims the
    job, skips the finished frames stage, and finishes it."""
    server, client, config = box
    video = moving_square_video(tmp_path / "long.mp4", frames=480, width=640, height=360)
    asset = _upload(client, video)
    job = client.post("/v1/jobs", json={"kind": "perception", "asset_id": asset}).json()
    cfg = make_config(server.data_dir)
    queue = Queue(str(Layout(server.data_dir).queue_db), cfg.store, cfg.queue)
    first = WorkerProc(server.data_dir, config)
    try:
        # Read the queue directly (another process, as the api does): the SSE feed would
        # follow the job to its end.
        deadline = time.monotonic() + 120
        while not any(
            e.type == "stage_started" and e.data.get("stage") == "segment"
            for e in queue.events(job["id"])
        ):
            assert time.monotonic() < deadline, "segmentation never started"
            time.sleep(0.02)
        first.kill()
    finally:
        first.stop()
        queue.close()
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "running"
    second = WorkerProc(server.data_dir, config)
    try:
        done = wait_job(client, job["id"], {"succeeded", "failed", "dead"})
    finally:
        second.stop()
    assert done["status"] == "succeeded", (done, second.log_path.read_text()[-3000:])
    assert done["attempts"] == 2
    events = _events(client, job["id"])
    assert events.count("stage_started:frames") == 1, events
    assert events.count("stage_started:segment") == 2, events
    assert any(e.startswith("lease_expired") for e in events), events


def test_a_job_on_a_file_that_is_not_a_video_fails_naming_the_upload(
    tmp_path: Path, box: tuple[Server, httpx.Client, Path]
) -> None:
    """A job queued without the api's check (an older api queued it) on bytes that are no
    video: the worker fails it for good, and the error names the file as the crew uploaded
    it, not the blob's content hash."""
    server, client, config = box
    body = b"site notes, not a video\n" * 200
    (tmp_path / "notes.mp4").write_bytes(body)
    asset = _upload(client, tmp_path / "notes.mp4")
    cfg = make_config(server.data_dir)
    queue = Queue(str(Layout(server.data_dir).queue_db), cfg.store, cfg.queue)
    try:
        job, _ = queue.enqueue("perception", {"asset_id": asset, "params": {}}, location="site1")
    finally:
        queue.close()
    worker = WorkerProc(server.data_dir, config)
    try:
        done = wait_job(client, job.id, {"succeeded", "failed", "dead"})
    finally:
        worker.stop()
    assert done["status"] == "failed" and done["attempts"] == 1, done  # bad input: no retry
    assert done["error"].startswith("notes.mp4: "), done
    assert hashlib.sha256(body).hexdigest() not in json.dumps(done)
