"""The perception pipeline: video → sampled frames → tracked masks → validated scene facts.

Stages run in `work_dir` through `perception.progress.Stages`, so a run after a crash (the
worker retrying a job) resumes at the first stage without a `.done` marker:

    work_dir/frames/   000000.jpg ... frames.json        frames.done
    work_dir/segment/  tracks.json                       segment.done
    work_dir/facts/    scene_facts.json                  facts.done
"""

from __future__ import annotations

import json
from pathlib import Path

from perception.config import PerceptionConfig
from perception.files import write_json
from perception.frames import extract_frames, load_frames
from perception.progress import Reporter, Stages
from perception.scene_facts import build_scene_facts, validate
from perception.segment import TRACKS_JSON, Tracker, make_tracker
from perception.segment.base import Json

FRAMES, SEGMENT, FACTS = "frames", "segment", "facts"
STAGES = (FRAMES, SEGMENT, FACTS)
SCENE_FACTS_JSON = "scene_facts.json"


def run_perception(video: Path, work_dir: Path, cfg: PerceptionConfig, reporter: Reporter) -> Path:
    """Run (or resume) perception on `video` in `work_dir`; return the scene_facts.json path.

    Raises InvalidInput for a file that is not a decodable video, Cancelled when a reporter
    callback does, OutOfMemory when the GPU runs out, SegmenterUnavailable when the
    configured segmenter cannot run here.
    """
    stages = Stages(work_dir, reporter)
    tracker: Tracker | None = None
    if stages.done(SEGMENT) is None:
        # Before decoding anything: a segmenter that cannot run should fail in a second,
        # not after minutes of frame extraction.
        tracker = make_tracker(cfg)
    frames_dir = stages.dir(FRAMES)
    stages.run(
        FRAMES,
        lambda out: extract_frames(
            video, out, fps=cfg.fps, max_side=cfg.max_side, reporter=reporter, stage=FRAMES
        ),
    )
    if tracker is not None:
        chosen = tracker
        stages.run(SEGMENT, lambda out: chosen.track(frames_dir, out, reporter))
    stages.run(FACTS, lambda out: _facts(frames_dir, stages.dir(SEGMENT), out, reporter))
    return stages.dir(FACTS) / SCENE_FACTS_JSON


def _facts(frames_dir: Path, segment_dir: Path, out: Path, reporter: Reporter) -> Json:
    reporter.progress(FACTS, 0.0)
    tracks_doc = json.loads((segment_dir / TRACKS_JSON).read_text())
    doc = build_scene_facts(tracks_doc, load_frames(frames_dir))
    validate(doc, "scene-facts")  # nothing leaves perception unchecked
    write_json(out / SCENE_FACTS_JSON, doc)
    reporter.progress(FACTS, 1.0)
    return {
        "tracks": len(doc["tracks"]),
        "frames": doc["video"]["frame_count"],
        "model": f"{doc['model']['name']}/{doc['model']['version']}",
        "file": SCENE_FACTS_JSON,
    }


__all__ = ["SCENE_FACTS_JSON", "STAGES", "run_perception"]
