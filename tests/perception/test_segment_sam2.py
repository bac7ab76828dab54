"""The SAM 2 path, run on CPU with a tiny randomly initialised model.

Skipped where the `sam2` package (and a working torchvision) is not installed, which is the
default: SAM 2 is optional. The random model proposes meaningless masks; what is checked is
the plumbing: key frames, propagation across chunks, ids, tracks.json and scene facts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from perception.config import PerceptionConfig
from perception.frames import load_frames
from perception.scene_facts import build_scene_facts, validate
from perception.segment import SegmenterUnavailable, make_tracker
from perception.segment.base import TRACKS_JSON
from tests.perception.conftest import Recorder

pytest.importorskip("sam2.build_sam", reason="sam2 is optional and not installed")
torch = pytest.importorskip("torch")

CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
SMALL = ("++model.image_size=256",)  # a quarter of the real size: seconds on a CPU


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised hiera-tiny SAM 2.1 checkpoint."""
    from sam2.build_sam import build_sam2_video_predictor

    torch.manual_seed(0)
    model = build_sam2_video_predictor(
        CONFIG, None, device="cpu", hydra_overrides_extra=list(SMALL)
    )
    path = tmp_path_factory.mktemp("sam2") / "tiny-random.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


def test_tracks_through_chunks(frames_dir: Path, tmp_path: Path, checkpoint: Path) -> None:
    """Tracks flow across key-frame chunks without duplicated frames, and facts validate."""
    from perception.segment.sam2 import Sam2Tracker

    cfg = PerceptionConfig(
        segmenter="sam2",
        sam2_checkpoint=str(checkpoint),
        device="cpu",
        keyframe_every=5,
        sam2_points_per_side=4,
        min_track_frames=1,
        max_area_frac=1.0,  # a random model's masks are blobs of any size
    )
    # Random weights never pass the quality filters; accept every proposal.
    lenient: dict[str, Any] = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    tracker = Sam2Tracker(cfg, hydra_overrides=SMALL, generator_args=lenient)
    recorder = Recorder()
    summary = tracker.track(frames_dir, tmp_path, recorder.reporter())
    doc = json.loads((tmp_path / TRACKS_JSON).read_text())
    assert summary["frames"] == doc["frame_count"] == 15
    assert doc["model"]["name"] == "sam2"
    assert doc["tracks"], "SAM 2 produced no tracks at all"
    for track in doc["tracks"]:
        frames = [ob["frame"] for ob in track["frames"]]
        assert frames == sorted(set(frames))  # chunk boundaries are not recorded twice
    facts = build_scene_facts(doc, load_frames(frames_dir))
    validate(facts, "scene-facts")
    fractions = [f for s, f in recorder.progress if s == "segment"]
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert not (tmp_path / ".chunk").exists()


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    """A missing or unset checkpoint is a clear SegmenterUnavailable."""
    cfg = PerceptionConfig(segmenter="sam2", sam2_checkpoint=str(tmp_path / "nope.pt"))
    with pytest.raises(SegmenterUnavailable, match="checkpoint not found"):
        make_tracker(cfg)
    with pytest.raises(SegmenterUnavailable, match="sam2_checkpoint"):
        make_tracker(PerceptionConfig(segmenter="sam2"))
