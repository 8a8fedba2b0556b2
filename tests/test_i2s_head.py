"""The I2S head on CPU with a tiny config: shapes, finite values and gradients, determinism, conditioning, autocast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speedpose.errors import ConfigError, ShapeError
from speedpose.geometry.rotations import random_rotation_matrices
from speedpose.geometry.wigner import n_so3_coeffs
from speedpose.models.i2s import I2SHeadSpec, I2SHead, predict_mode, so3_cross_entropy

TINY = I2SHeadSpec(lmax=3, sphere_channels=8, hidden_channels=4, fmap_hw=(5, 5), proj_level=1, act_grid_level=1,
                 train_grid_level=1, proj_n_subset=6)


@pytest.fixture(scope="module")
def head():
    torch.manual_seed(0)
    return I2SHead(16, TINY)


def test_forward_backward_shapes_and_finite(head):
    head.train()
    fmap = torch.randn(3, 16, 5, 5, requires_grad=True)
    coeffs = head(fmap)
    assert coeffs.shape == (3, n_so3_coeffs(3)) == (3, 84)
    assert torch.isfinite(coeffs).all()
    R = torch.from_numpy(random_rotation_matrices(3, np.random.default_rng(0))).float()
    loss = so3_cross_entropy(coeffs, R, head.grid)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(fmap.grad).all()
    grads = [p.grad for p in head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(g.abs().sum() > 0 for g in grads)  # every parameter takes part
    head.zero_grad()


def test_eval_is_deterministic_and_train_subsamples(head):
    fmap = torch.randn(2, 16, 5, 5)
    head.eval()
    a, b = head(fmap), head(fmap)
    assert torch.equal(a, b)
    head.train()
    torch.manual_seed(1)
    c = head(fmap)
    torch.manual_seed(2)
    d = head(fmap)
    assert not torch.allclose(c, d)  # random projection subsets in training only
    torch.manual_seed(1)
    assert torch.equal(c, head(fmap))  # ... reproducible given the seed
    head.eval()


def test_default_config_has_455_coefficients():
    cfg = I2SHeadSpec()
    assert (cfg.lmax, cfg.sphere_channels, cfg.hidden_channels, cfg.train_grid_level) == (6, 512, 8, 3)
    assert n_so3_coeffs(cfg.lmax) == 455


def test_conditioning_vector():
    torch.manual_seed(0)
    head = I2SHead(16, I2SHeadSpec(**{**TINY.to_dict(), "cond_dim": 10})).eval()
    fmap = torch.randn(2, 16, 5, 5)
    one_hot = torch.eye(10)[[1, 7]]
    out1 = head(fmap, one_hot)
    out2 = head(fmap, torch.eye(10)[[2, 7]])
    assert not torch.allclose(out1[0], out2[0]) and torch.allclose(out1[1], out2[1])
    with pytest.raises(ShapeError):
        head(fmap)
    with pytest.raises(ShapeError):
        head(fmap, torch.zeros(2, 9))


def test_bad_inputs(head):
    with pytest.raises(ShapeError):
        head(torch.randn(2, 15, 5, 5))
    with pytest.raises(ShapeError):
        head(torch.randn(2, 16, 7, 7))
    with pytest.raises(ConfigError):
        I2SHeadSpec(lmax=0)


def test_bf16_autocast_on_cpu(head):
    head.eval()
    fmap = torch.randn(2, 16, 5, 5)
    ref = head(fmap)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(fmap)
        R, conf = predict_mode(out, level=3, grid=head.grid, refine=True)
    assert torch.isfinite(out.float()).all() and R.dtype == torch.float32 and torch.isfinite(conf).all()
    assert ((out.float() - ref).norm() / ref.norm()).item() < 0.05


def test_float64_head_end_to_end():
    torch.manual_seed(0)
    head = I2SHead(16, TINY).double().eval()
    coeffs = head(torch.randn(2, 16, 5, 5, dtype=torch.float64))
    R = torch.from_numpy(random_rotation_matrices(2, np.random.default_rng(0)))
    loss = so3_cross_entropy(coeffs, R, head.grid)
    assert coeffs.dtype == torch.float64 and torch.isfinite(loss)
    R_mode, conf = predict_mode(coeffs, level=3, grid=head.grid)
    assert torch.isfinite(R_mode).all() and ((conf >= 0) & (conf <= 1 + 1e-6)).all()
