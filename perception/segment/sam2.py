"""The SAM 2 segmenter: automatic masks on key frames, propagated through the frames between.

Used only when `segmenter = "sam2"`; `sam2` and `torch` are imported here, lazily, so a box
without them runs the CPU segmenter and never loads them.

The video is processed in chunks of `keyframe_every` sampled frames. At each chunk's first
frame (a key frame) the automatic mask generator proposes masks; those not already covered by
an object carried over from the previous chunk become new objects. All objects are then
propagated through the chunk with the video predictor, and their masks on the chunk's last
frame seed the next chunk. Each chunk loads only its own frames, so memory does not grow with
the length of the video.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from perception.config import PerceptionConfig
from perception.progress import OutOfMemory, Reporter
from perception.segment.base import (
    Json,
    Progress,
    SegmenterUnavailable,
    TrackBuilder,
    frame_list,
    read_frame,
    write_tracks,
)

NAME = "sam2"
COVERED = 0.5  # a proposal this much inside known objects is one of them, not a new one

Mask = npt.NDArray[np.bool_]


def _require() -> None:
    try:
        import sam2.build_sam  # noqa: F401
        import torch  # noqa: F401
    except ImportError as err:
        raise SegmenterUnavailable(
            'segmenter = "sam2" needs the sam2 package and torch '
            f"(pip install sam2 torch torchvision): {err}"
        ) from err


def _device(wanted: str) -> str:
    import torch

    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cuda" and not torch.cuda.is_available():
        raise SegmenterUnavailable('device = "cuda" but torch sees no CUDA GPU')
    return wanted


@lru_cache(maxsize=1)
def _load(config: str, checkpoint: str, device: str, overrides: tuple[str, ...]) -> Any:
    # One model per worker process: loading it costs seconds, a job reuses it.
    from sam2.build_sam import build_sam2_video_predictor

    return build_sam2_video_predictor(
        config, checkpoint, device=device, hydra_overrides_extra=list(overrides)
    )


class Sam2Tracker:
    """SAM 2 video segmentation with automatic masks on key frames."""

    name = NAME

    def __init__(
        self,
        cfg: PerceptionConfig,
        *,
        hydra_overrides: Sequence[str] = (),
        generator_args: dict[str, Any] | None = None,
    ) -> None:
        _require()
        if not cfg.sam2_checkpoint:
            raise SegmenterUnavailable('segmenter = "sam2" needs perception.sam2_checkpoint')
        if not Path(cfg.sam2_checkpoint).is_file():
            raise SegmenterUnavailable(f"SAM 2 checkpoint not found: {cfg.sam2_checkpoint}")
        self.cfg = cfg
        self.device = _device(cfg.device)
        self.overrides = tuple(hydra_overrides)
        self.generator_args = {
            "points_per_side": cfg.sam2_points_per_side,
            **(generator_args or {}),
        }

    def track(self, frames_dir: Path, out_dir: Path, reporter: Reporter) -> Json:
        """Segment and track every frame in `frames_dir`; write out_dir/tracks.json."""
        import torch

        paths, width, height = frame_list(frames_dir)
        builder = TrackBuilder(
            width,
            height,
            min_area=int(self.cfg.min_area_frac * width * height),
            min_track_frames=self.cfg.min_track_frames,
        )
        progress = Progress(reporter, len(paths))
        progress.update(0)
        oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
        try:
            with self._autocast(), torch.inference_mode():
                self._run(paths, out_dir, builder, progress)
        except oom as err:
            raise OutOfMemory(f"SAM 2 ran out of GPU memory: {err}") from err
        finally:
            shutil.rmtree(out_dir / ".chunk", ignore_errors=True)
        model = {"name": NAME, "version": self._version(), "params": self.params()}
        return write_tracks(out_dir, builder.finish(model, len(paths)))

    def _run(
        self, paths: list[Path], out_dir: Path, builder: TrackBuilder, progress: Progress
    ) -> None:
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

        predictor = _load(
            self.cfg.sam2_config, self.cfg.sam2_checkpoint, self.device, self.overrides
        )
        # The video predictor is a SAM2Base, so the generator can share its weights.
        generator = SAM2AutomaticMaskGenerator(predictor, **self.generator_args)
        size = int(predictor.image_size)
        if size != 1024 and hasattr(generator.predictor, "_bb_feat_sizes"):
            # SAM2ImagePredictor hard-codes the backbone sizes of a 1024 px model.
            generator.predictor._bb_feat_sizes = [(size // s, size // s) for s in (4, 8, 16)]
        n, every = len(paths), self.cfg.keyframe_every
        frame_area = builder.width * builder.height
        seeds: dict[int, Mask] = {}
        next_id = 1
        # Chunks overlap by one frame: a chunk's last frame is the next one's key frame.
        for start in range(0, max(1, n - 1), every):
            end = min(start + every, n - 1)
            last_chunk = end == n - 1
            image = cv2.cvtColor(read_frame(paths[start]), cv2.COLOR_BGR2RGB)
            fresh = self._new_objects(generator.generate(image), seeds, frame_area)
            objects = dict(seeds)
            for mask in fresh:
                objects[next_id] = mask
                next_id += 1
            seeds = {}
            if objects:
                chunk = paths[start : end + 1]
                seeds = self._propagate(
                    predictor, chunk, out_dir, objects, start, builder, progress
                )
            progress.update(end + 1 if last_chunk else end)

    def _propagate(
        self,
        predictor: Any,
        chunk: list[Path],
        out_dir: Path,
        objects: dict[int, Mask],
        start: int,
        builder: TrackBuilder,
        progress: Progress,
    ) -> dict[int, Mask]:
        with _chunk_dir(out_dir, chunk) as folder:
            state = predictor.init_state(video_path=str(folder), offload_video_to_cpu=True)
        for obj_id, mask in objects.items():
            predictor.add_new_mask(state, frame_idx=0, obj_id=obj_id, mask=mask)
        carry: dict[int, Mask] = {}
        final = len(chunk) - 1
        last_chunk = start + final == progress.total - 1
        for local, obj_ids, logits in predictor.propagate_in_video(state, start_frame_idx=0):
            masks = (logits[:, 0] > 0.0).cpu().numpy()
            for obj_id, mask in zip(obj_ids, masks, strict=True):
                if local < final or last_chunk:
                    builder.add_mask(int(obj_id), start + local, mask)
                if local == final and mask.sum() >= builder.min_area:
                    carry[int(obj_id)] = mask
            progress.update(start + local)  # also where a cancel is noticed
        predictor.reset_state(state)
        return carry

    def _new_objects(
        self, proposals: list[dict[str, Any]], known: dict[int, Mask], frame_area: int
    ) -> list[Mask]:
        lo, hi = self.cfg.min_area_frac * frame_area, self.cfg.max_area_frac * frame_area
        taken: Mask | None = None
        for mask in known.values():
            taken = mask.copy() if taken is None else taken | mask
        out: list[Mask] = []
        for prop in sorted(proposals, key=lambda p: -float(p.get("predicted_iou", 0.0))):
            mask = np.asarray(prop["segmentation"], dtype=bool)
            area = int(mask.sum())
            if not lo <= area <= hi:
                continue
            if taken is not None and np.count_nonzero(mask & taken) > COVERED * area:
                continue
            out.append(mask)
            taken = mask.copy() if taken is None else taken | mask
        return out

    def _autocast(self) -> Any:
        import torch

        if self.device == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _version(self) -> str:
        try:
            pkg = metadata.version("sam2")
        except metadata.PackageNotFoundError:
            pkg = "unknown"
        return f"{pkg}/{Path(self.cfg.sam2_config).stem}"

    def params(self) -> Json:
        """The settings that shaped the result, recorded with it."""
        c = self.cfg
        return {
            "checkpoint": Path(c.sam2_checkpoint).name,
            "config": c.sam2_config,
            "device": self.device,
            "keyframe_every": c.keyframe_every,
            "min_area_frac": c.min_area_frac,
            "max_area_frac": c.max_area_frac,
            "min_track_frames": c.min_track_frames,
            "points_per_side": self.generator_args.get("points_per_side"),
        }


@contextmanager
def _chunk_dir(out_dir: Path, chunk: list[Path]) -> Iterator[Path]:
    """A folder of links 00000.jpg... to one chunk's frames, the layout SAM 2 loads."""
    folder = out_dir / ".chunk"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i, path in enumerate(chunk):
        os.symlink(path.resolve(), folder / f"{i:05d}.jpg")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
