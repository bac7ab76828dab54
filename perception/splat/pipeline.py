"""The splat job: video or photos -> frames -> SfM -> Gaussians -> .ply, in resumable stages.

The input is a video, or a photo capture (a ZIP of photos, see `perception.splat.photos`):
photos skip the video sampling and, having no reliable order, are matched exhaustively.
Training holds every 8th registered view out and scores the splat on them (PSNR, SSIM;
`perception.splat.quality`); the export stage carries those figures, SfM's registration
and reprojection error, and `cameras.json` (every registered view's pose and intrinsics,
so a viewer can look from where a photo was taken).

Each stage writes under `{work_dir}/{stage}/` and leaves a `{stage}.done` summary (see
`perception.progress.Stages`); a retried job resumes at the first unfinished stage, and
training itself resumes from its last checkpoint (`{work_dir}/train.ckpt`, kept outside
the stage dir because an unfinished stage dir is cleared before it reruns).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from perception.progress import InvalidInput, Reporter, Stages, Unavailable
from perception.splat.config import SplatConfig
from perception.splat.frames import extract_frames
from perception.splat.photos import extract_photos, frame_intrinsics, is_photo_capture
from perception.splat.ply import EXPORT_SH_DEGREE, Splat, write_ply

Json = dict[str, Any]
PLY_NAME = "splat.ply"
CAMERAS_NAME = "cameras.json"
# Photos come in no reliable order; past this many, exhaustive matching's n^2 pairs cost too
# much and the sequential matcher is used as for video.
EXHAUSTIVE_MAX_PHOTOS = 200
THUMBNAIL_NAME = "thumbnail.jpg"
THUMBNAIL_SIDE = 256
CHECKPOINT_NAME = "train.ckpt"
EXTRA_MODULES = ("torch", "pycolmap")
# What a box without the extra must run; `fieldbox` is the distribution's name (pyproject).
INSTALL_EXTRA = "pip install 'fieldbox[splat]'"


def missing_dependencies() -> list[str]:
    """The modules of the `splat` extra that are not installed (empty when the pipeline can run)."""
    missing = []
    for name in EXTRA_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def _check_extra() -> None:
    """Raise Unavailable unless every module of the `splat` extra imports."""
    # Importing, not just finding: a package that is there but cannot load (a half-removed
    # install, a CUDA build without its libraries) is as missing, and it is better found
    # before the frames stage than after it. Training imports torch anyway.
    broken = []
    for name in EXTRA_MODULES:
        try:
            importlib.import_module(name)
        except (ImportError, OSError) as exc:
            # Not there at all: its name is enough; there but broken: say how.
            broken.append(name if getattr(exc, "name", None) == name else f"{name} ({exc})")
    if broken:
        raise Unavailable(
            "the splat pipeline needs the `splat` extra, which this box lacks (missing: "
            f"{', '.join(broken)}); install it with: {INSTALL_EXTRA}"
        )


def run_splat(video: Path, work_dir: Path, cfg: SplatConfig, reporter: Reporter) -> Path:
    """Turn `video` into a 3DGS .ply under `work_dir`, resuming a previous run; return its path.

    Raises Unavailable (the `splat` extra is not installed), InvalidInput (unreadable video,
    too few usable frames, SfM could not place enough of them), OutOfMemory (GPU), and lets
    Cancelled from `reporter` through.
    """
    _check_extra()
    if not video.is_file():
        raise InvalidInput(f"{video.name}: no such file")
    stages = Stages(work_dir, reporter)
    frames_dir, sfm_dir, train_dir = stages.dir("frames"), stages.dir("sfm"), stages.dir("train")
    checkpoint = work_dir / CHECKPOINT_NAME

    photos = is_photo_capture(video)

    def frames(out: Path) -> Json:
        if photos:
            return extract_photos(
                video,
                out,
                max_side=cfg.max_side,
                max_frames=cfg.max_frames,
                progress=lambda f: reporter.progress("frames", f),
            )
        return extract_frames(
            video,
            out,
            fps=cfg.fps,
            max_side=cfg.max_side,
            max_frames=cfg.max_frames,
            blur_ratio=cfg.blur_ratio,
            progress=lambda f: reporter.progress("frames", f),
        )

    def sfm(out: Path) -> Json:
        from perception.splat.sfm import run_sfm

        count = len(list(frames_dir.glob("*.jpg")))
        exhaustive = photos and count <= EXHAUSTIVE_MAX_PHOTOS
        return run_sfm(
            frames_dir,
            out,
            matcher="exhaustive" if exhaustive else cfg.matcher,
            min_registered=cfg.min_registered,
            progress=lambda f: reporter.progress("sfm", f),
            intrinsics=frame_intrinsics(frames_dir) if photos else None,
        )

    def train(out: Path) -> Json:
        from perception.splat.scene import load_scene
        from perception.splat.sfm import sparse_dir
        from perception.splat.train import render_image
        from perception.splat.train import train as train_splat

        scene = load_scene(sparse_dir(sfm_dir), frames_dir)
        splat, summary = train_splat(
            scene, cfg, checkpoint, lambda f: reporter.progress("train", f)
        )
        np.savez(out / "gaussians.npz", **dataclasses.asdict(splat))
        held = set(summary["quality"]["views"]) if summary["quality"]["held_out"] else set()
        _write_cameras(out / CAMERAS_NAME, scene.views, held)
        # The preview is a training view (index 1): a held-out one would show the splat's
        # worst side, and the admin page's thumbnail should show what was captured.
        preview = render_image(splat, scene.views[1 if len(scene.views) > 1 else 0])
        cv2.imwrite(str(out / "preview.jpg"), cv2.cvtColor(preview, cv2.COLOR_RGB2BGR))
        return summary

    def export(out: Path) -> Json:
        with np.load(train_dir / "gaussians.npz") as data:
            splat = Splat(**{f.name: data[f.name] for f in dataclasses.fields(Splat)})
        ply = out / PLY_NAME
        write_ply(ply, splat, EXPORT_SH_DEGREE)
        reporter.progress("export", 0.8)
        thumb = out / THUMBNAIL_NAME
        _thumbnail(train_dir / "preview.jpg", thumb)
        cameras = out / CAMERAS_NAME
        cameras.write_bytes((train_dir / CAMERAS_NAME).read_bytes())
        reporter.progress("export", 1.0)
        return {
            "ply": str(ply),
            "thumbnail": str(thumb),
            "cameras": str(cameras),
            "quality": quality(stages),
            "gaussians": len(splat),
            "sh_degree": EXPORT_SH_DEGREE,
            "bytes": ply.stat().st_size,
        }

    stages.run("frames", frames)
    stages.run("sfm", sfm)
    stages.run("train", train)
    # The marker is down: the checkpoint can only mislead a later run now.
    checkpoint.unlink(missing_ok=True)
    stages.run("export", export)
    return stages.dir("export") / PLY_NAME


def quality(stages: Stages) -> Json:
    """What a finished run's figures say of it: held-out PSNR/SSIM and SfM's registration."""
    sfm = stages.done("sfm") or {}
    train = stages.done("train") or {}
    q = train.get("quality") or {}
    return {
        "psnr": q.get("psnr"),
        "ssim": q.get("ssim"),
        "held_out": q.get("held_out", False),
        "eval_views": len(q.get("views", [])),
        "frames": sfm.get("frames"),
        "registered": sfm.get("registered"),
        "mean_reprojection_error": sfm.get("mean_reprojection_error"),
        "gaussians": train.get("gaussians"),
        "train_seconds": train.get("seconds"),
    }


def _write_cameras(path: Path, views: list[Any], held: set[str]) -> None:
    """Every registered view's world-to-camera pose and pinhole intrinsics (COLMAP's axes)."""
    doc = {
        "convention": "colmap-w2c",
        "about": "x_cam = R @ x_world + t; camera x right, y down, z forward; "
        "u = fx * x / z + cx; the .ply is in the same world frame",
        "frames": [
            {
                "index": i,
                "name": v.name,
                "width": v.width,
                "height": v.height,
                "fx": round(v.fx, 4),
                "fy": round(v.fy, 4),
                "cx": round(v.cx, 4),
                "cy": round(v.cy, 4),
                "R": [[round(float(x), 8) for x in row] for row in v.rotation],
                "t": [round(float(x), 8) for x in v.translation],
                "held_out": v.name in held,
            }
            for i, v in enumerate(views)
        ],
    }
    path.write_text(json.dumps(doc, indent=1))


def _thumbnail(src: Path, dst: Path) -> None:
    img = cv2.imread(str(src))
    if img is None:
        raise OSError(f"cannot read {src}")
    h, w = img.shape[:2]
    scale = min(1.0, THUMBNAIL_SIDE / max(h, w))
    if scale < 1.0:
        img = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(dst), img, [cv2.IMWRITE_JPEG_QUALITY, 85])
