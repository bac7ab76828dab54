"""Splat jobs end to end with the default (CPU) settings: time and quality against targets.

    .venv/bin/python bench/bench_splat.py [--scene synthetic|monstree|both] [--keep DIR]

Two inputs, each run through `run_splat` with `SplatConfig()`'s defaults:
- `synthetic`: the synthetic room (perception.splat.synthetic: textured walls and boxes,
  known camera path) filmed into a 15 s 320x240 video. Targets: end to end <= 10 min,
  held-out PSNR >= 25 dB.
- `monstree`: the 23 real photos of ../shared/data/monstree as a photo capture (a ZIP).
  Targets: SfM registers >= 20 of 23, held-out PSNR >= 20 dB, end to end <= 15 min.
Quality follows the 3DGS protocol (every 8th registered view held out; PSNR and SSIM on
them). `measure_splat()` returns the figures for bench_jobs.py and bench_quality.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from perception.progress import Reporter
from perception.splat import SplatConfig, run_splat
from perception.splat.synthetic import write_video
from tests.realdata import monstree

TARGET_S = 600.0
TARGETS = {
    "synthetic": {"total_s": 600.0, "psnr": 25.0},
    "monstree": {"total_s": 900.0, "psnr": 20.0, "registered": 20},
}
# 15 s at 12 fps: at the default 4 fps sampling that is the default max_frames (60).
VIDEO_FRAMES = 180
VIDEO_FPS = 12


def _input(scene: str, root: Path) -> Path:
    if scene == "monstree":
        archive = root / "monstree.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for photo in sorted(monstree().glob("*.jpg")):
                zf.write(photo, photo.name)
        return archive
    video = root / "room.mp4"
    write_video(video, frames=VIDEO_FRAMES, fps=VIDEO_FPS)
    return video


def measure_splat(
    work_dir: Path | None = None, cfg: SplatConfig | None = None, scene: str = "synthetic"
) -> dict[str, Any]:
    """Run one splat job on `scene`; return times (s), counts and held-out quality."""
    cfg = cfg or SplatConfig()
    with tempfile.TemporaryDirectory(prefix="bench-splat-") as tmp:
        root = work_dir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        video = _input(scene, root)
        film_s = time.monotonic() - t0
        stage_s: dict[str, float] = {}
        began: dict[str, float] = {}

        def on_stage(stage: str, event: str, info: dict[str, Any]) -> None:
            if event == "started":
                began[stage] = time.monotonic()
            else:
                stage_s[stage] = time.monotonic() - began[stage]

        job = root / "job"
        started = time.monotonic()
        ply = run_splat(video, job, cfg, Reporter(on_stage=on_stage))
        total_s = time.monotonic() - started
        done = {s: json.loads((job / f"{s}.done").read_text()) for s in stage_s}
        return {
            "total_s": total_s,
            "frames_s": stage_s["frames"],
            "sfm_s": stage_s["sfm"],
            "train_s": stage_s["train"],
            "export_s": stage_s["export"],
            "film_s": film_s,
            "frames": done["sfm"]["frames"],
            "registered": done["sfm"]["registered"],
            "points": done["sfm"]["points"],
            "gaussians": done["export"]["gaussians"],
            "iterations": done["train"]["iterations"],
            "seconds_per_step": done["train"]["seconds_per_step"],
            "loss_start": done["train"]["loss_start"],
            "loss_end": done["train"]["loss_end"],
            "backend": done["train"]["backend"],
            "ply_bytes": ply.stat().st_size,
            "resolution": f"{done['frames']['width']}x{done['frames']['height']}",
            "mean_reprojection_error": done["sfm"]["mean_reprojection_error"],
            "psnr": done["export"]["quality"]["psnr"],
            "ssim": done["export"]["quality"]["ssim"],
            "eval_views": done["export"]["quality"]["eval_views"],
            "scene": scene,
        }


def report(r: dict[str, Any], cfg: SplatConfig) -> bool:
    """Print one job's table with verdicts; True when every target is met."""
    target = TARGETS[r["scene"]]
    what = "15 s synthetic video" if r["scene"] == "synthetic" else "23 photos (ZIP)"
    print(f"\n{r['scene']} splat job, {what}, default settings ", end="")
    print(f"({platform.machine()}, {os.cpu_count()} CPUs)")
    print(
        f"  config: fps {cfg.fps}, max_side {cfg.max_side}, max_frames {cfg.max_frames}, "
        f"iterations {cfg.iterations}, max_gaussians {cfg.max_gaussians}"
    )
    # (measure, value, target shown, met); "at most" for time, "at least" for the rest.
    checks = [
        ("end to end (s)", r["total_s"], target["total_s"], r["total_s"] <= target["total_s"])
    ]
    for key, name in (
        ("psnr", f"held-out PSNR (dB, {r['eval_views']} views)"),
        ("registered", "SfM registered"),
    ):
        if key in target:
            checks.append((name, r[key], target[key], r[key] >= target[key]))
    print(f"{'measure':34} {'value':>16} {'target':>10}  verdict")
    for i, (name, value, goal, ok) in enumerate(checks):
        shown = f"{'<=' if i == 0 else '>='} {goal:g}"
        print(f"{name:34} {value:>16.2f} {shown:>10}  {'PASS' if ok else 'MISS'}")
    rows = [
        ("held-out SSIM", f"{r['ssim']:.3f}"),
        ("frames stage (s)", f"{r['frames_s']:.1f}"),
        ("SfM (s)", f"{r['sfm_s']:.1f}"),
        ("training (s)", f"{r['train_s']:.1f}"),
        ("  per step (s)", f"{r['seconds_per_step']:.3f}"),
        ("export (s)", f"{r['export_s']:.1f}"),
        ("frames registered / used", f"{r['registered']}/{r['frames']}"),
        ("mean reprojection error (px)", f"{r['mean_reprojection_error']:.3f}"),
        ("SfM points -> Gaussians", f"{r['points']} -> {r['gaussians']}"),
        ("loss start -> end", f"{r['loss_start']:.4f} -> {r['loss_end']:.4f}"),
        ("backend, resolution", f"{r['backend']}, {r['resolution']}"),
    ]
    for name, value in rows:
        print(f"{name:34} {value:>16}")
    return all(ok for *_, ok in checks)


def main(argv: list[str] | None = None) -> int:
    """Run the jobs and print their tables."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scene", choices=("synthetic", "monstree", "both"), default="both")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep its outputs")
    args = parser.parse_args(argv)
    cfg = SplatConfig()
    scenes = ("synthetic", "monstree") if args.scene == "both" else (args.scene,)
    ok = True
    for scene in scenes:
        keep = args.keep / scene if args.keep else None
        ok = report(measure_splat(keep, cfg, scene), cfg) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
