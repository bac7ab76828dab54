"""Scene facts: the document perception hands back, its RLE masks, and contract validation.

Masks are COCO-style uncompressed RLE in column-major order ({"size": [h, w], "counts":
[...]}), the layout pycocotools reads, so a consumer can decode them with either this module
or pycocotools. Every document perception writes is validated against the JSON Schemas in
`perception/contracts/`, plus the checks a schema cannot express (run lengths that add up to
the frame, frames in order, boxes inside the frame).
"""

from __future__ import annotations

import itertools
import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from jsonschema import Draft202012Validator, FormatChecker

CONTRACTS = Path(__file__).resolve().parent / "contracts"
SCHEMAS = ("scene-facts", "capture-bundle")
MASK_ENCODING = "coco-rle-column-major"
SCHEMA_VERSION = 1

Mask = npt.NDArray[np.bool_]
Json = dict[str, Any]


class ContractError(ValueError):
    """A document does not match its contract; the message names where and why."""


def rle_encode(mask: Mask) -> Json:
    """Encode a full-frame boolean mask as column-major uncompressed RLE."""
    h, w = mask.shape
    return rle_encode_crop(mask, 0, 0, h, w)


def rle_encode_crop(crop: npt.NDArray[Any], x0: int, y0: int, height: int, width: int) -> Json:
    """Encode a mask given as its bbox crop at (x0, y0) inside a height x width frame.

    Works in O(crop area), not O(frame), which matters with many small masks per frame.
    """
    ch, cw = crop.shape
    if x0 < 0 or y0 < 0 or x0 + cw > width or y0 + ch > height:
        raise ValueError("mask crop lies outside the frame")
    # One background row above and below each crop column: no run can cross a column
    # edge, so each run maps to the full frame independently.
    padded = np.zeros((ch + 2, cw), dtype=np.int8)
    padded[1:-1] = crop.astype(bool)
    flat = padded.ravel(order="F")
    edges = np.flatnonzero(np.diff(flat))  # index before each change
    starts, ends = edges[0::2] + 1, edges[1::2] + 1  # [start, end) in padded coords
    col_s, row_s = np.divmod(starts, ch + 2)
    run_starts = (x0 + col_s) * height + (y0 + row_s - 1)
    run_ends = run_starts + (ends - starts)
    # A crop spanning the full height can have a run end at the bottom of one column and the
    # next start at the top of the following one: those are one run in the frame.
    if run_starts.size > 1:
        touching = run_starts[1:] == run_ends[:-1]
        run_starts = run_starts[np.r_[True, ~touching]]
        run_ends = run_ends[np.r_[~touching, True]]
    bounds = np.empty(run_starts.size * 2 + 2, dtype=np.int64)
    bounds[0], bounds[-1] = 0, height * width
    bounds[1:-1:2], bounds[2:-1:2] = run_starts, run_ends
    counts = np.diff(bounds)
    if counts.size > 1 and counts[-1] == 0:
        counts = counts[:-1]  # pycocotools never ends on an empty background run
    return {"size": [int(height), int(width)], "counts": counts.tolist()}


def rle_decode(rle: Json) -> Mask:
    """Decode column-major uncompressed RLE into a boolean (h, w) mask."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if counts.sum() != h * w:
        raise ValueError(f"RLE counts add up to {int(counts.sum())}, not {h}x{w}")
    values = np.zeros(counts.size, dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape((h, w), order="F")


def rle_area(rle: Json) -> int:
    """Foreground pixels of an RLE mask, without decoding it."""
    return int(sum(rle["counts"][1::2]))


def build_scene_facts(tracks_doc: Json, frames_doc: Json) -> Json:
    """The scene-facts document for one video, from tracks.json and frames.json."""
    times = [float(f["t"]) for f in frames_doc["frames"]]
    tracks: list[Json] = []
    for track in tracks_doc["tracks"]:
        frames = [
            {
                "frame": int(ob["frame"]),
                "t": times[ob["frame"]],
                "bbox": [int(v) for v in ob["bbox"]],
                "area": int(ob["area"]),
                "mask": ob["mask"],
            }
            for ob in track["frames"]
        ]
        out: Json = {
            "id": int(track["id"]),
            "first_frame": frames[0]["frame"],
            "last_frame": frames[-1]["frame"],
            "frames": frames,
        }
        if track.get("label"):
            out["label"] = str(track["label"])
        if track.get("score") is not None:
            out["score"] = float(track["score"])
        tracks.append(out)
    source = frames_doc["source"]
    return {
        "schema_version": SCHEMA_VERSION,
        "video": {
            "frame_count": len(times),
            "fps": float(frames_doc["fps"]),
            "width": int(frames_doc["width"]),
            "height": int(frames_doc["height"]),
            "duration": float(source.get("duration", 0.0)),
            "frame_times": times,
            "source": source,
        },
        "model": tracks_doc["model"],
        "mask_encoding": MASK_ENCODING,
        "tracks": tracks,
    }


@cache
def _validator(schema_name: str) -> Draft202012Validator:
    if schema_name not in SCHEMAS:
        raise ValueError(f"unknown schema {schema_name!r}; known: {', '.join(SCHEMAS)}")
    schema = json.loads((CONTRACTS / f"{schema_name}.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def load_schema(schema_name: str) -> Json:
    """The shipped JSON Schema called `schema_name` (scene-facts, capture-bundle)."""
    _validator(schema_name)  # a known name and a valid schema, or ValueError
    schema: Json = json.loads((CONTRACTS / f"{schema_name}.schema.json").read_text())
    return schema


def validate(doc: Any, schema_name: str) -> None:
    """Raise ContractError unless `doc` satisfies the named contract."""
    validator = _validator(schema_name)
    error = next(iter(sorted(validator.iter_errors(doc), key=lambda e: list(e.path))), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(document)"
        raise ContractError(f"{schema_name}: at {where}: {error.message}")
    if schema_name == "scene-facts":
        _check_scene_facts(doc)


def _check_scene_facts(doc: Json) -> None:
    video = doc["video"]
    h, w, n = video["height"], video["width"], video["frame_count"]
    if "frame_times" in video and len(video["frame_times"]) != n:
        raise ContractError("scene-facts: video.frame_times must have frame_count entries")
    seen: set[int] = set()
    for ti, track in enumerate(doc["tracks"]):
        where = f"tracks/{ti}"
        if track["id"] in seen:
            raise ContractError(f"scene-facts: at {where}/id: duplicate track id {track['id']}")
        seen.add(track["id"])
        frames = [ob["frame"] for ob in track["frames"]]
        if any(b <= a for a, b in itertools.pairwise(frames)):
            raise ContractError(f"scene-facts: at {where}/frames: not in increasing order")
        if (track["first_frame"], track["last_frame"]) != (frames[0], frames[-1]):
            raise ContractError(f"scene-facts: at {where}: first/last_frame disagree with frames")
        if frames[-1] >= n:
            raise ContractError(f"scene-facts: at {where}: frame {frames[-1]} >= frame_count {n}")
        for oi, ob in enumerate(track["frames"]):
            _check_observation(ob, h, w, f"{where}/frames/{oi}")


def _check_observation(ob: Json, h: int, w: int, where: str) -> None:
    x, y, bw, bh = ob["bbox"]
    if x + bw > w or y + bh > h:
        raise ContractError(f"scene-facts: at {where}/bbox: outside the {w}x{h} frame")
    mask = ob["mask"]
    if mask["size"] != [h, w]:
        raise ContractError(f"scene-facts: at {where}/mask/size: {mask['size']} is not [{h}, {w}]")
    if sum(mask["counts"]) != h * w:
        raise ContractError(f"scene-facts: at {where}/mask/counts: runs do not cover the frame")
    if rle_area(mask) != ob["area"]:
        raise ContractError(f"scene-facts: at {where}/area: differs from the mask's pixels")
