"""Wigner-D features: agreement with e3nn, homomorphism, orthonormality, harmonics consistency."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from e3nn import o3

from speedpose.errors import ShapeError
from speedpose.geometry.rotations import axis_angle_to_matrix, random_rotation_matrices
from speedpose.geometry.so3_grids import so3_healpix_rotations
from speedpose.geometry.wigner import (
    delta_coeffs,
    n_so3_coeffs,
    s2_harmonics,
    so3_degree_slices,
    wigner_D_blocks,
    wigner_features,
    wigner_features_axis_angle,
)


def _rand(n, seed=0, dtype=torch.float64):
    return torch.from_numpy(random_rotation_matrices(n, np.random.default_rng(seed))).to(dtype)


def test_sizes():
    assert n_so3_coeffs(6) == 455 and n_so3_coeffs(0) == 1 and n_so3_coeffs(1) == 10
    assert so3_degree_slices(6)[-1].stop == 455


@pytest.mark.parametrize("l", [1, 2, 4, 6])
def test_matches_e3nn_wigner_D(l):
    R = _rand(20)
    ours = wigner_D_blocks(R, l)[l]
    ref = o3.wigner_D(l, *o3.matrix_to_angles(R))
    # e3nn builds its generators in float32, so it agrees to float32 accuracy only
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_degree_one_is_the_rotation_in_e3nn_axis_order():
    R = _rand(10)
    # e3nn 0.6 orders l=1 as (x, y, z); e3nn 0.5 as (y, z, x): D^1 = P R P^T with P the e3nn order
    P = torch.eye(3, dtype=R.dtype)[o3.spherical_harmonics(1, torch.eye(3), False).abs().argmax(0)]
    torch.testing.assert_close(wigner_D_blocks(R, 1)[1], P @ R @ P.T, atol=1e-12, rtol=0)
    torch.testing.assert_close(wigner_D_blocks(R, 1)[1], o3.Irrep(1, 1).D_from_matrix(R), atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_homomorphism_and_orthogonality(dtype):
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    R1, R2 = _rand(16, 1, dtype), _rand(16, 2, dtype)
    for D1, D2, D12 in zip(wigner_D_blocks(R1, 6), wigner_D_blocks(R2, 6), wigner_D_blocks(R1 @ R2, 6)):
        torch.testing.assert_close(D1 @ D2, D12, atol=tol, rtol=0)
        eye = torch.eye(D1.shape[-1], dtype=dtype).expand_as(D1)
        torch.testing.assert_close(D1 @ D1.transpose(-1, -2), eye, atol=tol, rtol=0)


def test_harmonics_transform_with_D():
    R = _rand(8)
    x = torch.randn(8, 3, dtype=torch.float64)
    Y, YR = s2_harmonics(x, 6), s2_harmonics((R @ x[..., None])[..., 0], 6)
    start = 0
    for l, D in enumerate(wigner_D_blocks(R, 6)):
        sl = slice(start, start + 2 * l + 1)
        torch.testing.assert_close(YR[:, sl], (D @ Y[:, sl, None])[..., 0], atol=1e-10, rtol=0)
        start = sl.stop


def test_features_orthonormal_on_fine_grid():
    """E_R[phi phi^T] = I: the Gram matrix on the level-3 grid (36,864 rotations) is the identity (up to quadrature)."""
    from speedpose.geometry.so3_grids import so3_healpix_wigner_features

    phi = so3_healpix_wigner_features(3, 4, torch.float64)
    gram = phi.T @ phi / len(phi)
    torch.testing.assert_close(gram, torch.eye(len(gram), dtype=gram.dtype), atol=5e-3, rtol=0)


def test_delta_peaks_at_rotation():
    R0 = _rand(1, 5)
    grid = so3_healpix_rotations(2)
    f = wigner_features(grid, 6) @ delta_coeffs(R0, 6)[0]
    from speedpose.geometry.rotations import geodesic_angle_matrix
    assert np.degrees(geodesic_angle_matrix(grid[f.argmax()], R0[0]).item()) < 15
    torch.testing.assert_close(f.max(), (wigner_features(R0, 6) @ delta_coeffs(R0, 6)[0]).max() * 0 + f.max())
    assert (wigner_features(R0, 6) @ delta_coeffs(R0, 6)[0]).item() == pytest.approx(455.0, rel=1e-9)


def test_axis_angle_form_smooth_at_zero():
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    phi = wigner_features_axis_angle(w, 3)
    phi.sum().backward()
    assert torch.isfinite(w.grad).all()
    w2 = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    torch.testing.assert_close(wigner_features_axis_angle(w2, 3), wigner_features(axis_angle_to_matrix(w2), 3))


def test_bad_shape_raises():
    with pytest.raises(ShapeError):
        wigner_features(torch.zeros(3, 4), 2)
