"""A synthetic walk-through stand-in: shapes on known paths over a textured background.

Shared by the perception tests and bench/bench_perception.py. The background is fine, strong
texture (like carpet or gravel), which a segmenter must not report as objects; on it sit one
static box (a cabinet), three coloured shapes moving along straight lines, and a blip that is
visible for a single sampled frame and must not become a track.

The CPU segmenter reports what moves (docs/perception.md): under this fixed camera the
static cabinet is background like the carpet, so `EXPECTED`, what it must find, is the three
moving shapes, and `STATIC` is what it must not report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Shape:
    """One object in the scene: where its centre is at time t, and how it is drawn."""

    name: str
    colour: tuple[int, int, int]  # BGR
    start: tuple[float, float]
    velocity: tuple[float, float]  # px per second
    kind: str  # circle | square | ellipse | box
    size: int
    visible: tuple[float, float] = (0.0, 1e9)

    def centre(self, t: float) -> tuple[float, float]:
        """The shape's centre at `t` seconds, in 640x360 pixels."""
        return (self.start[0] + self.velocity[0] * t, self.start[1] + self.velocity[1] * t)

    def is_visible(self, t: float) -> bool:
        """Whether the shape is drawn at `t`."""
        return self.visible[0] <= t < self.visible[1]


WIDTH, HEIGHT = 640, 360

SHAPES: tuple[Shape, ...] = (
    Shape("cabinet", (150, 120, 90), (560.0, 75.0), (0.0, 0.0), "box", 50),
    Shape("red_circle", (40, 40, 220), (70.0, 80.0), (120.0, 0.0), "circle", 30),
    Shape("green_square", (60, 200, 60), (580.0, 270.0), (-110.0, 0.0), "square", 56),
    Shape("blue_ellipse", (220, 90, 30), (150.0, 300.0), (60.0, -45.0), "ellipse", 34),
    # Visible for 0.15 s: at most one frame when sampled at 5 fps, so never a real track.
    Shape("blip", (200, 40, 200), (330.0, 170.0), (0.0, 0.0), "square", 40, (0.98, 1.13)),
)

MOVING = tuple(s for s in SHAPES if s.name in ("red_circle", "green_square", "blue_ellipse"))
STATIC = tuple(s for s in SHAPES if s.name == "cabinet")
EXPECTED = MOVING


def background(width: int = WIDTH, height: int = HEIGHT, seed: int = 7) -> Image:
    """Strong fine-grained texture with a slow brightness gradient, like a lit carpet."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 38.0, (height, width, 3)).astype(np.float32)
    speckle = cv2.GaussianBlur(noise, (0, 0), 0.7) * 1.6
    ramp = np.linspace(95.0, 140.0, width, dtype=np.float32)[None, :, None]
    tint = np.array([1.0, 0.95, 0.9], dtype=np.float32)[None, None, :]
    return np.clip(ramp * tint + speckle, 0, 255).astype(np.uint8)


def draw(t: float, base: Image, shapes: tuple[Shape, ...] = SHAPES) -> Image:
    """The frame at time `t`."""
    img = base.copy()
    for s in shapes:
        if not s.is_visible(t):
            continue
        cx, cy = s.centre(t)
        c = (round(cx), round(cy))
        if s.kind == "circle":
            cv2.circle(img, c, s.size, s.colour, -1, cv2.LINE_AA)
        elif s.kind == "ellipse":
            cv2.ellipse(img, c, (s.size + 12, s.size - 8), 0, 0, 360, s.colour, -1, cv2.LINE_AA)
        else:
            half = s.size // 2 if s.kind == "square" else s.size
            cv2.rectangle(img, (c[0] - half, c[1] - half), (c[0] + half, c[1] + half), s.colour, -1)
    return img


def write_video(
    path: Path,
    *,
    seconds: float = 3.0,
    fps: int = 20,
    scale: float = 1.0,
    rotate: int = 0,
    frame_fn: Callable[[float, Image], Image] = draw,
) -> Path:
    """Write the scene as H.264 mp4 (optionally scaled, optionally tagged as rotated)."""
    base = background()
    width, height = round(WIDTH * scale) // 2 * 2, round(HEIGHT * scale) // 2 * 2
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        # crf 18 keeps the background texture, as a phone's high bitrate would.
        stream.options = {"crf": "18", "preset": "veryfast"}
        if rotate:
            stream.set_display_rotation(rotate)
        for i in range(round(seconds * fps)):
            img = frame_fn(i / fps, base)
            if scale != 1.0:
                img = np.asarray(
                    cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA), dtype=np.uint8
                )
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def orbit_frame(t: float, shake: npt.NDArray[np.float64], with_object: bool = True) -> Image:
    """A hand-held orbit round one object on a table, at `t` seconds: the camera circles
    the object and keeps it in the middle of the view (shaking by `shake[k]` px at 20 fps),
    so on screen the wall behind sweeps past fast, the table top slower, the object not."""
    k = min(len(shake) - 1, round(t * 20))
    sx, sy = (round(v) for v in shake[k])
    wall = _orbit_layer("wall")
    table = _orbit_layer("table")
    ox_wall, ox_table = round(40 + 150 * t) + sx, round(40 + 50 * t) + sx
    img = np.ascontiguousarray(wall[20 + sy : 20 + sy + HEIGHT, ox_wall : ox_wall + WIDTH])
    # The table's edge stays at one height: the camera circles at one height above it.
    img[ORBIT_TABLE_Y:] = table[: HEIGHT - ORBIT_TABLE_Y, ox_table : ox_table + WIDTH]
    if with_object:
        obj, inside = _orbit_layer("object"), _orbit_layer("object_mask") > 0
        h, w = inside.shape
        x0, y0 = ORBIT_OBJECT[0] - w // 2 + sx // 2, ORBIT_OBJECT[1] - h // 2 + sy // 2
        view = img[y0 : y0 + h, x0 : x0 + w]
        view[inside] = obj[inside]
    return img


ORBIT_TABLE_Y = 240  # where the table top starts on screen
ORBIT_OBJECT = (320, 200)  # the object's centre on screen (a vase standing on the table)
ORBIT_SIZE = (90, 150)  # its width and height
_LAYERS: dict[str, Image] = {}


def _orbit_layer(name: str) -> Image:
    """The orbit scene's layers, made once: a textured wall, a wooden table top wider than
    the view, and a textured vase (a real object has texture, not one flat colour)."""
    if name not in _LAYERS:
        wall = background(3000, 420, seed=21)
        table = background(1400, HEIGHT, seed=22).astype(np.float32)
        table *= np.array([0.55, 0.8, 1.1], dtype=np.float32)  # brown wood
        w, h = ORBIT_SIZE
        vase = background(w, h, seed=23).astype(np.float32)
        vase = vase * np.array([0.5, 0.6, 1.4], dtype=np.float32) + 20.0  # glazed red
        # A painted pattern: corners and blobs a feature detector can hold on to.
        rng = np.random.default_rng(24)
        for _ in range(60):
            x, y = (int(v) for v in rng.integers(0, (w, h)))
            colour = tuple(float(c) for c in rng.integers(0, 256, 3))
            if rng.random() < 0.5:
                cv2.circle(vase, (x, y), int(rng.integers(3, 8)), colour, -1)
            else:
                cv2.rectangle(vase, (x, y), (x + 8, y + 5), colour, -1)
        mask = np.zeros((h, w), dtype=np.uint8)
        cv2.ellipse(mask, (w // 2, h // 2), (w // 2 - 2, h // 2 - 2), 0, 0, 360, 255, -1)
        _LAYERS.update(
            wall=wall,
            table=np.clip(table, 0, 255).astype(np.uint8),
            object=np.clip(vase, 0, 255).astype(np.uint8),
            object_mask=mask,
        )
    return _LAYERS[name]
