"""Equivariance of the I2S layers (as e3nn's assert_equivariant): rotate input, compare with rotated output."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from speedpose.geometry.rotations import random_rotation_matrices, rotation_about_z
from speedpose.geometry.wigner import n_s2_coeffs, n_so3_coeffs, so3_degree_slices, wigner_D_blocks
from speedpose.models.i2s.head import I2SHeadSpec, I2SHead
from speedpose.models.i2s.layers import S2ToSO3Conv, SO3Activation, SO3Conv

LMAX = 4


@pytest.fixture(params=[torch.float32, torch.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


def _tol(dtype):
    return 1e-4 if dtype == torch.float32 else 1e-10


def _grid_tol(dtype):
    """Grid-based buffers (activation grid, Wigner matrices) are built once in float32: float64 runs match to ~1e-8."""
    return 1e-4 if dtype == torch.float32 else 1e-6


def rotate_s2(x: torch.Tensor, g: torch.Tensor, lmax: int) -> torch.Tensor:
    """Coefficients of f(g^-1 x): each degree block times D^l(g)."""
    D = wigner_D_blocks(g.to(x.dtype), lmax)
    return torch.cat([x[..., l * l:(l + 1) ** 2] @ D[l].T for l in range(lmax + 1)], dim=-1)


def rotate_so3(x: torch.Tensor, g: torch.Tensor, lmax: int) -> torch.Tensor:
    """Coefficients of f(g^-1 R): each (2l+1, 2l+1) block left-multiplied by D^l(g)."""
    D = wigner_D_blocks(g.to(x.dtype), lmax)
    out = []
    for l, sl in enumerate(so3_degree_slices(lmax)):
        d = 2 * l + 1
        blk = x[..., sl].reshape(*x.shape[:-1], d, d)
        out.append((D[l] @ blk).reshape(*x.shape[:-1], d * d))
    return torch.cat(out, dim=-1)


def _rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def _g(seed):
    return torch.from_numpy(random_rotation_matrices(1, np.random.default_rng(seed))[0])


def test_rotation_helpers_are_representations():
    """rotate_so3 composes like a left action, so the equivariance tests below test the right thing."""
    x = torch.randn(3, n_so3_coeffs(LMAX), dtype=torch.float64)
    g1, g2 = _g(1), _g(2)
    torch.testing.assert_close(rotate_so3(rotate_so3(x, g2, LMAX), g1, LMAX), rotate_so3(x, g1 @ g2, LMAX))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_s2_conv_equivariant(dtype, seed):
    torch.manual_seed(seed)
    layer = S2ToSO3Conv(5, 3, LMAX).to(dtype)
    x = torch.randn(2, 5, n_s2_coeffs(LMAX), dtype=dtype)
    g = _g(seed)
    out = layer(rotate_s2(x, g, LMAX))
    assert out.shape == (2, 3, n_so3_coeffs(LMAX))
    assert _rel_err(out, rotate_so3(layer(x), g, LMAX)) < _tol(dtype)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_so3_conv_equivariant(dtype, seed):
    torch.manual_seed(seed)
    layer = SO3Conv(4, 2, LMAX).to(dtype)
    x = torch.randn(2, 4, n_so3_coeffs(LMAX), dtype=dtype)
    g = _g(seed + 10)
    assert _rel_err(layer(rotate_so3(x, g, LMAX)), rotate_so3(layer(x), g, LMAX)) < _tol(dtype)


def test_so3_conv_not_trivially_equivariant():
    """Right-multiplying the blocks (the wrong side) breaks the check: the test can fail."""
    torch.manual_seed(0)
    layer = SO3Conv(2, 2, LMAX).double()
    x = torch.randn(1, 2, n_so3_coeffs(LMAX), dtype=torch.float64)
    g = _g(3)
    D = wigner_D_blocks(g, LMAX)
    wrong = torch.cat([(x[..., sl].reshape(1, 2, 2 * l + 1, 2 * l + 1) @ D[l]).reshape(1, 2, -1)
                       for l, sl in enumerate(so3_degree_slices(LMAX))], dim=-1)
    assert _rel_err(layer(wrong), rotate_so3(layer(x), g, LMAX)) > 0.1


@pytest.mark.parametrize("seed", [0, 1])
def test_so3_activation_equivariant(dtype, seed):
    torch.manual_seed(seed)
    act = SO3Activation(LMAX, grid_level=2).to(dtype)
    x = torch.randn(3, 2, n_so3_coeffs(LMAX), dtype=dtype)
    g = _g(seed + 20)
    # approximate: the ReLU creates frequencies above lmax that the finite grid aliases
    err = _rel_err(act(rotate_so3(x, g, LMAX)), rotate_so3(act(x), g, LMAX))
    assert err < 0.05
    # exact for the grid's own symmetries: rotations about z by multiples of 90 degrees
    gz = rotation_about_z(torch.tensor(math.pi / 2, dtype=torch.float64))
    assert _rel_err(act(rotate_so3(x, gz, LMAX)), rotate_so3(act(x), gz, LMAX)) < _grid_tol(dtype)


def test_so3_activation_round_trip_and_relu():
    act = SO3Activation(LMAX, grid_level=2, act=torch.nn.Identity()).double()
    x = torch.randn(4, n_so3_coeffs(LMAX), dtype=torch.float64)
    torch.testing.assert_close(act(x), x, atol=1e-5, rtol=0)  # band-limited signals survive exactly
    relu = SO3Activation(LMAX, grid_level=2).double()
    assert _rel_err(relu(x), x) > 0.1


def test_head_equivariant_to_quarter_turns_of_the_feature_map(dtype):
    """rot90 of the feature map moves content (x, y) -> (y, -x), i.e. Rz(-90 deg) in the camera frame; the eval
    output then is the left-rotated distribution, f'(R) = f(Rz(90) R) (mode R' = Rz(-90) R), as SPEED+ in-plane
    augmentation assumes (R' = Rz(theta) R)."""
    torch.manual_seed(0)
    cfg = I2SHeadSpec(lmax=LMAX, sphere_channels=6, hidden_channels=3, fmap_hw=(7, 7), train_grid_level=1)
    head = I2SHead(5, cfg).to(dtype).eval()
    fmap = torch.randn(2, 5, 7, 7, dtype=dtype)
    out_rot = head(torch.rot90(fmap, 1, dims=(2, 3)))
    g = rotation_about_z(torch.tensor(-math.pi / 2, dtype=torch.float64))
    assert _rel_err(out_rot, rotate_so3(head(fmap), g, LMAX)) < _grid_tol(dtype)
    g_wrong = rotation_about_z(torch.tensor(math.pi / 2, dtype=torch.float64))
    assert _rel_err(out_rot, rotate_so3(head(fmap), g_wrong, LMAX)) > 0.05
