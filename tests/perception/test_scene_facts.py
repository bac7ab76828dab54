"""Scene facts and capture bundles: RLE masks and the JSON Schema contracts."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from perception.config import PerceptionConfig
from perception.frames import load_frames
from perception.progress import Reporter
from perception.scene_facts import (
    ContractError,
    build_scene_facts,
    load_schema,
    rle_area,
    rle_decode,
    rle_encode,
    rle_encode_crop,
    validate,
)
from perception.segment import CpuTracker
from perception.segment.base import TRACKS_JSON

Json = dict[str, Any]


def naive_rle(mask: np.ndarray[Any, Any]) -> list[int]:
    """Column-major run lengths the slow, obvious way."""
    counts, current, run = [], False, 0
    for value in mask.ravel(order="F"):
        if bool(value) != current:
            counts.append(run)
            current, run = bool(value), 0
        run += 1
    counts.append(run)
    return counts


def test_rle_is_column_major_coco_style() -> None:
    """RLE runs go down each column, start with background, as in COCO."""
    mask = np.array([[0, 1], [1, 1]], dtype=bool)
    # Down the first column (0, 1), then the second (1, 1): one background, three foreground.
    assert rle_encode(mask) == {"size": [2, 2], "counts": [1, 3]}
    assert rle_encode(np.zeros((3, 4), bool)) == {"size": [3, 4], "counts": [12]}
    assert rle_encode(np.ones((3, 4), bool)) == {"size": [3, 4], "counts": [0, 12]}


def test_rle_round_trip_random_masks() -> None:
    """Random masks encode like the naive encoder, decode back, and crops encode the same."""
    rng = np.random.default_rng(1)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 20, 2))
        mask = rng.random((h, w)) < rng.random()
        rle = rle_encode(mask)
        assert rle["counts"] == naive_rle(mask)
        assert np.array_equal(rle_decode(rle), mask)
        assert rle_area(rle) == int(mask.sum())
        ys, xs = np.nonzero(mask)
        if ys.size:
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            assert rle_encode_crop(mask[y0:y1, x0:x1], int(x0), int(y0), h, w) == rle


def test_rle_rejects_counts_that_do_not_fit() -> None:
    """Counts that do not cover the frame, or a crop outside it, are errors."""
    with pytest.raises(ValueError, match="add up"):
        rle_decode({"size": [2, 2], "counts": [1, 2]})
    with pytest.raises(ValueError, match="outside"):
        rle_encode_crop(np.ones((3, 3), bool), 8, 0, 10, 10)


@pytest.fixture(scope="module")
def facts(frames_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Json:
    """A real scene-facts document from the synthetic video."""
    import json

    out = tmp_path_factory.mktemp("seg")
    CpuTracker(PerceptionConfig()).track(frames_dir, out, Reporter())
    return build_scene_facts(json.loads((out / TRACKS_JSON).read_text()), load_frames(frames_dir))


def test_built_document_is_valid(facts: Json) -> None:
    """The document built from a real run validates and describes the video."""
    validate(facts, "scene-facts")
    assert facts["video"]["frame_count"] == 15
    assert facts["video"]["fps"] == 5.0
    assert (facts["video"]["width"], facts["video"]["height"]) == (640, 360)
    assert facts["video"]["source"]["fps"] == 20.0
    assert facts["model"]["name"] == "cpu-classical"
    assert facts["mask_encoding"] == "coco-rle-column-major"
    track = facts["tracks"][0]
    assert (track["first_frame"], track["last_frame"]) == (0, 14)
    assert track["frames"][3]["t"] == pytest.approx(0.6)


def _break(doc: Json, how: str) -> None:
    ob = doc["tracks"][0]["frames"][0]
    if how == "missing video":
        del doc["video"]
    elif how == "unknown field":
        doc["tracks"][0]["colour"] = "red"
    elif how == "bbox of three":
        ob["bbox"] = ob["bbox"][:3]
    elif how == "negative area":
        ob["area"] = -1
    elif how == "wrong encoding":
        doc["mask_encoding"] = "coco-rle-row-major"
    elif how == "counts short":
        ob["mask"]["counts"] = ob["mask"]["counts"][:-1]
    elif how == "area mismatch":
        ob["area"] += 1
    elif how == "mask size":
        ob["mask"]["size"] = [720, 1280]
    elif how == "duplicate id":
        doc["tracks"][1]["id"] = doc["tracks"][0]["id"]
    elif how == "frames out of order":
        frames = doc["tracks"][0]["frames"]
        frames[0], frames[1] = frames[1], frames[0]
    elif how == "first_frame wrong":
        doc["tracks"][0]["first_frame"] = 3
    elif how == "bbox outside":
        ob["bbox"][0] = 630
    elif how == "frame past the end":
        doc["tracks"][0]["frames"][-1]["frame"] = 99
        doc["tracks"][0]["last_frame"] = 99


@pytest.mark.parametrize(
    "how",
    [
        "missing video",
        "unknown field",
        "bbox of three",
        "negative area",
        "wrong encoding",
        "counts short",
        "area mismatch",
        "mask size",
        "duplicate id",
        "frames out of order",
        "first_frame wrong",
        "bbox outside",
        "frame past the end",
    ],
)
def test_bad_scene_facts_are_rejected(facts: Json, how: str) -> None:
    """Each kind of broken document is rejected with where it broke."""
    doc = copy.deepcopy(facts)
    _break(doc, how)
    with pytest.raises(ContractError, match="scene-facts: at "):
        validate(doc, "scene-facts")


BUNDLE: Json = {
    "schema_version": 1,
    "location": "loc-0042",
    "captured_at": "2025-05-04T09:30:00+02:00",
    "device": {"model": "iPhone 15 Pro", "os": "iOS 18.4", "app_version": "2.3.1"},
    "video": {
        "asset_id": "a_01HZX3",
        "sha256": "ab" * 32,
        "bytes": 182_000_000,
        "content_type": "video/quicktime",
    },
    "crew": "north-2",
    "notes": "Basement, east stair",
    "gps": {"lat": 52.52, "lon": 13.405, "accuracy_m": 8},
}


def test_capture_bundle_accepts_a_real_upload() -> None:
    """A full capture bundle and a minimal one both validate."""
    validate(BUNDLE, "capture-bundle")
    minimal = {k: BUNDLE[k] for k in ("schema_version", "location", "captured_at", "device")}
    minimal["video"] = {"asset_id": "a1", "sha256": "0" * 64}
    validate(minimal, "capture-bundle")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("video", "sha256"), "ABC"),
        (("captured_at",), "yesterday"),
        (("captured_at",), "2025-05-04 09:30"),
        (("gps", "lat"), 91),
        (("location",), "../etc"),
        (("device", "model"), ""),
        (("video", "content_type"), "image/png"),
        (("extra",), 1),
    ],
)
def test_bad_capture_bundles_are_rejected(path: tuple[str, ...], value: object) -> None:
    """Bad hashes, dates, coordinates, ids, types and unknown fields are rejected."""
    doc = copy.deepcopy(BUNDLE)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ContractError, match="capture-bundle"):
        validate(doc, "capture-bundle")


def test_missing_required_field_is_named() -> None:
    """A missing required field is named in the error."""
    doc = copy.deepcopy(BUNDLE)
    del doc["video"]
    with pytest.raises(ContractError, match="is not valid under any of the given schemas"):
        validate(doc, "capture-bundle")


def test_schemas_ship_and_unknown_names_fail() -> None:
    """Both schemas ship as draft 2020-12; an unknown schema name is an error."""
    for name in ("scene-facts", "capture-bundle"):
        assert load_schema(name)["$schema"].endswith("2020-12/schema")
    with pytest.raises(ValueError, match="unknown schema"):
        validate({}, "scene_facts")
