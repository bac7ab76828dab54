"""Photo captures: a ZIP of real photos (monstree) as splat input, read as hostile input."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from perception.progress import InvalidInput
from perception.splat.photos import MAX_PHOTO_BYTES, check_photo_capture, extract_photos
from perception.splat.sfm import run_sfm
from tests.realdata import monstree

BUNDLE = {
    "schema_version": 1,
    "location": "site-1",
    "captured_at": "2026-12-05T10:00:00Z",
    "device": {"model": "Pixel 8"},
}


def photo_zip(path: Path, photos: list[Path], extra: dict[str, bytes] | None = None) -> Path:
    """A capture ZIP as a phone app would make it: photos in a folder, plus `extra` members."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in photos:
            zf.write(p, f"DCIM/{p.name}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def extract(archive: Path, out: Path, max_side: int = 320) -> dict[str, object]:
    """Run the photo stage into `out`."""
    out.mkdir(exist_ok=True)
    return extract_photos(archive, out, max_side=max_side, max_frames=60, progress=lambda f: None)


@pytest.fixture(scope="module")
def monstree_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All 23 monstree photos (19 portrait, 4 landscape) in one capture ZIP."""
    folder = tmp_path_factory.mktemp("capture")
    return photo_zip(folder / "monstree.zip", sorted(monstree().glob("*.jpg")))


def test_photos_become_frames_in_name_order_at_max_side(monstree_zip: Path, tmp_path: Path) -> None:
    """Every photo is a frame, in name order, downscaled, portrait and landscape kept as shot."""
    summary = extract(monstree_zip, tmp_path / "f")
    manifest = json.loads((tmp_path / "f" / "frames.json").read_text())
    names = sorted(p.name for p in monstree().glob("*.jpg"))
    assert summary["frames"] == 23 and [f["photo"] for f in manifest["frames"]] == names
    sizes = {(f["width"], f["height"]) for f in manifest["frames"]}
    assert sizes == {(240, 320), (320, 240)}
    first = cv2.imread(str(tmp_path / "f" / "000000.jpg"))
    source = cv2.imread(str(monstree() / names[0]))
    assert first is not None and source is not None
    small = cv2.resize(source, (240, 320), interpolation=cv2.INTER_AREA)
    assert np.abs(first.astype(int) - small.astype(int)).mean() < 4  # the same picture


def test_sfm_places_the_real_photos(monstree_zip: Path, tmp_path: Path) -> None:
    """COLMAP registers at least 20 of the 23 real photos (one camera per image size) with
    sub-pixel mean reprojection error."""
    extract(monstree_zip, tmp_path / "f")
    (tmp_path / "s").mkdir()
    sfm = run_sfm(
        tmp_path / "f", tmp_path / "s", matcher="exhaustive", min_registered=8,
        progress=lambda f: None,
    )  # fmt: skip
    print(f"\nmonstree SfM: {sfm}")
    assert sfm["registered"] >= 20 and sfm["cameras"] == 2
    assert sfm["mean_reprojection_error"] < 1.0


def test_bundle_intrinsics_are_scaled_to_the_frames(tmp_path: Path) -> None:
    """Intrinsics from capture.json follow the photo's downscale; the pose is kept."""
    photos = sorted(monstree().glob("*.jpg"))[:3]
    bundle = {
        **BUNDLE,
        "images": [
            {
                "file": p.name,
                "intrinsics": {"fx": 1000.0, "fy": 1000.0, "cx": 480.0, "cy": 640.0},
                "pose": {"quaternion": [1, 0, 0, 0], "position": [0, 0, i]},
            }
            for i, p in enumerate(photos)
        ],
    }
    archive = photo_zip(tmp_path / "c.zip", photos, {"capture.json": json.dumps(bundle).encode()})
    summary = extract(archive, tmp_path / "f")
    frames = json.loads((tmp_path / "f" / "frames.json").read_text())["frames"]
    assert summary["bundle"] is True
    assert frames[0]["intrinsics"] == {"fx": 250.0, "fy": 250.0, "cx": 120.0, "cy": 160.0}
    assert frames[2]["pose"]["position"] == [0, 0, 2]


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"capture.json": b"{not json"}, r"capture\.json"),
        ({"capture.json": json.dumps({**BUNDLE, "video": {}}).encode()}, r"capture\.json"),
        ({"capture.json": json.dumps({**BUNDLE, "images": [{"file": "../x.jpg"}]}).encode()}, ""),
    ],
)
def test_a_bad_bundle_is_refused_with_its_reason(
    tmp_path: Path, extra: dict[str, bytes], words: str
) -> None:
    """A capture.json that is not JSON or breaks the contract: InvalidInput naming it."""
    archive = photo_zip(tmp_path / "c.zip", sorted(monstree().glob("*.jpg"))[:3], extra)
    with pytest.raises(InvalidInput, match=r"capture\.json"):
        check_photo_capture(archive)
    with pytest.raises(InvalidInput, match=words or "capture-bundle"):
        extract(archive, tmp_path / "f")


def test_hostile_members_are_never_written_by_their_names(tmp_path: Path) -> None:
    """Traversal names are decoded from bytes and written under our own names only; files
    that are not photos are ignored; a photo that does not decode is listed, not fatal."""
    photos = sorted(monstree().glob("*.jpg"))[:3]
    jpeg = photos[0].read_bytes()
    extra = {
        "../../escape.jpg": jpeg,
        "/abs/escape2.jpg": jpeg,
        "notes.txt": b"hello",
        "broken.jpg": b"\xff\xd8 not really a jpeg",
        "__MACOSX/DCIM/._img.jpg": b"resource fork",
    }
    archive = photo_zip(tmp_path / "c.zip", photos, extra)
    out = tmp_path / "deep" / "f"
    out.parent.mkdir()
    summary = extract(archive, out)
    written = sorted(p.name for p in out.iterdir())
    assert written == [f"{i:06d}.jpg" for i in range(5)] + ["frames.json"]
    assert summary["unreadable"] == 1
    assert sorted(p.name for p in tmp_path.rglob("*escape*")) == []


def test_a_zip_bomb_stops_at_the_cap(tmp_path: Path) -> None:
    """A member that inflates past the per-photo cap is refused; memory stays bounded."""
    archive = tmp_path / "bomb.zip"
    block = b"\0" * (1 << 20)
    with (
        zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf,
        zf.open("DCIM/huge.jpg", "w", force_zip64=True) as fh,
    ):
        for _ in range((MAX_PHOTO_BYTES >> 20) + 2):
            fh.write(block)
    assert archive.stat().st_size < 1 << 20
    with pytest.raises(InvalidInput, match="larger than 64 MiB"):
        extract(archive, tmp_path / "f")


def test_too_few_photos_or_not_a_zip_is_invalid(tmp_path: Path) -> None:
    """Two photos are not a capture; a ZIP with none names what it found."""
    two = photo_zip(tmp_path / "two.zip", sorted(monstree().glob("*.jpg"))[:2])
    with pytest.raises(InvalidInput, match="need 3"):
        check_photo_capture(two)
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", "no photos")
    with pytest.raises(InvalidInput, match="0 usable photo"):
        extract(empty, tmp_path / "f")
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04" + io.BytesIO(b"\0" * 64).getvalue())
    with pytest.raises(InvalidInput, match="not a readable ZIP"):
        check_photo_capture(junk)
