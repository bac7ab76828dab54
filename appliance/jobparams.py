"""A job's params: checked against its config section's own Struct, capped by the box's values.

`msgspec.structs.replace` skips a Struct's `Meta` constraints, so params applied that way
could ask for `iterations: 10**12` and hold a worker for ever. Params go through
`msgspec.convert` into the section's type instead (every constraint applies), and the
knobs that make a job cost more may not exceed what the box's own config says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from appliance.config import FieldboxConfig
from perception.config import PerceptionConfig
from perception.splat.config import SplatConfig
from store.errors import InvalidDocument

# The params each kind accepts, and their types: anything else is a 400 at enqueue.
JOB_PARAMS: dict[str, dict[str, type]] = {
    "perception": {"fps": float, "max_side": int, "segmenter": str, "keyframe_every": int},
    "splat": {"fps": float, "max_side": int, "iterations": int, "max_frames": int},
}
# What a job may ask for at most: the box's own value of each knob its cost grows with.
# Splat `fps` is not here: `max_frames` already bounds how many frames a splat job uses.
CAPPED: dict[str, tuple[str, ...]] = {
    "perception": ("fps", "max_side"),
    "splat": ("max_side", "max_frames", "iterations"),
}
_SEGMENTERS = ("cpu", "sam2")

JobConfig = PerceptionConfig | SplatConfig


def _section(kind: str, cfg: FieldboxConfig) -> JobConfig:
    return cfg.perception if kind == "perception" else cfg.splat


def _check_shapes(kind: str, params: dict[str, Any]) -> None:
    if kind not in JOB_PARAMS:
        raise InvalidDocument(f"unknown job kind {kind!r}; one of: {', '.join(JOB_PARAMS)}")
    allowed = JOB_PARAMS[kind]
    for name, value in params.items():
        if name not in allowed:
            raise InvalidDocument(
                f"unknown param {name!r} for a {kind} job; known: {', '.join(allowed)}"
            )
        wanted = allowed[name]
        if name == "segmenter" and value not in _SEGMENTERS:
            raise InvalidDocument(f"segmenter must be one of: {', '.join(_SEGMENTERS)}")
        ok = isinstance(value, wanted) or (wanted is float and isinstance(value, int))
        if not ok or isinstance(value, bool) or (wanted is not str and value <= 0):
            raise InvalidDocument(f"param {name!r} must be a positive {wanted.__name__}")


def _over(name: str, asked: Any, box: Any) -> bool:
    # A `max_side` of 0 means "the source's size": more than any bound but the box's own 0.
    if name == "max_side" and box == 0:
        return False
    return bool(asked > box or (name == "max_side" and asked == 0))


def job_config(kind: str, params: dict[str, Any], cfg: FieldboxConfig) -> JobConfig:
    """The config section a `kind` job runs with: the box's, with `params` applied and
    checked (types, the section's constraints, the box's caps); InvalidDocument if not."""
    _check_shapes(kind, params)
    box = _section(kind, cfg)
    merged = {**msgspec.to_builtins(box), **params}
    try:
        section = msgspec.convert(merged, type(box))
    except msgspec.ValidationError as exc:
        raise InvalidDocument(f"invalid params for a {kind} job: {exc}") from None
    for name in CAPPED[kind]:
        asked, limit = getattr(section, name), getattr(box, name)
        if name in params and _over(name, asked, limit):
            raise InvalidDocument(
                f"param {name!r} is {asked!r}; this box allows at most {limit!r}"
                f" (its [{kind}] {name})"
            )
    sam2 = kind == "perception" and params.get("segmenter") == "sam2"
    if sam2 and not cfg.perception.sam2_checkpoint:
        raise InvalidDocument("segmenter 'sam2' needs a SAM 2 checkpoint this box lacks")
    return section


def named(exc: Exception, path: Path, filename: str) -> str:
    """An input error as the crew reads it: the upload's own filename, not its blob's sha256."""
    return str(exc).replace(path.name, filename or "the upload")
