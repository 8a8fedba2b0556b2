"""I2S inference: delta decoding, coarse-to-fine vs dense search, refinement, confidence, likelihood, loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from speedpose.errors import ShapeError
from speedpose.geometry.rotations import geodesic_angle_matrix, random_rotation_matrices
from speedpose.geometry.so3_grids import so3_healpix_rotations, so3_healpix_spacing_deg
from speedpose.geometry.wigner import delta_coeffs, n_so3_coeffs, so3_degree_slices
from speedpose.models.i2s import (
    SO3GridSignal,
    coarse_to_fine_mode,
    dense_argmax,
    predict_mode,
    so3_cross_entropy,
    so3_distribution,
    so3_log_likelihood,
)

LMAX = 6


@pytest.fixture(scope="module")
def grid3():
    return SO3GridSignal(3, LMAX)


@pytest.fixture(scope="module")
def grid1():
    return SO3GridSignal(1, LMAX)


def _rots(n, seed):
    return torch.from_numpy(random_rotation_matrices(n, np.random.default_rng(seed))).float()


def _deg(R1, R2):
    return torch.rad2deg(geodesic_angle_matrix(R1.double(), R2.double()))


def random_smooth_coeffs(n, seed, lmax=LMAX, scale=3.0):
    """Random distributions with a decaying spectrum (like trained I2S outputs: a few broad modes)."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(n, n_so3_coeffs(lmax), generator=g)
    for l, sl in enumerate(so3_degree_slices(lmax)):
        c[:, sl] *= scale / (1 + l) / (2 * l + 1) ** 0.5
    return c


def test_delta_decodes_to_its_rotation(grid3):
    R = _rots(32, 0)
    c = delta_coeffs(R, LMAX)
    R_grid, conf = predict_mode(c, level=5, refine=False, grid=grid3)
    err = _deg(R_grid, R)
    assert err.max() < so3_healpix_spacing_deg(5)  # within one level-5 cell
    R_ref, conf = predict_mode(c, level=5, refine=True, grid=grid3)
    assert _deg(R_ref, R).max() < 0.01
    assert R_ref.shape == (32, 3, 3) and R_ref.dtype == torch.float32
    assert ((conf > 0.99) & (conf <= 1 + 1e-6)).all()


def test_coarse_to_fine_exact_when_all_cells_kept(grid1):
    """With top_k covering every cell, the descent enumerates the whole finer grid: identical to the dense argmax."""
    c = random_smooth_coeffs(8, 1)
    idx, val, _ = coarse_to_fine_mode(c, grid1, level=2, top_k=576)
    d_idx, d_val = dense_argmax(c, 2)
    assert torch.equal(idx, d_idx)
    torch.testing.assert_close(val, d_val, rtol=1e-5, atol=1e-5)


def test_coarse_to_fine_agrees_with_dense_search(grid1):
    c = random_smooth_coeffs(100, 2)
    idx, val, _ = coarse_to_fine_mode(c, grid1, level=3, top_k=16)
    d_idx, d_val = dense_argmax(c, 3)
    R, R_d = so3_healpix_rotations(3, idx), so3_healpix_rotations(3, d_idx)
    within_cell = (_deg(R, R_d) <= 2 * so3_healpix_spacing_deg(3)).double().mean().item()
    assert (idx == d_idx).double().mean().item() >= 0.95
    assert within_cell >= 0.99
    assert (val <= d_val + 1e-4).all()  # the descent can never beat the dense maximum


def test_refinement_increases_signal_and_stays_close(grid3):
    c = random_smooth_coeffs(16, 3)
    R0, _ = predict_mode(c, level=5, refine=False, grid=grid3)
    R1, _ = predict_mode(c, level=5, refine=True, grid=grid3)
    from speedpose.geometry.wigner import wigner_features
    f0 = (c * wigner_features(R0, LMAX)).sum(1)
    f1 = (c * wigner_features(R1, LMAX)).sum(1)
    assert (f1 >= f0 - 1e-5).all()
    assert _deg(R0, R1).max() < 2 * so3_healpix_spacing_deg(5) + 1e-3


def test_confidence_orders_sharp_and_flat(grid3):
    R = _rots(4, 4)
    sharp, flat = delta_coeffs(R, LMAX) * 0.5, delta_coeffs(R, LMAX) * 0.01
    _, c_sharp = predict_mode(sharp, grid=grid3)
    _, c_flat = predict_mode(flat, grid=grid3)
    assert (c_sharp > c_flat).all() and (c_flat > 0).all()


def test_distribution_for_plots(grid1):
    c = delta_coeffs(_rots(2, 5), LMAX) * 0.05
    R, p = so3_distribution(c, level=2, chunk=200_000)  # several chunks
    assert R.shape == (4608, 3, 3) and p.shape == (2, 4608)
    torch.testing.assert_close(p.sum(1), torch.ones(2))
    assert _deg(R[p.argmax(1)], _rots(2, 5)).max() < 15


def test_log_likelihood(grid3):
    R = _rots(8, 6)
    zero = torch.zeros(8, n_so3_coeffs(LMAX))
    ll_uniform = so3_log_likelihood(zero, R, grid3)
    torch.testing.assert_close(ll_uniform, torch.full((8,), -math.log(math.pi**2)))
    c = delta_coeffs(R, LMAX) * 0.05
    ll_true = so3_log_likelihood(c, R, grid3)
    ll_wrong = so3_log_likelihood(c, _rots(8, 7), grid3)
    assert (ll_true > ll_uniform).all() and (ll_true > ll_wrong).all()
    # at the nearest grid cell instead: a little below the exact value at the peak
    ll_near = so3_log_likelihood(c, R, grid3, at_nearest=True)
    assert ((ll_near <= ll_true + 1e-4) & (ll_near > ll_true - 1.0)).all()


def test_cross_entropy(grid3):
    R = _rots(8, 8)
    c = (delta_coeffs(R, LMAX) * 0.05).requires_grad_(True)
    loss = so3_cross_entropy(c, R, grid3)
    loss.backward()
    assert torch.isfinite(c.grad).all()
    loss_wrong = so3_cross_entropy(c.detach(), _rots(8, 9), grid3)
    assert loss.item() < loss_wrong.item()
    uniform = so3_cross_entropy(torch.zeros(8, n_so3_coeffs(LMAX)), R, grid3)
    assert uniform.item() == pytest.approx(math.log(grid3.size), rel=1e-5)
    sampled = so3_cross_entropy(c.detach(), R, grid3, n_sample=2048, generator=torch.Generator().manual_seed(0))
    assert 0 < sampled.item() < loss_wrong.item()


def test_bad_inputs_raise(grid3):
    with pytest.raises(ShapeError):
        predict_mode(torch.zeros(2, 454))
    with pytest.raises(ShapeError):
        so3_cross_entropy(torch.zeros(2, 455), torch.eye(3).expand(3, 3, 3), grid3)
    with pytest.raises(ShapeError):
        coarse_to_fine_mode(torch.zeros(2, 455), grid3, level=2)


def test_rotate_coeffs_expresses_the_distribution_in_another_frame(grid1):
    """g = rotate_coeffs(f, Q) is g(R) = f(Q R) at any rotation; a delta at R* moves to Q^T R*."""
    from speedpose.geometry.wigner import wigner_features
    from speedpose.models.i2s import rotate_coeffs

    c = random_smooth_coeffs(3, 7)
    Q = _rots(3, 8)
    R = grid1.rotations[::37]  # (N, 3, 3)
    g_at_R = torch.einsum("bn,bkn->bk", rotate_coeffs(c, Q).double(), wigner_features(R.double()[None], LMAX)
                          .expand(3, -1, -1))
    f_at_QR = torch.einsum("bn,bkn->bk", c.double(), wigner_features(Q.double()[:, None] @ R.double()[None], LMAX))
    torch.testing.assert_close(g_at_R, f_at_QR, atol=1e-4, rtol=1e-5)
    R_star = _rots(3, 9)
    moved, _ = predict_mode(rotate_coeffs(delta_coeffs(R_star, LMAX), Q), level=5)
    assert _deg(moved, Q.transpose(1, 2) @ R_star).max() < 0.05
