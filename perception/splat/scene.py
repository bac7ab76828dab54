"""Training views from an SfM reconstruction: undistorted frames, pinhole cameras, points."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from perception.progress import InvalidInput

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
# SfM points further from the points' median than this many times their 90th-percentile
# distance are stray triangulations (sky, reflections); seeding Gaussians there wastes them.
OUTLIER_FACTOR = 3.0


@dataclass
class View:
    """One registered frame: world-to-camera pose, pinhole intrinsics, undistorted RGB."""

    name: str
    rotation: F64  # [3, 3]
    translation: F64  # [3]
    fx: float
    fy: float
    cx: float
    cy: float
    image: NDArray[np.uint8]  # [H, W, 3] RGB

    @property
    def width(self) -> int:
        """Image width in pixels."""
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        """Image height in pixels."""
        return int(self.image.shape[0])

    @property
    def center(self) -> F64:
        """Camera centre in world coordinates."""
        return np.asarray(-self.rotation.T @ self.translation, np.float64)


@dataclass
class Scene:
    """What training starts from."""

    views: list[View]
    points: F32  # [N, 3] SfM points
    colors: F32  # [N, 3] in [0, 1]
    extent: float  # radius of the camera cloud: sets learning rates and size thresholds


def _intrinsics(model: str, params: list[float]) -> tuple[F64, NDArray[np.float64]]:
    """Calibration matrix and OpenCV distortion (k1, k2, p1, p2) of a COLMAP camera."""
    if model == "SIMPLE_PINHOLE":
        f, cx, cy = params
        return np.array([[f, 0, cx], [0, f, cy], [0, 0, 1.0]]), np.zeros(4)
    if model == "PINHOLE":
        fx, fy, cx, cy = params
        return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), np.zeros(4)
    if model == "SIMPLE_RADIAL":
        f, cx, cy, k = params
        return np.array([[f, 0, cx], [0, f, cy], [0, 0, 1.0]]), np.array([k, 0, 0, 0.0])
    if model == "RADIAL":
        f, cx, cy, k1, k2 = params
        return np.array([[f, 0, cx], [0, f, cy], [0, 0, 1.0]]), np.array([k1, k2, 0, 0.0])
    if model == "OPENCV":
        fx, fy, cx, cy, k1, k2, p1, p2 = params
        return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), np.array([k1, k2, p1, p2])
    raise InvalidInput(f"camera model {model} is not supported for training")


def load_scene(sparse: Path, image_dir: Path) -> Scene:
    """Registered views (sorted by name) and the SfM points of the reconstruction in `sparse`."""
    import pycolmap

    rec = pycolmap.Reconstruction(sparse)
    views = []
    for image_id in sorted(rec.reg_image_ids(), key=lambda i: rec.image(i).name):
        image = rec.image(image_id)
        camera = rec.camera(image.camera_id)
        k, dist = _intrinsics(camera.model.name, list(camera.params))
        bgr = cv2.imread(str(image_dir / image.name))
        if bgr is None:
            raise FileNotFoundError(image_dir / image.name)
        if np.any(dist):
            # Same K before and after: the frame is resampled as a pinhole camera with the
            # reconstruction's focal length, which is what the rasterizer models.
            bgr = cv2.undistort(bgr, k, dist)
        pose = image.cam_from_world().matrix()
        views.append(
            View(
                name=image.name,
                rotation=np.asarray(pose[:, :3], np.float64),
                translation=np.asarray(pose[:, 3], np.float64),
                fx=float(k[0, 0]),
                fy=float(k[1, 1]),
                cx=float(k[0, 2]),
                cy=float(k[1, 2]),
                image=np.ascontiguousarray(bgr[:, :, ::-1]),
            )
        )
    if not views:
        raise InvalidInput("the reconstruction has no registered frames")
    points = np.array([p.xyz for p in rec.points3D.values()], np.float32).reshape(-1, 3)
    colors = np.array([p.color for p in rec.points3D.values()], np.float32).reshape(-1, 3) / 255.0
    if len(points):
        med = np.median(points, axis=0)
        dist_ = np.linalg.norm(points - med, axis=1)
        keep = dist_ <= OUTLIER_FACTOR * max(float(np.percentile(dist_, 90)), 1e-9)
        points, colors = points[keep], colors[keep]
    centers = np.stack([v.center for v in views])
    # 3DGS's "cameras extent": 1.1 x the largest distance of a camera from their mean.
    extent = 1.1 * float(np.max(np.linalg.norm(centers - centers.mean(0), axis=1)))
    if extent <= 1e-9:
        extent = 1.0  # a single view: any scale works, the lr just needs to be positive
    return Scene(views, points, colors, extent)
