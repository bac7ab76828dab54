"""Job params at `POST /v1/jobs`: the config section's own constraints and the box's caps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from appliance.app import create_app
from appliance.jobparams import job_config
from perception.splat.config import SplatConfig
from store.errors import InvalidDocument
from tests.appliance.test_api_uploads import make_location, upload
from tests.conftest import make_config, make_token
from tests.videos import moving_square_video

Api = TestClient[Litestar]

BOX = """
[perception]
fps = 5.0
max_side = 320
[splat]
iterations = 300
max_frames = 40
max_side = 256
"""


@pytest.fixture
def box(tmp_path: Path) -> Any:
    """An in-process api on a box whose config sets the caps above; a video in `loc1`."""
    cfg = make_config(tmp_path / "data", BOX)
    with TestClient(app=create_app(cfg)) as c:
        c.headers["Authorization"] = f"Bearer {make_token(cfg)}"
        make_location(c, "loc1")
        data = moving_square_video(tmp_path / "walk.mp4", frames=8).read_bytes()
        yield c, upload(c, data, filename="walk.mp4")


@pytest.mark.parametrize(
    ("kind", "params", "words"),
    [
        ("splat", {"iterations": 10**12}, "at most 300"),
        ("splat", {"iterations": 301}, "at most 300"),
        ("splat", {"max_frames": 10**7}, "max_frames"),
        ("splat", {"max_frames": 41}, "at most 40"),
        ("splat", {"max_frames": 2}, "max_frames"),  # the section's own ge=3
        ("splat", {"max_side": 5000}, "max_side"),  # the section's own le=4096
        ("splat", {"max_side": 257}, "at most 256"),
        ("perception", {"fps": 1e300}, "at most 5.0"),
        ("perception", {"max_side": 100000}, "at most 320"),
        ("perception", {"segmenter": "sam2"}, "checkpoint"),
    ],
)
def test_params_past_the_box_are_400_and_nothing_is_queued(
    box: tuple[Api, str], kind: str, params: dict[str, Any], words: str
) -> None:
    """A param the section's Meta refuses, or above the box's own value: 400, no job."""
    client, asset = box
    resp = client.post("/v1/jobs", json={"kind": kind, "asset_id": asset, "params": params})
    assert resp.status_code == 400, resp.text
    assert resp.json()["status"] == 400 and words in resp.json()["message"]
    assert client.get("/v1/jobs").json()["items"] == []


def test_params_within_the_caps_are_queued(box: tuple[Api, str]) -> None:
    """Asking for less than the box allows (or exactly it) queues the job with those params."""
    client, asset = box
    params = {"iterations": 300, "max_frames": 10, "max_side": 128, "fps": 12.0}
    resp = client.post("/v1/jobs", json={"kind": "splat", "asset_id": asset, "params": params})
    assert resp.status_code == 202, resp.text
    assert resp.json()["payload"]["params"] == params


def test_the_worker_applies_the_same_checks(tmp_path: Path) -> None:
    """job_config, what the worker also runs a job with, builds the section by convert."""
    cfg = make_config(tmp_path / "data", BOX)
    section = job_config("splat", {"iterations": 100}, cfg)
    assert isinstance(section, SplatConfig) and section.iterations == 100
    assert section.max_frames == 40  # everything not asked for is the box's own
    with pytest.raises(InvalidDocument, match="at most 300"):
        job_config("splat", {"iterations": 10**12}, cfg)
