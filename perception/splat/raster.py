"""A differentiable EWA Gaussian splatting rasterizer in plain PyTorch (the CPU path).

It follows the 3DGS renderer: project every Gaussian through a pinhole camera, build its
2D covariance from the Jacobian of the projection (EWA), bin it into the screen tiles its
3-sigma footprint touches, sort each tile's Gaussians front to back, and alpha-composite.
Instead of a per-pixel loop it works on a packed list of (tile, Gaussian) pairs, each
evaluated on all pixels of its tile at once: a tile's transmittance is a segmented
exclusive cumulative sum of log(1 - alpha) over that list. Every step is an ordinary
tensor op, so autograd gives the gradients and the same code runs on CUDA without gsplat.

torch is imported by the caller's module only: importing this file needs torch installed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (
    1.0925484305920792,
    -1.0925484305920792,
    0.31539156525252005,
    -1.0925484305920792,
    0.5462742152960396,
)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)
# 3DGS clamps alpha below 1 so transmittance never reaches exactly zero (log stays finite),
# and skips contributions under 1/255 that could not change an 8-bit pixel.
ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
# Low-pass filter added to every 2D covariance (pixels^2): a Gaussian never gets thinner
# than about one pixel, which keeps tiny splats from aliasing.
COV2D_BLUR = 0.3
NEAR = 0.01
# Pairs per compositing chunk: [chunk, 16*16] float32 tensors of about 4 MB.
TILE = 16
CHUNK_PAIRS = 4096
# ... and at most this many tiles (the per-tile sums are dense [pairs, tiles] matmuls).
CHUNK_TILES = 16


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: world-to-camera `rotation` (3x3), `translation` (3), intrinsics."""

    rotation: Tensor
    translation: Tensor
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int


@dataclass
class Projected:
    """Gaussians as seen by one camera (only those in front of it and near the image)."""

    ids: Tensor  # index into the full set
    means2d: Tensor  # [n, 2] pixels
    conics: Tensor  # [n, 3] inverse 2D covariance (a, b, c)
    depths: Tensor  # [n]
    radii: Tensor  # [n, 2] half-extents (x, y) of the footprint's bounding box, pixels, no gradient


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices [N, 3, 3] from quaternions [N, 4] (w, x, y, z), normalised here."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        -1,
    ).reshape(-1, 3, 3)  # fmt: skip


def eval_sh(degree: int, sh: Tensor, dirs: Tensor) -> Tensor:
    """RGB from SH coefficients [N, K, 3] along unit view directions [N, 3] (3DGS convention)."""
    out = SH_C0 * sh[:, 0]
    if degree < 1:
        return out + 0.5
    x, y, z = (d[:, None] for d in dirs.unbind(-1))
    out = out - SH_C1 * y * sh[:, 1] + SH_C1 * z * sh[:, 2] - SH_C1 * x * sh[:, 3]
    if degree < 2:
        return out + 0.5
    xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
    c2 = SH_C2
    out = (
        out
        + c2[0] * xy * sh[:, 4]
        + c2[1] * yz * sh[:, 5]
        + c2[2] * (2 * zz - xx - yy) * sh[:, 6]
        + c2[3] * xz * sh[:, 7]
        + c2[4] * (xx - yy) * sh[:, 8]
    )
    if degree < 3:
        return out + 0.5
    c3 = SH_C3
    out = (
        out
        + c3[0] * y * (3 * xx - yy) * sh[:, 9]
        + c3[1] * xy * z * sh[:, 10]
        + c3[2] * y * (4 * zz - xx - yy) * sh[:, 11]
        + c3[3] * z * (2 * zz - 3 * xx - 3 * yy) * sh[:, 12]
        + c3[4] * x * (4 * zz - xx - yy) * sh[:, 13]
        + c3[5] * z * (xx - yy) * sh[:, 14]
        + c3[6] * x * (xx - 3 * yy) * sh[:, 15]
    )
    return out + 0.5


def project(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, cam: Camera
) -> Projected:
    """EWA projection: 2D means, conics, depths and footprint radii of the visible Gaussians."""
    with torch.no_grad():
        p = means @ cam.rotation.T + cam.translation
        z = p[:, 2]
        u = cam.fx * p[:, 0] / z.clamp_min(NEAR) + cam.cx
        v = cam.fy * p[:, 1] / z.clamp_min(NEAR) + cam.cy
        # Cheap pre-cull on the centre (with a generous margin for the footprint), so the
        # expensive part below only runs on Gaussians that can touch the image.
        margin = 0.5 * max(cam.width, cam.height)
        keep = (z > NEAR) & (u > -margin) & (u < cam.width + margin)
        keep &= (v > -margin) & (v < cam.height + margin)
        ids = keep.nonzero().squeeze(1)
    p = means[ids] @ cam.rotation.T + cam.translation
    x, y, z = p.unbind(-1)
    # Clamp the ray direction used in the Jacobian to a bit outside the frustum, as 3DGS
    # does: far off-screen Gaussians otherwise get huge, unstable 2D covariances.
    lim_x = 1.3 * (0.5 * cam.width / cam.fx)
    lim_y = 1.3 * (0.5 * cam.height / cam.fy)
    tx = (x / z).clamp(-lim_x, lim_x) * z
    ty = (y / z).clamp(-lim_y, lim_y) * z
    zero = torch.zeros_like(z)
    jac = torch.stack(
        [cam.fx / z, zero, -cam.fx * tx / (z * z), zero, cam.fy / z, -cam.fy * ty / (z * z)], -1
    ).reshape(-1, 2, 3)
    # cov2d = J W R S S^T R^T W^T J^T = (J W R S)(J W R S)^T
    m = quat_to_rotmat(quats[ids]) * scales[ids][:, None, :]
    tm = jac @ cam.rotation @ m
    cov = tm @ tm.transpose(1, 2)
    a = cov[:, 0, 0] + COV2D_BLUR
    b = cov[:, 0, 1]
    c = cov[:, 1, 1] + COV2D_BLUR
    det = (a * c - b * b).clamp_min(1e-12)
    conics = torch.stack([c / det, -b / det, a / det], -1)
    means2d = torch.stack([cam.fx * x / z + cam.cx, cam.fy * y / z + cam.cy], -1)
    with torch.no_grad():
        # The footprint reaches out to where alpha drops below ALPHA_MIN (at most 3 sigma):
        # the ellipse {d : d^T cov^-1 d <= reach}, whose bounding box has half-extents
        # sqrt(reach * var_x), sqrt(reach * var_y). Tight boxes are what keep rasterizing
        # cheap: cost grows with the tiles they touch.
        reach = (2.0 * torch.log(opacities[ids] / ALPHA_MIN).clamp_min(0.0)).clamp_max(9.0)
        radii = torch.stack([(reach * a).sqrt().ceil(), (reach * c).sqrt().ceil()], -1)
        u, v = means2d.unbind(-1)
        rx, ry = radii.unbind(-1)
        on = (u + rx > 0) & (u - rx < cam.width) & (v + ry > 0) & (v - ry < cam.height)
        on &= (rx > 0) & (ry > 0)
    idx = on.nonzero().squeeze(1)
    return Projected(ids[idx], means2d[idx], conics[idx], z[idx], radii[idx])


def rasterize(
    proj: Projected,
    colors: Tensor,
    opacities: Tensor,
    cam: Camera,
    background: Tensor,
    tile: int = TILE,
) -> Tensor:
    """Alpha-composite projected Gaussians front to back into an image [H, W, 3].

    `colors` [n, 3] and `opacities` [n] are per projected Gaussian (already activated).
    """
    dev = proj.means2d.device
    tiles_x = (cam.width + tile - 1) // tile
    tiles_y = (cam.height + tile - 1) // tile
    n_tiles = tiles_x * tiles_y
    n = proj.means2d.shape[0]
    with torch.no_grad():
        u, v = proj.means2d.unbind(-1)
        rx, ry = proj.radii.unbind(-1)
        x0 = ((u - rx) / tile).floor().clamp(0, tiles_x - 1).long()
        x1 = ((u + rx) / tile).floor().clamp(0, tiles_x - 1).long()
        y0 = ((v - ry) / tile).floor().clamp(0, tiles_y - 1).long()
        y1 = ((v + ry) / tile).floor().clamp(0, tiles_y - 1).long()
        span_x = x1 - x0 + 1
        counts = span_x * (y1 - y0 + 1)
        gid = torch.repeat_interleave(torch.arange(n, device=dev), counts)
        first = torch.cumsum(counts, 0) - counts
        local = torch.arange(gid.shape[0], device=dev) - first[gid]
        tile_id = (y0[gid] + local // span_x[gid]) * tiles_x + x0[gid] + local % span_x[gid]
        rank = torch.empty(n, dtype=torch.long, device=dev)
        rank[torch.argsort(proj.depths)] = torch.arange(n, device=dev)
        order = torch.argsort(tile_id * max(n, 1) + rank[gid])
        gid, tile_id = gid[order], tile_id[order]
        ends = torch.cumsum(torch.bincount(tile_id, minlength=n_tiles), 0).tolist()
    # Composite in chunks of whole tiles of about CHUNK_PAIRS pairs each: tensors of a few MB
    # stay in cache and in malloc's heap, where one [P, T*T] pass over everything would be
    # mmapped fresh (and page-faulted) by every op, several times slower on CPU.
    pieces = []
    t0 = p0 = 0
    while t0 < n_tiles:
        t1 = t0 + 1
        while t1 < n_tiles and ends[t1] - p0 <= CHUNK_PAIRS and t1 - t0 < CHUNK_TILES:
            t1 += 1
        p1 = ends[t1 - 1]
        pieces.append(
            _composite(
                proj,
                colors,
                opacities,
                background,
                gid[p0:p1],
                tile_id[p0:p1] - t0,
                t0,
                t1 - t0,
                tiles_x,
                tile,
            )
        )
        t0, p0 = t1, p1
    img = torch.cat(pieces).reshape(tiles_y, tiles_x, tile, tile, 3).permute(0, 2, 1, 3, 4)
    return img.reshape(tiles_y * tile, tiles_x * tile, 3)[: cam.height, : cam.width]


def _composite(
    proj: Projected,
    colors: Tensor,
    opacities: Tensor,
    background: Tensor,
    gid: Tensor,
    tile_id: Tensor,
    first_tile: int,
    n_tiles: int,
    tiles_x: int,
    tile: int,
) -> Tensor:
    """Composite the pairs of tiles [first_tile, first_tile + n_tiles): [n_tiles, T*T, 3]."""
    dev = proj.means2d.device
    pix = tile * tile
    with torch.no_grad():
        off = torch.arange(tile, device=dev, dtype=proj.means2d.dtype) + 0.5
        absolute = tile_id + first_tile
        origin_x = ((absolute % tiles_x) * tile).to(off.dtype)
        origin_y = ((absolute // tiles_x) * tile).to(off.dtype)
    # The Gaussian's exponent over a tile's T x T pixels, separably: with dx = x - u and
    # dy = y - v, -0.5 (a dx^2 + c dy^2) - b dx dy = gx[x] + gy[y] + (-b dy) (x) dx, i.e. two
    # [P, T] vectors and one batched outer product, instead of a dozen [P, T*T] passes.
    # log(opacity) rides along in gy so alpha = exp(power) directly.
    con = proj.conics[gid]
    dx = origin_x[:, None] + off[None, :] - proj.means2d[gid, 0:1]  # [P, T]
    dy = origin_y[:, None] + off[None, :] - proj.means2d[gid, 1:2]  # [P, T]
    gx = -0.5 * con[:, 0:1] * dx * dx
    gy = -0.5 * con[:, 2:3] * dy * dy + torch.log(opacities[gid].clamp_min(1e-8))[:, None]
    power = torch.baddbmm(
        gy[:, :, None] + gx[:, None, :], (-con[:, 1:2] * dy)[:, :, None], dx[:, None, :]
    )
    # No 1/255 cut-off inside the footprint (3DGS skips those): it would cost two more
    # full passes forward and back for contributions that cannot change an 8-bit pixel.
    alpha = torch.exp(power).reshape(-1, pix).clamp_max(ALPHA_MAX)
    log_t = torch.log1p(-alpha)
    # Sums over a tile's pairs as dense matmuls with the pair -> tile one-hot matrix: BLAS
    # on [P, tiles] is several times faster on CPU, forward and backward, than index_add
    # over [P, T*T, 3] (a chunk holds few tiles, so the zeros cost little).
    onehot = (tile_id[:, None] == torch.arange(n_tiles, device=dev)[None, :]).to(alpha.dtype)
    seg_sum = onehot.T @ log_t  # [tiles, T*T]: log of each tile's final transmittance
    # Transmittance before a pair = exp(sum of log(1 - alpha) over the pairs in front of it
    # in its tile) = the chunk-wide exclusive cumsum minus the totals of the earlier tiles.
    before = torch.cumsum(seg_sum, 0) - seg_sum
    trans = torch.exp(torch.cumsum(log_t, 0) - log_t - onehot @ before)
    weight = alpha * trans
    rgb = (onehot[:, :, None] * colors[gid][:, None, :]).reshape(-1, n_tiles * 3)
    out = (weight.T @ rgb).reshape(pix, n_tiles, 3).transpose(0, 1)
    if bool(background.any()):
        out = out + torch.exp(seg_sum)[:, :, None] * background
    return out


def render(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    sh: Tensor,
    sh_degree: int,
    cam: Camera,
    background: Tensor,
) -> tuple[Tensor, Projected]:
    """Render activated Gaussians (scales > 0, opacities in (0, 1), SH [N, K, 3]) from `cam`."""
    proj = project(means, quats, scales, opacities, cam)
    sh_vis = sh[proj.ids]
    if sh_degree > 0:
        center = -cam.rotation.T @ cam.translation
        dirs = means[proj.ids] - center
        dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        rgb = eval_sh(sh_degree, sh_vis, dirs)
    else:
        rgb = SH_C0 * sh_vis[:, 0] + 0.5
    return rasterize(proj, rgb.clamp_min(0.0), opacities[proj.ids], cam, background), proj
