"""The standard 3D Gaussian Splatting .ply (as written by the INRIA reference code).

Binary little-endian, one `vertex` element, all properties float32, in this order:
`x y z nx ny nz f_dc_0..2 f_rest_0..M opacity scale_0..2 rot_0..3`, where
M + 1 = 3 * ((degree + 1)^2 - 1). Stored values are pre-activation: opacity as a logit,
scales as natural logs, rotation as a unit quaternion (w, x, y, z); f_dc holds the SH DC
coefficient per channel (colour = 0.5 + C0 * f_dc); f_rest is channel-major (all of red's
higher-order coefficients, then green's, then blue's); normals are zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from perception.files import atomic_write

F32 = NDArray[np.float32]
SH_C0 = 0.28209479177387814
# Viewers built for the reference code expect degree-3 files; lower trained degrees are
# zero-padded up to it.
EXPORT_SH_DEGREE = 3


@dataclass
class Splat:
    """Gaussians in the .ply's pre-activation parameterisation (arrays of float32)."""

    means: F32  # [N, 3]
    sh_dc: F32  # [N, 3]
    sh_rest: F32  # [N, K - 1, 3], K = (degree + 1)^2; [N, 0, 3] for degree 0
    opacity_logits: F32  # [N]
    log_scales: F32  # [N, 3]
    quats: F32  # [N, 4] (w, x, y, z)

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        """The SH degree the coefficients describe."""
        return math.isqrt(int(self.sh_rest.shape[1]) + 1) - 1

    def colors(self) -> F32:
        """Base (view-independent) RGB in [0, 1]."""
        return np.asarray(np.clip(0.5 + SH_C0 * self.sh_dc, 0.0, 1.0), np.float32)


def property_names(sh_degree: int) -> list[str]:
    """The vertex properties of a 3DGS .ply of this SH degree, in file order."""
    rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return [
        *("x", "y", "z", "nx", "ny", "nz"),
        *(f"f_dc_{i}" for i in range(3)),
        *(f"f_rest_{i}" for i in range(rest)),
        "opacity",
        *(f"scale_{i}" for i in range(3)),
        *(f"rot_{i}" for i in range(4)),
    ]


def write_ply(path: Path, splat: Splat, sh_degree: int = EXPORT_SH_DEGREE) -> None:
    """Write `splat` as a 3DGS .ply with `sh_degree`'s layout (atomically: tmp + rename)."""
    n = len(splat)
    if splat.sh_degree > sh_degree:
        raise ValueError(f"splat has SH degree {splat.sh_degree}, file layout only {sh_degree}")
    k = (sh_degree + 1) ** 2 - 1
    rest = np.zeros((n, k, 3), np.float32)
    rest[:, : splat.sh_rest.shape[1]] = splat.sh_rest
    quats = splat.quats / np.maximum(np.linalg.norm(splat.quats, axis=1, keepdims=True), 1e-12)
    columns = [
        splat.means,
        np.zeros((n, 3), np.float32),
        splat.sh_dc,
        rest.transpose(0, 2, 1).reshape(n, 3 * k),  # channel-major, as the reference code
        splat.opacity_logits.reshape(n, 1),
        splat.log_scales,
        quats,
    ]
    data = np.ascontiguousarray(np.concatenate(columns, axis=1), dtype="<f4")
    names = property_names(sh_degree)
    assert data.shape[1] == len(names)
    header = "\n".join(
        ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
        + [f"property float {name}" for name in names]
        + ["end_header"]
    )
    with atomic_write(path) as fh:
        fh.write(header.encode("ascii") + b"\n")
        fh.write(data.tobytes())


def read_header(path: Path) -> tuple[int, list[str], int]:
    """Vertex count, property names and the byte offset of the data of a 3DGS .ply."""
    with open(path, "rb") as fh:
        if fh.readline().strip() != b"ply":
            raise ValueError(f"{path.name}: not a PLY file")
        count, names = -1, list[str]()
        while True:
            line = fh.readline()
            if not line:
                raise ValueError(f"{path.name}: header has no end_header")
            words = line.decode("ascii").split()
            if not words or words[0] == "comment":
                continue
            if words[0] == "end_header":
                return count, names, fh.tell()
            if words[0] == "format" and words[1] != "binary_little_endian":
                raise ValueError(f"{path.name}: format {words[1]}, expected binary_little_endian")
            if words[0] == "element":
                if words[1] != "vertex" or count >= 0:
                    raise ValueError(f"{path.name}: expected one element, vertex")
                count = int(words[2])
            if words[0] == "property":
                if words[1] not in ("float", "float32"):
                    raise ValueError(
                        f"{path.name}: property {words[-1]} is {words[1]}, expected float"
                    )
                names.append(words[2])


def read_ply(path: Path) -> tuple[Splat, list[str]]:
    """Parse a 3DGS .ply (ours or the reference code's): the splat and its property names."""
    count, names, offset = read_header(path)
    degree = round((len([n for n in names if n.startswith("f_rest_")]) // 3 + 1) ** 0.5) - 1
    if names != property_names(degree):
        raise ValueError(f"{path.name}: properties are not the 3DGS layout: {names}")
    raw = np.frombuffer(path.read_bytes(), dtype="<f4", offset=offset)
    if raw.size != count * len(names):
        raise ValueError(f"{path.name}: {raw.size} floats, expected {count} x {len(names)}")
    table = raw.reshape(count, len(names)).astype(np.float32)
    k = (degree + 1) ** 2 - 1
    col = {name: i for i, name in enumerate(names)}
    rest_at = col.get("f_rest_0", col["opacity"])
    splat = Splat(
        means=table[:, 0:3].copy(),
        sh_dc=table[:, 6:9].copy(),
        sh_rest=table[:, rest_at : rest_at + 3 * k].reshape(count, 3, k).transpose(0, 2, 1).copy(),
        opacity_logits=table[:, col["opacity"]].copy(),
        log_scales=table[:, col["scale_0"] : col["scale_0"] + 3].copy(),
        quats=table[:, col["rot_0"] : col["rot_0"] + 4].copy(),
    )
    return splat, names
