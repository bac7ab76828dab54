"""Segmentation + tracking: sampled frames in, tracks.json out.

`make_tracker(cfg)` picks the segmenter named by `cfg.segmenter`: the CPU default, or SAM 2
(imported only then, so a box without torch or sam2 never loads them).
"""

from __future__ import annotations

from perception.config import PerceptionConfig
from perception.segment.base import TRACKS_JSON, SegmenterUnavailable, Tracker
from perception.segment.cpu import CpuTracker


def make_tracker(cfg: PerceptionConfig) -> Tracker:
    """The tracker that `cfg.segmenter` names."""
    if cfg.segmenter == "cpu":
        return CpuTracker(cfg)
    if cfg.segmenter == "sam2":
        from perception.segment.sam2 import Sam2Tracker

        return Sam2Tracker(cfg)
    # A config built with msgspec.structs.replace skips the Literal check; say so plainly.
    raise SegmenterUnavailable(f"unknown segmenter {cfg.segmenter!r}; one of: cpu, sam2")


__all__ = ["TRACKS_JSON", "CpuTracker", "SegmenterUnavailable", "Tracker", "make_tracker"]
