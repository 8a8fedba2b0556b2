"""The CUDA paths: I2S decoding, the crop pipeline's inference and mixed-precision training on a GPU agree with the
CPU.  Marked ``gpu`` (outside the default run) and skipped without a CUDA device; run them with ``pytest -m gpu``.

Comparisons run in float32 with TF32 off (cuDNN convolutions use TF32 by default on Ampere and later GPUs, which
rounds inputs to 10 mantissa bits); the training tests check the engine's mixed precision (bf16, and fp16 with
its loss scaler) end to end, and that a checkpoint written on the GPU evaluates on the CPU.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available())")]

LMAX = 6


@pytest.fixture
def fp32_exact():
    """TF32 off for matrix products and convolutions while the test runs."""
    prev = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev


def _rotations(n: int, seed: int) -> torch.Tensor:
    from speedpose.geometry.rotations import random_rotation_matrices

    return torch.from_numpy(random_rotation_matrices(n, np.random.default_rng(seed))).float()


def _deg(R1: torch.Tensor, R2: torch.Tensor) -> torch.Tensor:
    from speedpose.geometry.rotations import geodesic_angle_matrix

    return torch.rad2deg(geodesic_angle_matrix(R1.double().cpu(), R2.double().cpu()))


def test_i2s_decoding_on_cuda_matches_the_cpu(fp32_exact):
    """Level-5 mode search of deltas lands on their rotations on the GPU; the coarse-to-fine descent of smooth
    distributions picks the CPU's cells; re-expressing coefficients in another frame agrees with the CPU."""
    from speedpose.geometry.wigner import delta_coeffs, n_so3_coeffs, so3_degree_slices
    from speedpose.models.i2s import SO3GridSignal, coarse_to_fine_mode, predict_mode, rotate_coeffs

    grid_cpu = SO3GridSignal(3, LMAX)
    grid_gpu = SO3GridSignal(3, LMAX).cuda()
    R = _rotations(64, 0)
    R_hat, conf = predict_mode(delta_coeffs(R, LMAX).cuda(), level=5, refine=True, grid=grid_gpu)
    assert R_hat.is_cuda and _deg(R_hat, R).max() < 0.01 and bool((conf > 0.99).all())

    g = torch.Generator().manual_seed(1)
    c = torch.randn(200, n_so3_coeffs(LMAX), generator=g)
    for l, sl in enumerate(so3_degree_slices(LMAX)):
        c[:, sl] *= 3.0 / (1 + l) / (2 * l + 1) ** 0.5
    idx_cpu, val_cpu, _ = coarse_to_fine_mode(c, grid_cpu, level=5, top_k=16)
    idx_gpu, val_gpu, _ = coarse_to_fine_mode(c.cuda(), grid_gpu, level=5, top_k=16)
    assert (idx_gpu.cpu() == idx_cpu).double().mean().item() >= 0.99  # float sums differ: a rare near-tie flips
    torch.testing.assert_close(val_gpu.cpu(), val_cpu, rtol=1e-4, atol=1e-4)

    Q = _rotations(200, 2)
    torch.testing.assert_close(rotate_coeffs(c.cuda(), Q.cuda()).cpu(), rotate_coeffs(c, Q), rtol=1e-4, atol=1e-4)


def _smoke_cfg(root, prep, *overrides: str):
    from speedpose.config import load_config

    return load_config("configs/smoke.yaml", [f"data.root={root}", f"data.prep_dir={prep}", *overrides])


def test_crop_pipeline_inference_on_cuda_matches_the_cpu(tiny_prepared, fp32_exact):
    """One model (keypoint head, four in-plane views) predicts the same on the GPU as on the CPU: boxes, I2S
    coefficients, rotations, translations and keypoints.  The I2S solver, so that every output is a continuous
    function of the network's (the keypoint solvers' inlier gate, numpy on the CPU either way, would turn a
    rounding difference at its threshold into a different pose)."""
    from speedpose.data.loader import open_split
    from speedpose.pose.inference import predict_split
    from speedpose.pose.kinds import model_kind
    from speedpose.pose.task import SpeedplusTask

    root, prep = tiny_prepared
    cfg = _smoke_cfg(root, prep, "model.keypoints.enabled=true", "model.in_plane_views=4")
    torch.manual_seed(0)
    model = SpeedplusTask(cfg).build_model()
    kind = model_kind(cfg)
    split = open_split(prep, "synthetic", "validation", root=root)
    idx = np.arange(len(split))
    cpu = predict_split(model, split, idx, kind, device="cpu", keep_coeffs=True)
    gpu = predict_split(model.cuda(), split, idx, kind, device="cuda", keep_coeffs=True)

    np.testing.assert_allclose(gpu.box_xyxy, cpu.box_xyxy, atol=0.5)  # full-resolution px
    scale = np.abs(cpu.coeffs).max()
    np.testing.assert_allclose(gpu.coeffs, cpu.coeffs, atol=1e-4 * scale, rtol=0)
    np.testing.assert_allclose(gpu.r_cam_m, cpu.r_cam_m, atol=1e-3 * np.linalg.norm(cpu.r_cam_m, axis=1).max())
    cos = np.abs((gpu.q_wxyz * cpu.q_wxyz).sum(axis=1)).clip(max=1.0)
    assert np.degrees(2 * np.arccos(cos)).max() < 0.1
    np.testing.assert_allclose(gpu.kp_uv, cpu.kp_uv, atol=0.05)  # full-resolution px


@pytest.mark.filterwarnings("error:Detected call of")  # the schedule advancing on steps fp16 skips is meant
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_training_on_cuda(amp, tiny_prepared, tmp_path):
    """The crop pipeline (keypoint heads on) trains on the GPU under bf16 and under fp16 with its loss scaler:
    finite losses, the precision recorded, the scaler's state checkpointed for fp16 only; the GPU checkpoint
    evaluates on the CPU."""
    from pipelines import evaluate as evaluate_stage
    from pipelines import train as train_stage
    from speedpose.training import load_checkpoint, read_metrics

    root, prep = tiny_prepared
    summary = train_stage.run(root, "smoke", ["data.val_limit=2", "train.batch_size=4", "train.workers=0",
                                              "train.device=cuda", f"train.amp={amp}", "train.epochs=3",
                                              "train.max_steps=4", "model.keypoints.enabled=true",
                                              "model.pose_solver=fused", f"data.prep_dir={prep}"],
                              out=tmp_path, name="run", progress=False)
    assert summary.precision == amp and summary.global_step == 4 and summary.stopped == "max_steps"
    losses = [float(r["value"]) for r in read_metrics(tmp_path / "run" / "metrics.csv")
              if r.get("split") == "train" and r.get("name") == "loss"]
    assert losses and all(math.isfinite(v) for v in losses)
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (ckpt["scaler"] is not None) == (amp == "fp16")
    rep = evaluate_stage.run(tmp_path / "run", root, "lightbox", checkpoint="last", prep_dir=prep,
                             out=tmp_path / "eval", device="cpu", n_examples=0, n_distributions=0, progress=False)
    assert rep["metrics"]["count"] == 3 and math.isfinite(rep["metrics"]["score"])
