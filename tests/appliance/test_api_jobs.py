"""`/v1/jobs`: enqueue checks, idempotency, backpressure, listing, cancel, retry, SSE replay."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from appliance.app import create_app
from appliance.config import FieldboxConfig
from store.paths import Layout
from store.queue import Queue
from tests.appliance.test_api_uploads import make_location, upload
from tests.conftest import make_config, make_token
from tests.videos import moving_square_video

Api = TestClient[Litestar]


@pytest.fixture
def video_asset(client: Api, tmp_path: Path) -> str:
    """A real (tiny) video uploaded to `loc1`; its asset id."""
    make_location(client, "loc1")
    data = moving_square_video(tmp_path / "walk.mp4", frames=8).read_bytes()
    return upload(client, data, filename="walk.mp4")


def _queue(cfg: FieldboxConfig) -> Queue:
    return Queue(str(Layout(cfg.data_dir).queue_db), cfg.store, cfg.queue)


def test_a_job_is_queued_for_a_video_asset(client: Api, video_asset: str) -> None:
    """202 with the queued job; it shows in the list and by id, under the asset's location."""
    resp = client.post("/v1/jobs", json={"kind": "perception", "asset_id": video_asset})
    assert resp.status_code == 202, resp.text
    job = resp.json()
    assert job["status"] == "queued" and job["kind"] == "perception"
    assert job["location"] == "loc1" and job["payload"]["asset_id"] == video_asset
    assert client.get(f"/v1/jobs/{job['id']}").json()["id"] == job["id"]
    listed = client.get("/v1/jobs", params={"status": "queued", "location": "loc1"}).json()
    assert [j["id"] for j in listed["items"]] == [job["id"]]
    assert listed["counts"]["queued"] == 1
    assert client.get("/v1/jobs", params={"kind": "splat"}).json()["items"] == []


def test_the_same_idempotency_key_returns_the_same_job(client: Api, video_asset: str) -> None:
    """A repeated enqueue with one key gives the first job back (200), never a second."""
    body = {"kind": "splat", "asset_id": video_asset, "idempotency_key": "walk-1"}
    first = client.post("/v1/jobs", json=body)
    again = client.post("/v1/jobs", json=body)
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["id"] == again.json()["id"]
    assert len(client.get("/v1/jobs").json()["items"]) == 1


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"kind": "render", "asset_id": "A"}, 400, "unknown job kind"),
        ({"kind": "perception", "asset_id": "A", "params": {"colour": 1}}, 400, "unknown param"),
        ({"kind": "splat", "asset_id": "A", "params": {"iterations": -5}}, 400, "positive"),
        ({"kind": "perception", "asset_id": "loc1.0123456789abcdef0123"}, 404, "asset"),
        ({"kind": "perception"}, 400, "asset_id"),
    ],
)
def test_bad_requests_are_refused_before_queueing(
    client: Api, video_asset: str, body: dict[str, Any], status: int, words: str
) -> None:
    """Unknown kinds or params, a missing asset: a 4xx naming the problem; nothing queued."""
    body = {k: (video_asset if v == "A" else v) for k, v in body.items()}
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == status, resp.text
    assert words in resp.json()["message"]
    assert client.get("/v1/jobs").json()["items"] == []


def test_an_asset_that_is_not_a_video_is_refused(client: Api) -> None:
    """Bytes that do not decode as video: 400 at enqueue, not a job that fails later."""
    make_location(client, "loc1")
    asset = upload(client, b"this is not a video" * 100, filename="notes.mp4")
    resp = client.post("/v1/jobs", json={"kind": "perception", "asset_id": asset})
    assert resp.status_code == 400 and "not a usable video" in resp.json()["message"]
    # Named as the crew uploaded it, not by the blob's content hash.
    assert "notes.mp4: " in resp.json()["message"], resp.json()
    assert hashlib.sha256(b"this is not a video" * 100).hexdigest() not in resp.text


def test_a_full_queue_answers_429_with_retry_after(tmp_path: Path) -> None:
    """Past `[queue] max_queued`, enqueue is refused with 429 and Retry-After."""
    cfg = make_config(tmp_path / "data", "[queue]\nmax_queued = 1\n")
    token = make_token(cfg)
    with TestClient(app=create_app(cfg)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        make_location(client, "loc1")
        video = moving_square_video(tmp_path / "v.mp4", frames=4).read_bytes()
        asset = upload(client, video, filename="v.mp4")
        ok = client.post("/v1/jobs", json={"kind": "perception", "asset_id": asset})
        full = client.post("/v1/jobs", json={"kind": "splat", "asset_id": asset})
    assert ok.status_code == 202
    assert full.status_code == 429 and int(full.headers["retry-after"]) >= 1


def test_cancel_and_retry(client: Api, video_asset: str, cfg: FieldboxConfig) -> None:
    """A queued job cancels at once; retry queues it again; retrying a queued job is 409."""
    job = client.post("/v1/jobs", json={"kind": "perception", "asset_id": video_asset}).json()
    assert client.post(f"/v1/jobs/{job['id']}/retry").status_code == 409
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = client.post(f"/v1/jobs/{job['id']}/retry")
    assert again.status_code == 200 and again.json()["status"] == "queued"
    assert client.get("/v1/jobs/job_0000000000000000").status_code == 404


def test_event_feed_refuses_bad_requests(client: Api, video_asset: str) -> None:
    """An unknown job is a 404 and a non-numeric Last-Event-ID a 400, before any stream.

    (The live feed itself is tested against a real server: tests/system/test_job_events.py.)
    """
    job = client.post("/v1/jobs", json={"kind": "perception", "asset_id": video_asset}).json()
    bad = client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "x"})
    assert bad.status_code == 400
    assert client.get("/v1/jobs/job_0000000000000000/events").status_code == 404


def test_a_capture_upload_queues_both_jobs_when_configured(tmp_path: Path) -> None:
    """With `auto_enqueue_capture`, an upload of kind `capture` queues one perception and
    one splat job for its asset; other kinds queue nothing."""
    cfg = make_config(tmp_path / "data", "[worker]\nauto_enqueue_capture = true\n")
    with TestClient(app=create_app(cfg)) as c:
        c.headers["Authorization"] = f"Bearer {make_token(cfg)}"
        make_location(c, "loc1")
        data = moving_square_video(tmp_path / "walk.mp4", frames=8).read_bytes()
        capture = upload(c, data, filename="walk.mp4", kind="capture")
        upload(c, data + b"\0", filename="other.mp4", kind="video")
        jobs = c.get("/v1/jobs").json()["items"]
    assert sorted(j["kind"] for j in jobs) == ["perception", "splat"]
    assert {j["payload"]["asset_id"] for j in jobs} == {capture}


def test_a_photo_capture_queues_a_splat_job_only(tmp_path: Path) -> None:
    """A capture that is a ZIP of photos queues one splat job (perception needs video); a
    perception job asked for it is refused with 400 saying why."""
    import io
    import zipfile

    from tests.realdata import monstree

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(monstree().glob("*.jpg"))[:3]:
            zf.write(p, p.name)
    cfg = make_config(tmp_path / "data", "[worker]\nauto_enqueue_capture = true\n")
    with TestClient(app=create_app(cfg)) as c:
        c.headers["Authorization"] = f"Bearer {make_token(cfg)}"
        make_location(c, "loc1")
        capture = upload(
            c, buf.getvalue(), filename="photos.zip", kind="capture", filetype="application/zip"
        )
        jobs = c.get("/v1/jobs").json()["items"]
        refused = c.post("/v1/jobs", json={"kind": "perception", "asset_id": capture})
        two = io.BytesIO()
        with zipfile.ZipFile(two, "w") as zf:
            zf.writestr("a.jpg", b"x")
        few = upload(c, two.getvalue(), filename="few.zip", filetype="application/zip")
        too_few = c.post("/v1/jobs", json={"kind": "splat", "asset_id": few})
    assert [(j["kind"], j["payload"]["asset_id"]) for j in jobs] == [("splat", capture)]
    assert refused.status_code == 400 and "splat job, not perception" in refused.json()["message"]
    assert too_few.status_code == 400 and "holds 1 photo(s)" in too_few.json()["message"]
