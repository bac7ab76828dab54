"""The splat pipeline's parts: .ply format, rasterizer, frame sampling, config, densification."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import numpy as np
import pytest

from perception.progress import InvalidInput
from perception.splat import SplatConfig
from perception.splat.frames import blurry, extract_frames
from perception.splat.ply import Splat, property_names, read_header, read_ply, write_ply
from perception.splat.synthetic import Pose, write_video

if TYPE_CHECKING:
    from torch import Tensor

    from perception.splat.raster import Camera

ROOT = Path(__file__).resolve().parents[3]


def _splat(n: int, degree: int, seed: int = 0) -> Splat:
    rng = np.random.default_rng(seed)
    k = (degree + 1) ** 2 - 1
    q = rng.normal(size=(n, 4)).astype(np.float32)
    return Splat(
        means=rng.normal(size=(n, 3)).astype(np.float32),
        sh_dc=rng.normal(size=(n, 3)).astype(np.float32),
        sh_rest=rng.normal(size=(n, k, 3)).astype(np.float32),
        opacity_logits=rng.normal(size=n).astype(np.float32),
        log_scales=rng.normal(size=(n, 3)).astype(np.float32),
        quats=q / np.linalg.norm(q, axis=1, keepdims=True),
    )


# --- .ply ---------------------------------------------------------------------------


def test_property_names_follow_the_reference_layout() -> None:
    names = property_names(3)
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[9:54] == [f"f_rest_{i}" for i in range(45)]
    assert names[54:] == [
        "opacity",
        "scale_0",
        "scale_1",
        "scale_2",
        "rot_0",
        "rot_1",
        "rot_2",
        "rot_3",
    ]
    assert property_names(0) == [n for n in names if not n.startswith("f_rest")]


@pytest.mark.parametrize(("trained", "layout"), [(0, 3), (1, 3), (2, 2), (0, 0)])
def test_ply_round_trip(tmp_path: Path, trained: int, layout: int) -> None:
    splat = _splat(50, trained)
    path = tmp_path / "s.ply"
    write_ply(path, splat, layout)
    back, names = read_ply(path)
    assert names == property_names(layout)
    count, _, offset = read_header(path)
    assert count == 50 and path.stat().st_size == offset + 50 * len(names) * 4
    for field in ("means", "sh_dc", "opacity_logits", "log_scales"):
        np.testing.assert_array_equal(getattr(back, field), getattr(splat, field))
    np.testing.assert_allclose(back.quats, splat.quats, atol=1e-6)  # re-normalised on write
    k = splat.sh_rest.shape[1]
    np.testing.assert_array_equal(back.sh_rest[:, :k], splat.sh_rest)
    assert not back.sh_rest[:, k:].any()  # zero-filled past the trained degree


def test_f_rest_is_channel_major(tmp_path: Path) -> None:
    splat = _splat(2, 1)
    splat.sh_rest[:] = 0
    splat.sh_rest[0, 1, 2] = 7.0  # coefficient 1 (of 3) of blue
    path = tmp_path / "s.ply"
    write_ply(path, splat, 1)
    _, names, offset = read_header(path)
    table = np.frombuffer(path.read_bytes(), "<f4", offset=offset).reshape(2, len(names))
    assert table[0, names.index("f_rest_7")] == 7.0  # blue's block starts at 2 * 3


def test_ply_writer_normalises_quaternions_and_refuses_too_high_degree(tmp_path: Path) -> None:
    splat = _splat(3, 0)
    splat.quats = splat.quats * 3.0
    write_ply(tmp_path / "a.ply", splat)
    np.testing.assert_allclose(
        np.linalg.norm(read_ply(tmp_path / "a.ply")[0].quats, axis=1), 1.0, atol=1e-6
    )
    with pytest.raises(ValueError, match="SH degree"):
        write_ply(tmp_path / "b.ply", _splat(3, 2), 1)


def test_ply_reader_rejects_other_formats(tmp_path: Path) -> None:
    ascii_ply = tmp_path / "a.ply"
    ascii_ply.write_text("ply\nformat ascii 1.0\nelement vertex 0\nend_header\n")
    with pytest.raises(ValueError, match="binary_little_endian"):
        read_ply(ascii_ply)
    points = tmp_path / "p.ply"
    points.write_bytes(
        b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\nend_header\n"
        + bytes(4)
    )
    with pytest.raises(ValueError, match="not the 3DGS layout"):
        read_ply(points)


# --- rasterizer ---------------------------------------------------------------------


def _camera(width: int = 64, height: int = 48) -> Camera:
    torch = pytest.importorskip("torch")
    from perception.splat import raster

    return raster.Camera(
        torch.eye(3), torch.zeros(3), 50.0, 50.0, width / 2, height / 2, width, height
    )


def test_single_gaussian_renders_its_analytic_footprint() -> None:
    torch = pytest.importorskip("torch")
    from perception.splat import raster

    cam = _camera()
    sigma = 0.04  # at depth 2 with f = 50: 1 pixel
    means = torch.tensor([[0.0, 0.0, 2.0]])
    off = (0.0 - 0.5) / raster.SH_C0
    sh = torch.tensor([[[(1.0 - 0.5) / raster.SH_C0, off, off]]])  # pure red
    quats, scales = torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), sigma)
    img, proj = raster.render(means, quats, scales, torch.tensor([0.8]), sh, 0, cam, torch.zeros(3))
    assert img.shape == (48, 64, 3)
    np.testing.assert_allclose(proj.means2d.numpy(), [[32.0, 24.0]])
    var = (50.0 * sigma / 2.0) ** 2 + raster.COV2D_BLUR
    for px, py in ((32, 24), (34, 24), (32, 27), (29, 21)):
        dx, dy = px + 0.5 - 32.0, py + 0.5 - 24.0
        expected = 0.8 * math.exp(-0.5 * (dx * dx + dy * dy) / var)
        assert float(img[py, px, 0]) == pytest.approx(expected, rel=1e-4, abs=1e-6)
        assert float(img[py, px, 1]) == 0.0
    assert float(img[0, 0].sum()) == 0.0  # far outside the footprint: background


def test_front_gaussian_occludes_the_back_one() -> None:
    torch = pytest.importorskip("torch")
    from perception.splat import raster

    cam = _camera()
    red, green = (1.0 - 0.5) / raster.SH_C0, (0.0 - 0.5) / raster.SH_C0
    sh = torch.tensor([[[green, red, green]], [[red, green, green]]])  # back green, front red
    img, _ = raster.render(
        torch.tensor([[0.0, 0.0, 4.0], [0.0, 0.0, 2.0]]),
        torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0]]),
        torch.full((2, 3), 0.5),
        torch.tensor([0.9, 0.6]),
        sh,
        0,
        cam,
        torch.tensor([0.0, 0.0, 1.0]),
    )
    # At the centre both are near their peaks: front alpha a1, back a2, then background.
    r, g, b = (float(x) for x in img[24, 32])
    assert r == pytest.approx(0.6, abs=0.01)
    assert g == pytest.approx(0.4 * 0.9, abs=0.01)
    assert b == pytest.approx(0.4 * 0.1, abs=0.01)


def test_gradients_match_finite_differences() -> None:
    torch = pytest.importorskip("torch")
    from perception.splat import raster

    torch.manual_seed(0)
    n = 6
    means = (
        torch.randn(n, 3, dtype=torch.float64) * 0.3
        + torch.tensor([0, 0, 3.0], dtype=torch.float64)
    ).requires_grad_()
    quats = torch.randn(n, 4, dtype=torch.float64).requires_grad_()
    log_scales = torch.full((n, 3), -1.5, dtype=torch.float64).requires_grad_()
    logits = torch.zeros(n, dtype=torch.float64).requires_grad_()
    sh = torch.randn(n, 1, 3, dtype=torch.float64).requires_grad_()
    cam = raster.Camera(
        torch.eye(3, dtype=torch.float64),
        torch.zeros(3, dtype=torch.float64),
        30.0,
        30.0,
        16.0,
        12.0,
        32,
        24,
    )
    weights = torch.rand(24, 32, 3, dtype=torch.float64)

    def loss(m: Tensor, q: Tensor, s: Tensor, o: Tensor, c: Tensor) -> Tensor:
        bg = torch.zeros(3, dtype=torch.float64)
        img, _ = raster.render(m, q, torch.exp(s), torch.sigmoid(o), c, 0, cam, bg)
        out: Tensor = (img * weights).sum()
        return out

    # Footprints are cut at a radius, so keep perturbations small (no pixel changes side).
    assert torch.autograd.gradcheck(
        loss, (means, quats, log_scales, logits, sh), eps=1e-6, atol=1e-4, rtol=1e-3
    )


# --- frames -------------------------------------------------------------------------


def test_blurry_compares_with_neighbours() -> None:
    scores = [100.0, 95, 105, 20, 98, 102, 50, 51, 49]
    # 20 is far below its neighbours; the run 50, 51, 49 is the video getting softer, kept.
    assert blurry(scores, 0.5) == [False, False, False, True, False, False, False, False, False]
    assert blurry([5.0], 0.5) == [False]


@pytest.fixture(scope="module")
def short_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Pose]]:
    """24 frames at 12 fps (2 s), 320x240, frame 5 blurred."""
    path = tmp_path_factory.mktemp("short") / "short.mp4"
    return path, write_video(path, frames=24, fps=12, blur_frames=(5,))


def test_extract_frames_samples_resizes_and_drops_blur(
    short_video: tuple[Path, list[Pose]], tmp_path: Path
) -> None:
    video, _ = short_video
    seen: list[float] = []
    summary = extract_frames(
        video, tmp_path, fps=0, max_side=160, max_frames=100, blur_ratio=0.5, progress=seen.append
    )
    assert summary["decoded"] == 24 and summary["dropped_blurry"] == 1 and summary["frames"] == 23
    assert (summary["width"], summary["height"]) == (160, 120)
    assert sorted(p.name for p in tmp_path.glob("*.jpg")) == [f"{i:06d}.jpg" for i in range(23)]
    assert seen[-1] == 1.0


def test_extract_frames_fps_and_max_frames(
    short_video: tuple[Path, list[Pose]], tmp_path: Path
) -> None:
    video, _ = short_video
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    kept = extract_frames(
        video,
        tmp_path / "a",
        fps=4,
        max_side=320,
        max_frames=100,
        blur_ratio=0,
        progress=lambda f: None,
    )
    assert kept["frames"] == 8  # 2 s at 4 fps
    capped = extract_frames(
        video,
        tmp_path / "b",
        fps=0,
        max_side=320,
        max_frames=5,
        blur_ratio=0,
        progress=lambda f: None,
    )
    assert capped["frames"] == 5


def test_extract_frames_rejects_too_little(
    short_video: tuple[Path, list[Pose]], tmp_path: Path
) -> None:
    video, _ = short_video
    with pytest.raises(InvalidInput, match="usable frame"):
        extract_frames(
            video,
            tmp_path,
            fps=0.25,
            max_side=320,
            max_frames=100,
            blur_ratio=0,
            progress=lambda f: None,
        )


# --- config, model, packaging -------------------------------------------------------


def test_config_rejects_unknown_and_out_of_range_fields() -> None:
    assert msgspec.convert({"iterations": 10, "device": "cpu"}, SplatConfig).iterations == 10
    with pytest.raises(msgspec.ValidationError, match="unknown"):
        msgspec.convert({"iteration": 10}, SplatConfig)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"device": "tpu"}, SplatConfig)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"sh_degree": 4}, SplatConfig)


def test_densify_respects_the_budget_and_keeps_adam_state() -> None:
    torch = pytest.importorskip("torch")
    from perception.splat.model import GRAD_THRESHOLD, Gaussians

    rng = np.random.default_rng(0)
    model = Gaussians.from_points(
        rng.normal(size=(200, 3)), rng.random((200, 3)), 1, 2.0, torch.device("cpu")
    )
    loss = torch.stack([p.square().sum() for p in model.params.values()]).sum()
    torch.autograd.backward(loss)
    model.opt.step()
    model.grad_accum[:150] = 10 * GRAD_THRESHOLD
    model.grad_count[:] = 1
    stats = model.densify_and_prune(300, torch.Generator().manual_seed(0))
    assert len(model) <= 300 + stats["split"]  # split replaces one with two: +1 each
    assert stats["cloned"] + stats["split"] == 100
    for group in model.opt.param_groups:
        param = group["params"][0]
        assert param is model.params[group["name"]]
        assert model.opt.state[param]["exp_avg"].shape == param.shape


def test_package_imports_without_the_splat_extra() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'pycolmap'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import perception.splat as s\n"
        "from pathlib import Path\n"
        "from perception.progress import Unavailable\n"
        "try:\n"
        "    s.run_splat(Path('x.mp4'), Path('w'), s.SplatConfig(), None)\n"
        "except Unavailable as e:\n"
        "    print(e)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True
    )
    assert "needs the `splat` extra" in out.stdout, out.stderr
    assert "install it with: pip install 'fieldbox[splat]'" in out.stdout, out.stdout


def test_a_torch_that_is_there_but_cannot_load_is_the_missing_extra(tmp_path: Path) -> None:
    """torch found but failing to load (its libraries gone): the same clear refusal, saying
    why, before any work; not an error that a retry would meet again."""
    fake = tmp_path / "site" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "raise OSError('libtorch_cpu.so: cannot open shared object file')\n"
    )
    code = (
        "from pathlib import Path\n"
        "import perception.splat as s\n"
        "from perception.progress import Unavailable\n"
        "try:\n"
        "    s.run_splat(Path('x.mp4'), Path('w'), s.SplatConfig(), None)\n"
        "except Unavailable as e:\n"
        "    print(e)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(ROOT)])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert "missing: torch (libtorch_cpu.so: cannot open shared object file)" in out.stdout
    assert "pip install 'fieldbox[splat]'" in out.stdout, out.stdout
    assert not (tmp_path / "w").exists()  # refused before a stage started
