"""Structure from motion with pycolmap: SIFT features, matching, incremental mapping.

Everything lands in the stage dir: `database.db` (features and matches) and `sparse/`
(the largest reconstruction in COLMAP's binary format), so once the stage's marker is
written a crashed job resumes at training without redoing any of this.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from perception.progress import Cancelled, InvalidInput

Json = dict[str, Any]
# Features are extracted this many frames at a time: pycolmap's calls block, so chunks are
# where progress is reported and cancellation is noticed.
EXTRACT_CHUNK = 8
MAX_FEATURES = 4096
# Frames one frame is matched against in sequential mode (plus quadratic extras 2, 4, 8...).
SEQUENTIAL_OVERLAP = 10
# Share of the stage's progress bar each phase takes (mapping is the long one).
EXTRACT_SHARE, MATCH_SHARE = 0.3, 0.2


def sparse_dir(stage_dir: Path) -> Path:
    """Where the kept reconstruction is written (COLMAP binary: cameras, images, points3D)."""
    return stage_dir / "sparse"


@contextmanager
def _quiet_colmap() -> Iterator[None]:
    # COLMAP logs every image and every bundle adjustment at INFO to stderr, which would
    # flood the worker's journal; warnings and errors still get through.
    import pycolmap

    before = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = 1
    try:
        yield
    finally:
        pycolmap.logging.minloglevel = before


def run_sfm(
    image_dir: Path,
    stage_dir: Path,
    *,
    matcher: str,
    min_registered: int,
    progress: Callable[[float], None],
    intrinsics: dict[str, Json] | None = None,
) -> Json:
    """Reconstruct cameras and sparse points from the JPEGs in `image_dir`; return a summary.

    `intrinsics` (per frame name: fx, fy, cx, cy in frame pixels, from a phone's capture
    bundle) seed the camera of that frame's size; SfM still refines them.

    Raises InvalidInput when too few frames could be placed: the video does not show a
    static, textured scene from viewpoints that overlap enough.
    """
    import pycolmap

    names = sorted(p.name for p in image_dir.glob("*.jpg"))
    database = stage_dir / "database.db"
    started = time.monotonic()
    groups = _camera_groups(image_dir, names, intrinsics or {})
    done = 0
    with _quiet_colmap():
        extraction = pycolmap.FeatureExtractionOptions()
        extraction.sift.max_num_features = MAX_FEATURES
        for group, prior in groups:
            camera_id: int | None = None
            for i in range(0, len(group), EXTRACT_CHUNK):
                reader = pycolmap.ImageReaderOptions()
                # One camera per image size: a video has one; photos taken in portrait and
                # landscape have two. SIMPLE_RADIAL absorbs a phone lens's mild distortion;
                # training undistorts the frames with it.
                reader.camera_model = "SIMPLE_RADIAL"
                if prior is not None:
                    f = 0.5 * (prior["fx"] + prior["fy"])
                    reader.camera_params = f"{f},{prior['cx']},{prior['cy']},0"
                if camera_id is not None:
                    reader.existing_camera_id = camera_id  # later chunks share the first's
                pycolmap.extract_features(
                    database,
                    image_dir,
                    image_names=group[i : i + EXTRACT_CHUNK],
                    camera_mode=pycolmap.CameraMode.SINGLE,
                    reader_options=reader,
                    extraction_options=extraction,
                    device=pycolmap.Device.auto,
                )
                if camera_id is None:
                    camera_id = _camera_of(database, group[0])
                done += len(group[i : i + EXTRACT_CHUNK])
                progress(EXTRACT_SHARE * done / len(names))
        extracted = time.monotonic()
        if matcher == "exhaustive":
            pycolmap.match_exhaustive(database, device=pycolmap.Device.auto)
        else:
            pairing = pycolmap.SequentialPairingOptions()
            pairing.overlap = SEQUENTIAL_OVERLAP
            pycolmap.match_sequential(
                database, pairing_options=pairing, device=pycolmap.Device.auto
            )
        matched = time.monotonic()
        progress(EXTRACT_SHARE + MATCH_SHARE)
        models = _map(database, image_dir, stage_dir / "models", len(names), progress)
    mapped = time.monotonic()
    best = max(models.values(), key=lambda r: r.num_reg_images(), default=None)
    registered = best.num_reg_images() if best is not None else 0
    if registered < max(min_registered, (len(names) + 1) // 2):
        raise InvalidInput(
            f"structure from motion placed only {registered} of {len(names)} frames "
            f"(need at least {max(min_registered, (len(names) + 1) // 2)}): film a static, "
            "textured scene, moving slowly around it with plenty of overlap between views"
        )
    assert best is not None
    out = sparse_dir(stage_dir)
    out.mkdir()
    best.write(out)
    # The per-model folders are scratch; only the kept one is read later.
    for path in sorted((stage_dir / "models").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (stage_dir / "models").rmdir()
    progress(1.0)
    return {
        "frames": len(names),
        "registered": registered,
        "points": best.num_points3D(),
        "models": len(models),
        "cameras": len(groups),
        "mean_reprojection_error": round(float(best.compute_mean_reprojection_error()), 4),
        "extract_s": round(extracted - started, 2),
        "match_s": round(matched - extracted, 2),
        "map_s": round(mapped - matched, 2),
    }


def _camera_groups(
    image_dir: Path, names: list[str], intrinsics: dict[str, Json]
) -> list[tuple[list[str], Json | None]]:
    """Frames grouped by image size (one camera each), with the group's prior intrinsics."""
    import cv2

    groups: dict[tuple[int, int], list[str]] = {}
    for name in names:
        img = cv2.imread(str(image_dir / name))
        if img is None:
            raise InvalidInput(f"frame {name} is unreadable")
        groups.setdefault((int(img.shape[1]), int(img.shape[0])), []).append(name)
    return [(group, intrinsics.get(group[0])) for group in groups.values()]


def _camera_of(database: Path, name: str) -> int:
    """The camera COLMAP gave the image `name` in `database`."""
    import pycolmap

    db = pycolmap.Database.open(database)
    try:
        image = db.read_image_with_name(name)
        if image is None:
            raise InvalidInput(f"COLMAP could not read frame {name}")
        return int(image.camera_id)
    finally:
        db.close()


def _map(
    database: Path, image_dir: Path, out: Path, total: int, progress: Callable[[float], None]
) -> dict[int, Any]:
    """Incremental mapping with progress per registered image and cooperative cancellation."""
    import pycolmap

    out.mkdir()
    options = pycolmap.IncrementalPipelineOptions()
    token = pycolmap.CancellationToken()
    seen = 0
    cancelled: list[Cancelled] = []

    def next_image() -> None:
        # An exception raised inside COLMAP's C++ loop is better not relied on: note the
        # cancellation, ask COLMAP to stop at its next check, re-raise once it has returned.
        nonlocal seen
        seen += 1
        try:
            progress(
                EXTRACT_SHARE
                + MATCH_SHARE
                + (1 - EXTRACT_SHARE - MATCH_SHARE) * min(0.99, seen / total)
            )
        except Cancelled as exc:
            cancelled.append(exc)
            token.cancel()

    try:
        models: dict[int, Any] = pycolmap.incremental_mapping(
            database,
            image_dir,
            out,
            options,
            next_image_callback=next_image,
            cancellation_token=token,
        )
    except InterruptedError:
        if cancelled:
            raise cancelled[0] from None
        raise
    if cancelled:
        raise cancelled[0]
    return models
