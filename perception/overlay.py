"""Scene facts drawn over the video's frames: what the admin page shows of a perception job.

A finished job keeps small copies of the frames that have tracks (`write_thumbnails`, a ZIP
of JPEGs stored as an asset, so they outlive the job's work dir), and `draw` paints each
track's mask, box and id over one of them, every track in its own colour.
"""

from __future__ import annotations

import colorsys
import zipfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from perception.files import atomic_write
from perception.scene_facts import rle_decode

Json = dict[str, Any]
Image = npt.NDArray[np.uint8]
THUMB_SIDE = 480
MAX_THUMBS = 60
JPEG_QUALITY = 85
MASK_ALPHA = 0.45
GOLDEN = 0.618033988749895


def thumb_name(index: int) -> str:
    """The member name of sampled frame `index` in the thumbnails ZIP."""
    return f"{index:06d}.jpg"


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A colour (BGR) for a track id: hues spread by the golden ratio, so neighbours differ."""
    r, g, b = colorsys.hsv_to_rgb((track_id * GOLDEN) % 1.0, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def observations(facts: Json) -> dict[int, list[tuple[int, Json]]]:
    """Per sampled frame, the (track id, observation) pairs seen in it."""
    out: dict[int, list[tuple[int, Json]]] = {}
    for track in facts.get("tracks", []):
        for ob in track.get("frames", []):
            out.setdefault(int(ob["frame"]), []).append((int(track["id"]), ob))
    return out


def shown_frames(facts: Json, limit: int = MAX_THUMBS) -> list[int]:
    """The frames worth showing: those with tracks, spread over the video when there are more."""
    found = sorted(observations(facts))
    if len(found) <= limit:
        return found
    picks = np.unique(np.linspace(0, len(found) - 1, limit).round().astype(int))
    return [found[i] for i in picks]


def _small(image: Image) -> Image:
    h, w = image.shape[:2]
    scale = THUMB_SIDE / max(h, w)
    if scale >= 1.0:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)


def write_thumbnails(facts: Json, frames_dir: Path, out: Path) -> int:
    """Write the shown frames, downscaled, as a ZIP of JPEGs at `out`; return how many."""
    count = 0
    with atomic_write(out) as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
        for index in shown_frames(facts):
            read = cv2.imread(str(frames_dir / thumb_name(index)), cv2.IMREAD_COLOR)
            if read is None:
                continue  # a frame the segmenter saw is gone: show the others
            ok, jpeg = cv2.imencode(
                ".jpg", _small(np.asarray(read, np.uint8)), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
            )
            if ok:
                zf.writestr(thumb_name(index), jpeg.tobytes())
                count += 1
    return count


def read_thumbnail(archive: Path, index: int) -> Image | None:
    """Frame `index` from a thumbnails ZIP, or None when it is not in it."""
    try:
        with zipfile.ZipFile(archive) as zf:
            raw = zf.read(thumb_name(index))
    except (KeyError, zipfile.BadZipFile, OSError):
        return None
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    return None if image is None else np.asarray(image, np.uint8)


def draw(image: Image, facts: Json, index: int) -> Image:
    """`image` (frame `index`, at any scale) with each track's mask, box and id drawn on it."""
    video = facts.get("video", {})
    fw, fh = int(video.get("width", image.shape[1])), int(video.get("height", image.shape[0]))
    h, w = image.shape[:2]
    sx, sy = w / fw, h / fh
    out = image.astype(np.float32)
    found = observations(facts).get(index, [])
    for track_id, ob in found:
        tint = np.array(track_colour(track_id), np.float32)
        mask = np.asarray(rle_decode(ob["mask"]), np.uint8)
        if mask.shape != (h, w):
            mask = np.asarray(cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST), np.uint8)
        on = mask.astype(bool)
        out[on] = (1 - MASK_ALPHA) * out[on] + MASK_ALPHA * tint
    canvas = np.clip(out, 0, 255).astype(np.uint8)
    thick = max(1, round(max(h, w) / 320))
    for track_id, ob in found:
        colour = track_colour(track_id)
        x, y, bw, bh = ob["bbox"]
        p0 = (round(x * sx), round(y * sy))
        p1 = (round((x + bw) * sx) - 1, round((y + bh) * sy) - 1)
        cv2.rectangle(canvas, p0, p1, colour, thick)
        label = str(track_id)
        scale = 0.4 * thick + 0.1
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        top = max(0, p0[1] - th - base - 2)
        cv2.rectangle(canvas, (p0[0], top), (p0[0] + tw + 4, top + th + base + 2), colour, -1)
        cv2.putText(
            canvas,
            label,
            (p0[0] + 2, top + th + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (0, 0, 0),
            thick,
            cv2.LINE_AA,
        )
    return canvas


def jpeg(image: Image) -> bytes:
    """`image` encoded as a JPEG."""
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("could not encode the frame")
    return data.tobytes()
