"""The SSE feed of a job against a real api process: replay after Last-Event-ID, then live
events written by another process until the job ends."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from store.paths import Layout
from store.queue import Queue
from tests.conftest import Server, make_config, make_token
from tests.system.conftest import StartServer
from tests.system.helpers import client, create_location


def _events(text: str) -> list[tuple[int, str, dict[str, Any]]]:
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "id" in fields:
            out.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    return out


def test_events_replay_and_follow_until_the_job_ends(
    tmp_path: Path, start_server: StartServer
) -> None:
    """Events so far arrive at once; later ones (written by a worker) as they happen; the
    stream ends after `succeeded`; a reconnect with Last-Event-ID gets only what followed."""
    cfg = make_config(tmp_path / "data")
    server: Server = start_server(None, cfg.data_dir)
    queue = Queue(str(Layout(cfg.data_dir).queue_db), cfg.store, cfg.queue)
    try:
        with client(server.url, make_token(cfg)) as c:
            create_location(c, "site1")
            job, _ = queue.enqueue("perception", {"asset_id": "x", "params": {}}, location="site1")
            assert queue.claim("w1") is not None
            queue.progress(job.id, "w1", "frames", 0.0, "stage_started")

            def finish() -> None:
                queue.progress(job.id, "w1", "frames", 0.5)
                queue.progress(job.id, "w1", "frames", 1.0, "stage_done")
                queue.succeed(job.id, "w1", {"scene_facts_asset_id": "site1.x"})

            timer = threading.Timer(0.5, finish)
            timer.start()
            with c.stream("GET", f"/v1/jobs/{job.id}/events") as resp:
                assert resp.headers["content-type"].startswith("text/event-stream")
                text = "".join(resp.iter_text())
            timer.join()
            seen = _events(text)
            kinds = [kind for _, kind, _ in seen]
            assert kinds == [
                "queued",
                "started",
                "stage_started",
                "progress",
                "stage_done",
                "succeeded",
            ]
            assert seen[-1][2]["job_id"] == job.id
            replay = c.get(f"/v1/jobs/{job.id}/events", headers={"Last-Event-ID": str(seen[1][0])})
            assert [kind for _, kind, _ in _events(replay.text)] == kinds[2:]
    finally:
        queue.close()
