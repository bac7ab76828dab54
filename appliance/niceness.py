"""The worker's share of the CPU: its niceness, set first thing at its start.

On Linux a thread's niceness is its own and new threads inherit their creator's, so this
runs first thing in `fieldbox serve worker`, before the job threads or torch's and
OpenMP's pools exist, and sets every thread already there (a BLAS pool started by an
import): every thread the worker ever has then runs at the configured niceness.
"""

from __future__ import annotations

import os

from appliance.config import WorkerConfig


def apply_worker_priority(cfg: WorkerConfig) -> dict[str, int]:
    """Lower every thread of this process to niceness `cfg.nice`; what was set."""
    applied: dict[str, int] = {}
    if cfg.nice > 0:
        for tid in _threads():
            try:
                current = os.getpriority(os.PRIO_PROCESS, tid)
                # Never raise the priority: a unit's Nice= (or an operator's renice) that
                # asks for less CPU still wins; raising it would need CAP_SYS_NICE anyway.
                if cfg.nice > current:
                    os.setpriority(os.PRIO_PROCESS, tid, cfg.nice)
            except ProcessLookupError:
                pass  # a thread that ended meanwhile
        applied["nice"] = os.getpriority(os.PRIO_PROCESS, 0)
    return applied


def _threads() -> list[int]:
    """Ids of this process's threads (on Linux each has a niceness of its own); 0 elsewhere."""
    try:
        return [int(name) for name in os.listdir("/proc/self/task")]
    except OSError:
        return [0]
