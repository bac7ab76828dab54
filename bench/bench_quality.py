"""Every quality figure of issue 14 in one run: perception on real footage, splats by PSNR.

    .venv/bin/python bench/bench_quality.py [--splat synthetic|monstree|both|none]

1. Perception (`bench_perception.measure_perception_quality`): the CPU segmenter on the real
   clips (vtest, bikes, Megamind, tree, monstree as a walk), tracks per 10 s, background
   plane tracks, and on vtest precision / recall / ID switches against the hand-labelled
   people of tests/perception/data/vtest_people.json.
2. Splats (`bench_splat.measure_splat`), the default CPU job: SfM registered/total and
   mean reprojection error, held-out PSNR/SSIM (every 8th view), end-to-end time.

It ends with one summary table, PASS/MISS per target, and exits 1 if any target is missed.
The splat jobs take minutes each (about 9 min for monstree on a 2-core box).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
for path in (BENCH.parent, BENCH):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_perception import (  # noqa: E402
    TARGET_PER_10S,
    TARGET_PRECISION,
    TARGET_RECALL,
    measure_perception_quality,
)
from bench_splat import TARGETS, measure_splat, report  # noqa: E402

from perception.splat import SplatConfig  # noqa: E402

Check = tuple[str, str, str, bool]  # (measure, value, target, met)


def perception_checks(rows: dict[str, Any]) -> list[Check]:
    """The perception targets, one line each."""
    out: list[Check] = []
    for name, row in rows.items():
        out.append(
            (
                f"{name}: tracks per 10 s",
                f"{row['per_10s']:.1f}",
                f"< {TARGET_PER_10S:g}",
                row["per_10s"] < TARGET_PER_10S,
            )
        )
        out.append((f"{name}: plane tracks", str(row["planes"]), "0", row["planes"] == 0))
    vtest = rows.get("vtest", {})
    for key, goal in (("precision", TARGET_PRECISION), ("recall", TARGET_RECALL)):
        value = vtest.get(key)
        shown = "unmeasured" if value is None else f"{value:.3f}"
        out.append(
            (f"vtest: {key} (IoU 0.5)", shown, f">= {goal:g}", value is not None and value >= goal)
        )
    if vtest.get("id_switches") is not None:
        out.append(("vtest: ID switches", str(vtest["id_switches"]), "(reported)", True))
    return out


def splat_checks(r: dict[str, Any]) -> list[Check]:
    """The splat targets of one scene, one line each."""
    target = TARGETS[r["scene"]]
    scene = r["scene"]
    out: list[Check] = [
        (
            f"{scene}: end to end (s)",
            f"{r['total_s']:.0f}",
            f"<= {target['total_s']:g}",
            r["total_s"] <= target["total_s"],
        ),
        (
            f"{scene}: held-out PSNR (dB)",
            f"{r['psnr']:.2f}",
            f">= {target['psnr']:g}",
            r["psnr"] >= target["psnr"],
        ),
        (f"{scene}: held-out SSIM", f"{r['ssim']:.3f}", "(reported)", True),
        (
            f"{scene}: mean reprojection (px)",
            f"{r['mean_reprojection_error']:.3f}",
            "(reported)",
            True,
        ),
    ]
    registered = f"{r['registered']}/{r['frames']}"
    if "registered" in target:
        out.append(
            (
                f"{scene}: SfM registered",
                registered,
                f">= {target['registered']}",
                r["registered"] >= target["registered"],
            )
        )
    else:
        out.append((f"{scene}: SfM registered", registered, "(reported)", True))
    return out


def main(argv: list[str] | None = None) -> int:
    """Run both benches, print the summary; 0 when every target is met."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--splat", choices=("synthetic", "monstree", "both", "none"), default="both"
    )
    args = parser.parse_args(argv)
    checks = perception_checks(measure_perception_quality())
    cfg = SplatConfig()
    scenes = {"both": ("synthetic", "monstree"), "none": ()}.get(args.splat, (args.splat,))
    for scene in scenes:
        r = measure_splat(None, cfg, scene)
        report(r, cfg)
        checks += splat_checks(r)
    print(f"\n{'measure':36} {'value':>12} {'target':>12}  verdict")
    for name, value, goal, ok in checks:
        print(f"{name:36} {value:>12} {goal:>12}  {'PASS' if ok else 'MISS'}")
    return 0 if all(ok for *_, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
