"""The splat pipeline end to end on CPU: synthetic video in, a valid 3DGS .ply out, resumable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from perception.progress import Cancelled, InvalidInput
from perception.splat import run_splat
from perception.splat.ply import property_names, read_ply
from tests.perception.splat.conftest import BLURRED, FRAMES, Events, SplatRun, splat_config


def _align(src: NDArray[np.float64], dst: NDArray[np.float64]) -> NDArray[np.float64]:
    """`src` moved onto `dst` by the best similarity transform (Umeyama)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.eye(3)
    d[2, 2] = np.sign(np.linalg.det(u @ vt))
    rot = u @ d @ vt
    scale = np.trace(np.diag(sig) @ d) / a.var(0).sum()
    return np.asarray(scale * a @ rot.T + mu_d, np.float64)


def test_frames_stage_drops_the_blurred_frame(splat_run: SplatRun) -> None:
    manifest = json.loads((splat_run.work_dir / "frames" / "frames.json").read_text())
    assert manifest["decoded"] == FRAMES
    assert manifest["dropped_blurry"] == [20]
    assert [f["file"] for f in manifest["frames"]] == [f"{i:06d}.jpg" for i in range(FRAMES - 1)]
    assert (manifest["width"], manifest["height"]) == (320, 240)


def test_sfm_registers_most_frames_at_the_true_poses(splat_run: SplatRun) -> None:
    sfm = splat_run.summary("sfm")
    assert sfm["registered"] >= 0.8 * sfm["frames"]
    assert sfm["points"] > 500
    pycolmap = pytest.importorskip("pycolmap")
    rec = pycolmap.Reconstruction(splat_run.work_dir / "sfm" / "sparse")
    manifest = json.loads((splat_run.work_dir / "frames" / "frames.json").read_text())
    source = {f["file"]: f["index"] for f in manifest["frames"]}
    est, true = [], []
    for image in rec.images.values():
        if image.has_pose:
            est.append(image.projection_center())
            true.append(splat_run.poses[source[image.name]].center)
    aligned = _align(np.array(est), np.array(true))
    err = np.linalg.norm(aligned - np.array(true), axis=1)
    path_length = np.linalg.norm(np.diff(np.array(true), axis=0), axis=1).sum()
    # Up to a similarity, SfM found the path the camera really took.
    assert err.max() < 0.02 * path_length, (err.max(), path_length)


def test_training_lowered_the_loss(splat_run: SplatRun) -> None:
    train = splat_run.summary("train")
    assert train["backend"] == "torch-cpu"
    assert train["loss_end"] < 0.6 * train["loss_start"], train
    assert train["resumed_at"] == 0
    assert not (splat_run.work_dir / "train.ckpt").exists()


def test_ply_has_the_3dgs_layout(splat_run: SplatRun) -> None:
    splat, names = read_ply(splat_run.ply)
    assert names == property_names(3)
    assert len(names) == 6 + 3 + 45 + 1 + 3 + 4
    header = splat_run.ply.read_bytes()[:4000].split(b"end_header\n")[0].decode()
    assert "format binary_little_endian 1.0" in header
    assert all(
        line.startswith("property float ") for line in header.splitlines() if "property" in line
    )
    train = splat_run.summary("train")
    assert len(splat) == train["gaussians"] == splat_run.summary("export")["gaussians"]
    assert 500 <= len(splat) <= splat_config().max_gaussians
    for arr in (splat.means, splat.sh_dc, splat.opacity_logits, splat.log_scales, splat.quats):
        assert np.isfinite(arr).all()
    np.testing.assert_allclose(np.linalg.norm(splat.quats, axis=1), 1.0, atol=1e-5)
    assert not splat.sh_rest.any()  # trained at degree 0: the degree-3 fields are zero
    # Opacities as logits and scales as logs: both spread over negative and positive values
    # in a trained splat would not be the case for raw probabilities / lengths.
    assert (splat.log_scales < 0).mean() > 0.5


def test_export_summary_points_at_the_files(splat_run: SplatRun) -> None:
    export = splat_run.summary("export")
    assert Path(export["ply"]) == splat_run.ply
    assert export["bytes"] == splat_run.ply.stat().st_size
    thumb = cv2.imread(export["thumbnail"])
    assert thumb is not None and max(thumb.shape[:2]) <= 256
    assert thumb.std() > 10  # a rendered picture, not a blank


def test_progress_is_reported_per_stage(splat_run: SplatRun) -> None:
    events = splat_run.events
    assert events.started() == ["frames", "sfm", "train", "export"]
    for stage in ("frames", "sfm", "train", "export"):
        fractions = [f for s, f in events.progress if s == stage]
        assert fractions and fractions[-1] == 1.0
        assert all(0.0 <= f <= 1.0 for f in fractions)


def test_quality_is_scored_on_views_held_out_of_training(splat_run: SplatRun) -> None:
    """Every 8th registered view is held out; its PSNR/SSIM beat a flat image of its mean
    colour, and cameras.json marks exactly those views and matches the SfM poses."""
    import pycolmap

    from perception.splat.quality import psnr, ssim

    quality = splat_run.summary("export")["quality"]
    cameras = json.loads(Path(splat_run.summary("export")["cameras"]).read_text())
    rec = pycolmap.Reconstruction(splat_run.work_dir / "sfm" / "sparse")
    names = sorted(rec.image(i).name for i in rec.reg_image_ids())
    assert [f["name"] for f in cameras["frames"]] == names
    held = [f["name"] for f in cameras["frames"] if f["held_out"]]
    assert held == names[::8] and quality["held_out"] and quality["eval_views"] == len(held)
    assert quality["registered"] == len(names) and quality["frames"] == FRAMES - len(BLURRED)
    by_name = {rec.image(i).name: rec.image(i) for i in rec.reg_image_ids()}
    for f in cameras["frames"]:
        pose = by_name[f["name"]].cam_from_world().matrix()
        assert np.allclose(np.array(f["R"]), pose[:, :3], atol=1e-6)
        assert np.allclose(np.array(f["t"]), pose[:, 3], atol=1e-6)
    flat = []
    for name in held:
        read = cv2.imread(str(splat_run.work_dir / "frames" / name))
        assert read is not None
        frame = read[:, :, ::-1] / 255.0
        target = torch.tensor(frame.copy(), dtype=torch.float32)
        grey = target.mean((0, 1), keepdim=True).expand_as(target)
        flat.append((psnr(grey, target), ssim(grey, target)))
    assert quality["psnr"] > max(p for p, _ in flat) + 3.0
    assert quality["ssim"] > max(q for _, q in flat) + 0.1


def test_rerun_after_export_lost_redoes_only_export(splat_run: SplatRun) -> None:
    before = read_ply(splat_run.ply)[0]
    (splat_run.work_dir / "export.done").unlink()
    events = Events()
    ply = run_splat(splat_run.video, splat_run.work_dir, splat_config(), events.reporter())
    assert events.started() == ["export"]
    after = read_ply(ply)[0]
    np.testing.assert_array_equal(before.means, after.means)


def test_training_resumes_from_its_checkpoint(splat_run: SplatRun, tmp_path: Path) -> None:
    # A job that already has frames and SfM, then dies halfway through training.
    for stage in ("frames", "sfm"):
        shutil.copytree(splat_run.work_dir / stage, tmp_path / stage)
        shutil.copy(splat_run.work_dir / f"{stage}.done", tmp_path / f"{stage}.done")
    cfg = splat_config(iterations=60, checkpoint_every=20)

    def stop(stage: str, fraction: float) -> None:
        if stage == "train" and fraction > 0.6:
            raise Cancelled("lease lost")

    events = Events()
    reporter = events.reporter()
    reporter.on_progress = stop
    with pytest.raises(Cancelled):
        run_splat(splat_run.video, tmp_path, cfg, reporter)
    assert (tmp_path / "train.ckpt").exists() and not (tmp_path / "train.done").exists()
    events = Events()
    run_splat(splat_run.video, tmp_path, cfg, events.reporter())
    assert events.started() == ["train", "export"]
    train = json.loads((tmp_path / "train.done").read_text())
    assert train["resumed_at"] == 40
    assert not (tmp_path / "train.ckpt").exists()


def test_cancel_during_mapping_stops_sfm(splat_run: SplatRun, tmp_path: Path) -> None:
    shutil.copytree(splat_run.work_dir / "frames", tmp_path / "frames")
    shutil.copy(splat_run.work_dir / "frames.done", tmp_path / "frames.done")
    seen: list[float] = []

    def stop(stage: str, fraction: float) -> None:
        seen.append(fraction)
        if stage == "sfm" and fraction > 0.7:  # past extraction and matching: in the mapper
            raise Cancelled("job cancelled")

    events = Events()
    reporter = events.reporter()
    reporter.on_progress = stop
    with pytest.raises(Cancelled):
        run_splat(splat_run.video, tmp_path, splat_config(), reporter)
    assert not (tmp_path / "sfm.done").exists()
    assert max(seen) < 0.8


def test_unreadable_video_is_invalid_input(tmp_path: Path) -> None:
    bogus = tmp_path / "clip.mp4"
    bogus.write_text("not a video")
    with pytest.raises(InvalidInput, match="not a readable video"):
        run_splat(bogus, tmp_path / "job", splat_config(), Events().reporter())
    with pytest.raises(InvalidInput, match="no such file"):
        run_splat(tmp_path / "missing.mp4", tmp_path / "job2", splat_config(), Events().reporter())


def test_video_without_a_scene_fails_sfm_clearly(tmp_path: Path) -> None:
    # Independent noise every frame: plenty of SIFT features, no consistent geometry.
    import av

    rng = np.random.default_rng(1)
    path = tmp_path / "noise.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10, options={"crf": "16"})
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for _ in range(16):
            noise = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
            img = np.asarray(cv2.GaussianBlur(noise, (0, 0), 1.5), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(InvalidInput, match="structure from motion placed only"):
        run_splat(path, tmp_path / "job", splat_config(blur_ratio=0.0), Events().reporter())
    assert (tmp_path / "job" / "frames.done").exists()
    assert not (tmp_path / "job" / "sfm.done").exists()
