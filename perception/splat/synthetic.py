"""A synthetic textured scene filmed from known camera poses: for tests, benches and self-checks.

The scene is a small room (floor, three walls) with two boxes, every face covered in
band-limited colour noise so SIFT finds plenty of features. Frames are ray-cast exactly
(nearest quad per pixel, bilinear texture lookup), rendered at twice the size and
downsampled so edges are anti-aliased like a real camera's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
U8 = NDArray[np.uint8]


@dataclass(frozen=True)
class Quad:
    """A textured parallelogram: `origin + s * edge_u + t * edge_v` for s, t in [0, 1]."""

    origin: F64
    edge_u: F64
    edge_v: F64
    texture: U8


@dataclass(frozen=True)
class Pose:
    """A pinhole camera: world-to-camera rotation and translation (COLMAP convention)."""

    rotation: F64
    translation: F64

    @property
    def center(self) -> F64:
        """The camera centre in world coordinates."""
        return np.asarray(-self.rotation.T @ self.translation, dtype=np.float64)


def _noise_texture(rng: np.random.Generator, size: int) -> U8:
    # Noise summed over octaves, each blurred to its own scale: blobs at many sizes give
    # SIFT stable features at every pyramid level, and no aliasing when downsampled.
    acc = np.zeros((size, size, 3), np.float64)
    for cells, weight in ((8, 1.0), (24, 0.7), (64, 0.5)):
        coarse = rng.random((cells, cells, 3))
        acc += weight * cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    acc -= acc.min()
    acc /= acc.max()
    tint = rng.uniform(0.4, 1.0, size=3)
    return np.clip(acc * tint * 255.0, 0, 255).astype(np.uint8)


def _box(
    rng: np.random.Generator, corner: tuple[float, float, float], size: tuple[float, float, float]
) -> list[Quad]:
    x, y, z = corner
    sx, sy, sz = size
    ex, ey, ez = np.array([sx, 0, 0.0]), np.array([0, sy, 0.0]), np.array([0, 0, sz])
    o = np.array([x, y, z], np.float64)
    faces = [
        (o, ex, ey),  # back
        (o + ez, ex, ey),  # front
        (o, ez, ey),  # left
        (o + ex, ez, ey),  # right
        (o + ey, ex, ez),  # top
    ]
    return [Quad(a, b, c, _noise_texture(rng, 256)) for a, b, c in faces]


def make_scene(seed: int = 3) -> list[Quad]:
    """The room with two boxes; y is up, the floor is y = 0."""
    rng = np.random.default_rng(seed)
    w = 3.0
    quads = [
        Quad(
            np.array([-w, 0, -w]),
            np.array([2 * w, 0, 0.0]),
            np.array([0, 0, 2 * w]),
            _noise_texture(rng, 512),
        ),
        Quad(
            np.array([-w, 0, -w]),
            np.array([2 * w, 0, 0.0]),
            np.array([0, 2.5, 0.0]),
            _noise_texture(rng, 512),
        ),
        Quad(
            np.array([-w, 0, -w]),
            np.array([0, 0, 2 * w]),
            np.array([0, 2.5, 0.0]),
            _noise_texture(rng, 512),
        ),
        Quad(
            np.array([w, 0, -w]),
            np.array([0, 0, 2 * w]),
            np.array([0, 2.5, 0.0]),
            _noise_texture(rng, 512),
        ),
    ]
    quads += _box(rng, (-1.4, 0.0, -0.4), (1.2, 1.2, 1.2))
    quads += _box(rng, (0.6, 0.0, -1.4), (0.8, 1.6, 0.8))
    return quads


def look_at(center: F64, target: F64) -> Pose:
    """The pose of a camera at `center` looking at `target` with world +y up."""
    forward = target - center
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    return Pose(rotation, -rotation @ center)


def orbit(
    frames: int, sweep_deg: float = 70.0, radius: float = 5.0, height: float = 2.0
) -> list[Pose]:
    """Camera poses along a smooth arc in front of the room, all looking at its middle."""
    target = np.array([0.0, 0.6, -0.3])
    poses = []
    for i in range(frames):
        a = math.radians(-sweep_deg / 2 + sweep_deg * i / max(frames - 1, 1))
        # A little vertical bob so the path is not planar (better conditioned SfM).
        h = height + 0.25 * math.sin(2 * math.pi * i / max(frames - 1, 1))
        poses.append(look_at(np.array([radius * math.sin(a), h, radius * math.cos(a)]), target))
    return poses


def intrinsics(width: int, height: int) -> F64:
    """The calibration matrix every synthetic frame uses (about 56 degrees horizontal FOV)."""
    f = 0.95 * width
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])


def render(quads: list[Quad], pose: Pose, width: int, height: int) -> U8:
    """Ray-cast one RGB frame (supersampled 2x, then area-downsampled)."""
    sw, sh = 2 * width, 2 * height
    k = intrinsics(sw, sh)
    jj, ii = np.meshgrid(
        np.arange(sw, dtype=np.float32) + 0.5, np.arange(sh, dtype=np.float32) + 0.5
    )
    rays_cam = np.stack([(jj - k[0, 2]) / k[0, 0], (ii - k[1, 2]) / k[1, 1], np.ones_like(jj)], -1)
    rays = (rays_cam @ pose.rotation.astype(np.float32)).reshape(-1, 3)  # world directions
    rx, ry, rz = (np.ascontiguousarray(rays[:, i]) for i in range(3))

    def along(vec: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
        # rays @ vec, spelled out: numpy's float32 [N, 3] @ [3] takes a slow path
        return np.asarray(
            rx * np.float32(vec[0]) + ry * np.float32(vec[1]) + rz * np.float32(vec[2])
        )

    c = pose.center
    best = np.full(sw * sh, np.inf, np.float32)
    out = np.full((sw * sh, 3), 90, np.uint8)
    for q in quads:
        n = np.cross(q.edge_u, q.edge_v)
        denom = along(n)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.float32((q.origin - c) @ n) / denom
        hit = (t > 1e-6) & (t < best)
        # Plane coordinates of the hit point, o + t d - origin, projected on each edge.
        rel = (c - q.origin).astype(np.float32)
        eu = (q.edge_u / (q.edge_u @ q.edge_u)).astype(np.float32)
        ev = (q.edge_v / (q.edge_v @ q.edge_v)).astype(np.float32)
        s = rel @ eu + t * along(eu)
        r = rel @ ev + t * along(ev)
        hit &= (s >= 0) & (s <= 1) & (r >= 0) & (r <= 1)
        if not hit.any():
            continue
        th, tw = q.texture.shape[:2]
        # remap wants a 2D map under 32767 on a side: lay the hits out in rows of 1024.
        m = int(hit.sum())
        rows = -(-m // 1024)
        map_x = np.zeros(rows * 1024, np.float32)
        map_y = np.zeros(rows * 1024, np.float32)
        map_x[:m] = s[hit] * (tw - 1)
        map_y[:m] = r[hit] * (th - 1)
        sampled = cv2.remap(
            q.texture, map_x.reshape(rows, 1024), map_y.reshape(rows, 1024), cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT,
        )  # fmt: skip
        out[hit] = sampled.reshape(-1, 3)[:m]
        best[hit] = t[hit]
    img = out.reshape(sh, sw, 3)
    return np.asarray(cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA), np.uint8)


def write_video(
    path: Path,
    *,
    frames: int = 48,
    width: int = 320,
    height: int = 240,
    fps: int = 12,
    blur_frames: tuple[int, ...] = (),
    seed: int = 3,
) -> list[Pose]:
    """Film the scene along `orbit` into an H.264 MP4; return the true pose of every frame.

    Frames listed in `blur_frames` get a heavy blur, standing in for motion blur.
    """
    import av

    quads = make_scene(seed)
    poses = orbit(frames)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "16"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i, pose in enumerate(poses):
            img = render(quads, pose, width, height)
            if i in blur_frames:
                img = np.asarray(cv2.GaussianBlur(img, (0, 0), 3.0), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return poses
