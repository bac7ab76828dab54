"""Small synthetic videos for tests that need a real, decodable file (PyAV, H.264 in MP4)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def moving_square_video(
    path: Path, *, frames: int = 30, width: int = 160, height: int = 120, fps: int = 15
) -> Path:
    """A grey noisy background with a red square crossing it left to right."""
    rng = np.random.default_rng(7)
    background = rng.integers(90, 140, size=(height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        side = height // 4
        for i in range(frames):
            img = background.copy()
            x = int((width - side) * i / max(frames - 1, 1))
            y = height // 2 - side // 2
            img[y : y + side, x : x + side] = (220, 30, 30)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
