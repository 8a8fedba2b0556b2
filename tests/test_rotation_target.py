"""The rotation loss's target: the I2S grid cross-entropy teaches the nearest level-3 cell, the exact
log-likelihood teaches the label itself."""

from __future__ import annotations

import math

import pytest
import torch

from speedpose.geometry.rotations import geodesic_angle_matrix, random_rotation_matrices
from speedpose.geometry.wigner import n_so3_coeffs
from speedpose.models.i2s import predict_mode
from speedpose.models.i2s.inference import default_grid
from speedpose.pose.model import rotation_loss

LMAX = 6


def _fit(target: str, R0: torch.Tensor, grid, steps: int = 50) -> torch.Tensor:
    """Free coefficients fitted to one label by the loss: the mode they reach is what the loss teaches."""
    c = torch.zeros(1, n_so3_coeffs(LMAX), requires_grad=True)
    opt = torch.optim.Adam([c], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        rotation_loss(grid, c, R0, target).backward()
        opt.step()
    return c.detach()


def test_exact_target_removes_the_grid_quantisation():
    grid = default_grid(LMAX, 2)  # a coarse training grid (15 deg) shows the effect cheaply
    cand = random_rotation_matrices(256, torch.Generator().manual_seed(3)).float()
    off = geodesic_angle_matrix(cand, grid.rotations[grid.nearest(cand)].to(cand.dtype))
    R0 = cand[int(off.argmax())][None]  # the label farthest from every grid cell
    off_deg = math.degrees(float(off.max()))
    assert off_deg > 6.0
    errs = {}
    for target in ("grid", "exact"):
        R, _ = predict_mode(_fit(target, R0, grid), level=5, grid=grid)
        errs[target] = math.degrees(float(geodesic_angle_matrix(R, R0)))
    # the grid loss lands on (about) the nearest cell (12 deg away here), the exact one near the label (the
    # 15-deg grid is a coarse quadrature of the normaliser: 2.3 deg here, 0.5 deg with the level-3 grid)
    assert errs["grid"] == pytest.approx(off_deg, abs=1.5)
    assert errs["exact"] < 3.0 and errs["exact"] < errs["grid"] / 3


def test_targets_agree_on_grid_labels_up_to_a_constant():
    grid = default_grid(LMAX, 3)
    R = grid.rotations[torch.tensor([5, 900, 30000])].float()
    c = torch.randn(3, n_so3_coeffs(LMAX)) * 0.1
    diff = rotation_loss(grid, c, R, "exact") - rotation_loss(grid, c, R, "grid")
    assert float(diff) == pytest.approx(math.log(math.pi ** 2) - math.log(grid.size), abs=1e-3)


def test_unknown_target_is_refused():
    grid = default_grid(LMAX, 2)
    with pytest.raises(ValueError, match="'grid' or 'exact'"):
        rotation_loss(grid, torch.zeros(1, n_so3_coeffs(LMAX)), torch.eye(3)[None], "nearest")
