"""Photo captures: a ZIP of still photos (plus an optional `capture.json`) as splat frames.

Crews often take photos rather than video. A photo capture is one upload of kind
`capture`, a ZIP holding the photos (JPEG or PNG) and optionally a capture bundle
(`capture.json`, the `capture-bundle` contract with `images`: per-photo intrinsics and
poses from the phone). This stage writes the same frames dir as the video stage
(`000000.jpg ...` and `frames.json`), so SfM and training do not care where frames came from.

The archive comes from a field key, so it is read as hostile: nothing is ever extracted by
its member names (each photo is decoded from bytes and written under our own name), member
count and decompressed sizes are capped (a ZIP bomb stops at the cap), and photos that do
not decode are listed, not fatal.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, Any

import cv2
import numpy as np

from perception.progress import InvalidInput
from perception.scene_facts import ContractError, validate

Json = dict[str, Any]
BUNDLE_NAME = "capture.json"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
MAX_MEMBERS = 4000
MAX_PHOTO_BYTES = 64 << 20
MAX_BUNDLE_BYTES = 4 << 20
MIN_PHOTOS = 3
JPEG_QUALITY = 95


def is_photo_capture(path: Path) -> bool:
    """True when `path` is a ZIP archive (a photo capture) rather than a video."""
    return zipfile.is_zipfile(path)


def _read_capped(fh: IO[bytes], limit: int, name: str) -> bytes:
    # The header's file_size is the sender's claim; the bytes actually inflated are capped.
    data = fh.read(limit + 1)
    if len(data) > limit:
        raise InvalidInput(f"{name}: larger than {limit >> 20} MiB uncompressed")
    return data


def _members(zf: zipfile.ZipFile) -> tuple[list[zipfile.ZipInfo], zipfile.ZipInfo | None]:
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise InvalidInput(f"the capture has {len(infos)} entries (at most {MAX_MEMBERS})")
    photos, bundle = [], None
    for info in infos:
        path = PurePosixPath(info.filename)
        if info.is_dir() or path.name.startswith(".") or "__MACOSX" in path.parts:
            continue  # folders, and the resource forks macOS's Finder adds
        if path.name == BUNDLE_NAME:
            bundle = info
        elif path.suffix.lower() in PHOTO_SUFFIXES:
            photos.append(info)
    # Capture order is the names' order (phones number their photos).
    photos.sort(key=lambda i: (PurePosixPath(i.filename).name, i.filename))
    return photos, bundle


def _bundle(zf: zipfile.ZipFile, info: zipfile.ZipInfo | None) -> dict[str, Json]:
    """Per-photo entries of the capture bundle, by file name ({} without a bundle)."""
    if info is None:
        return {}
    with zf.open(info) as fh:
        raw = _read_capped(fh, MAX_BUNDLE_BYTES, BUNDLE_NAME)
    try:
        doc = json.loads(raw)
        validate(doc, "capture-bundle")
    except (ValueError, ContractError) as exc:
        raise InvalidInput(f"{BUNDLE_NAME}: {exc}") from exc
    if "images" not in doc:
        raise InvalidInput(f"{BUNDLE_NAME}: a photo capture's bundle lists `images`")
    return {entry["file"]: entry for entry in doc["images"]}


def _scaled(entry: Json | None, scale: float) -> Json | None:
    if not entry or "intrinsics" not in entry:
        return None
    return {k: round(float(v) * scale, 4) for k, v in entry["intrinsics"].items()}


def check_photo_capture(archive: Path) -> int:
    """Check a capture ZIP's listing (not the photos' bytes); return how many photos it names.

    Raises InvalidInput for an unreadable archive, too many entries, a bad `capture.json`
    or fewer than three photos."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidInput(f"{archive.name}: not a readable ZIP ({exc})") from exc
    with zf:
        photos, bundle = _members(zf)
        _bundle(zf, bundle)
    if len(photos) < MIN_PHOTOS:
        raise InvalidInput(f"{archive.name}: holds {len(photos)} photo(s) (need {MIN_PHOTOS})")
    return len(photos)


def extract_photos(
    archive: Path,
    out_dir: Path,
    *,
    max_side: int,
    max_frames: int,
    progress: Callable[[float], None],
) -> Json:
    """Decode the photos of a capture ZIP into `out_dir` as splat frames; return a summary."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidInput(f"{archive.name}: not a readable ZIP ({exc})") from exc
    with zf:
        photos, bundle_info = _members(zf)
        entries = _bundle(zf, bundle_info)
        if len(photos) > max_frames:
            picks = np.unique(np.linspace(0, len(photos) - 1, max_frames).round().astype(int))
            photos = [photos[i] for i in picks]
        frames: list[Json] = []
        unreadable: list[str] = []
        for n, info in enumerate(photos):
            name = PurePosixPath(info.filename).name
            try:
                with zf.open(info) as fh:
                    raw = _read_capped(fh, MAX_PHOTO_BYTES, name)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
                # A corrupt member, an unsupported compression or an encrypted entry.
                unreadable.append(f"{name}: {exc}")
                continue
            # IMREAD_COLOR applies the EXIF orientation: the photo comes out upright.
            img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
            if img is None:
                unreadable.append(f"{name}: not a decodable image")
                continue
            h, w = img.shape[:2]
            scale = min(1.0, max_side / max(h, w))
            if scale < 1.0:
                size = (max(1, round(w * scale)), max(1, round(h * scale)))
                img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
            file = f"{len(frames):06d}.jpg"
            cv2.imwrite(str(out_dir / file), img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            frame: Json = {
                "file": file,
                "photo": name,
                "width": int(img.shape[1]),
                "height": int(img.shape[0]),
            }
            intrinsics = _scaled(entries.get(name), img.shape[1] / w)
            if intrinsics:
                frame["intrinsics"] = intrinsics
            if name in entries and "pose" in entries[name]:
                frame["pose"] = entries[name]["pose"]
            frames.append(frame)
            progress(0.95 * (n + 1) / len(photos))
    if len(frames) < MIN_PHOTOS:
        why = f" ({'; '.join(unreadable[:3])})" if unreadable else ""
        raise InvalidInput(
            f"{archive.name}: only {len(frames)} usable photo(s) (need {MIN_PHOTOS}){why}"
        )
    manifest = {
        "source": "photos",
        "video": archive.name,
        "width": frames[0]["width"],
        "height": frames[0]["height"],
        "bundle": bool(entries),
        "unreadable": unreadable,
        "frames": frames,
    }
    (out_dir / "frames.json").write_text(json.dumps(manifest, indent=1))
    progress(1.0)
    return {
        "source": "photos",
        "frames": len(frames),
        "photos": len(photos),
        "unreadable": len(unreadable),
        "width": manifest["width"],
        "height": manifest["height"],
        "bundle": bool(entries),
    }


def frame_intrinsics(frames_dir: Path) -> dict[str, Json]:
    """The phone's intrinsics per frame file (scaled to the frame), where the bundle gave them."""
    manifest = json.loads((frames_dir / "frames.json").read_text())
    return {f["file"]: f["intrinsics"] for f in manifest["frames"] if "intrinsics" in f}
