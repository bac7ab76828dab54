"""The job benchmarks in one run: CPU segmenter frames/s, the synthetic splat job, queue claims.

    .venv/bin/python bench/bench_jobs.py [--quick]

Each part has its own script with more detail (bench_perception.py, bench_splat.py,
bench_queue.py); this one prints the figures the targets name, side by side with their
baselines: the segmenter next to reading the same frames alone, 4 claiming processes next
to 1, and the splat job against its 10-minute budget.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_perception import measure_segmenter_fps
from bench_queue import measure_claims
from bench_splat import measure_splat

SEGMENTER_TARGET_FPS = 10.0
SPLAT_TARGET_S = 600.0


def main(argv: list[str] | None = None) -> int:
    """Run the three measurements and print the table with verdicts."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer jobs, shorter clips")
    args = parser.parse_args(argv)
    started = time.monotonic()
    fps = measure_segmenter_fps(seconds=3.0 if args.quick else 6.0)
    jobs = 400 if args.quick else 2000
    one = measure_claims(jobs, 1)
    four = measure_claims(jobs, 4)
    splat = measure_splat()
    rows = [
        (
            "CPU segmenter, 640x360 (frames/s)",
            f"{fps:.1f}",
            f">= {SEGMENTER_TARGET_FPS:.0f}",
            fps >= SEGMENTER_TARGET_FPS,
        ),
        (
            "splat job end to end (s)",
            f"{splat['total_s']:.1f}",
            f"<= {SPLAT_TARGET_S:.0f}",
            splat["total_s"] <= SPLAT_TARGET_S,
        ),
    ]
    print(f"\njob benchmarks ({time.monotonic() - started:.0f} s)")
    print(f"{'measure':44} {'value':>10} {'target':>10}  verdict")
    for name, value, target, ok in rows:
        print(f"{name:44} {value:>10} {target:>10}  {'PASS' if ok else 'MISS'}")
    print(f"{'  of which SfM (s)':44} {splat['sfm_s']:>10.1f}")
    print(f"{'  of which training (s)':44} {splat['train_s']:>10.1f}")
    print(f"{'  frames registered / used':44} {splat['registered']:>5}/{splat['frames']:<4}")
    print(f"{'  Gaussians':44} {splat['gaussians']:>10}")
    print(f"{'queue claims, 1 process (jobs/s)':44} {one:>10.0f}")
    print(f"{'queue claims, 4 processes (jobs/s)':44} {four:>10.0f}   ratio {four / one:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
