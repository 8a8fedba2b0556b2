"""HEALPix S2 / SO(3) grids: sizes, hierarchy, nearest-rotation search."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from speedpose.errors import ShapeError
from speedpose.geometry.rotations import geodesic_angle_matrix, matrix_to_quat_wxyz, random_rotation_matrices
from speedpose.geometry.s2_grids import s2_healpix_cap, s2_healpix_grid, s2_healpix_npix
from speedpose.geometry.so3_grids import (
    so3_children,
    so3_healpix_cells,
    so3_healpix_rotations,
    so3_healpix_size,
    so3_healpix_spacing_deg,
    so3_nearest_index,
    so3_parent,
)


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_s2_grid_size_and_unit_norm(level):
    xyz = s2_healpix_grid(level)
    assert xyz.shape == (12 * 4**level, 3) == (s2_healpix_npix(level), 3)
    torch.testing.assert_close(xyz.norm(dim=1), torch.ones(len(xyz), dtype=xyz.dtype))
    # equal-area pixels: the centroid of the grid is the origin
    assert xyz.mean(0).abs().max() < 1e-12


def test_s2_cap_selects_hemisphere_around_axis():
    xyz, ang = s2_healpix_cap(2, math.pi / 2, axis=(0, 0, -1))
    assert 96 <= len(xyz) <= 112  # "about 104 points within 90 deg" at level 2
    assert (xyz[:, 2] <= 1e-9).all()
    torch.testing.assert_close(ang, torch.arccos(-xyz[:, 2]))
    with pytest.raises(ShapeError):
        s2_healpix_cap(2, 1.0, axis=(0, 0, 0))


@pytest.mark.parametrize("level", [0, 1, 2])
def test_so3_grid_sizes_orthonormal_distinct(level):
    R = so3_healpix_rotations(level)
    assert R.shape == (72 * 8**level, 3, 3) == (so3_healpix_size(level), 3, 3)
    eye = torch.eye(3, dtype=R.dtype).expand_as(R)
    torch.testing.assert_close(R @ R.transpose(1, 2), eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(len(R), dtype=R.dtype))
    q = matrix_to_quat_wxyz(R)
    gram = (q @ q.T).abs().fill_diagonal_(0)
    min_sep_deg = 2 * math.degrees(math.acos(gram.max().item()))
    # no two rotations closer than ~0.8 grid step (they would be duplicates with plain Euler angles)
    assert min_sep_deg > 0.8 * so3_healpix_spacing_deg(level)


def test_so3_grid_rotation_axis_is_healpix_pixel():
    level = 2
    pix, _ = so3_healpix_cells(level)
    R = so3_healpix_rotations(level)
    torch.testing.assert_close(R[:, :, 2], s2_healpix_grid(level)[torch.from_numpy(pix)])


def test_so3_uniform_coverage():
    """Haar-random rotations spread evenly over the level-2 cells (equal-volume cells)."""
    R = random_rotation_matrices(20000, np.random.default_rng(0))
    idx = so3_nearest_index(torch.from_numpy(R), 1)
    counts = torch.bincount(idx, minlength=576).double()
    assert counts.min() > 0.4 * counts.mean() and counts.max() < 1.8 * counts.mean()


@pytest.mark.parametrize("level", [0, 1, pytest.param(2, marks=pytest.mark.slow)])
def test_hierarchy_children_are_nearest(level):
    Rp = so3_healpix_rotations(level)
    Rc = so3_healpix_rotations(level + 1)
    children = so3_children(torch.arange(len(Rp)))
    assert children.shape == (len(Rp), 8)
    torch.testing.assert_close(so3_parent(children), torch.arange(len(Rp))[:, None].expand(-1, 8))
    # the children's pixels are the 4 nested sub-pixels and their in-plane bins the 2 sub-bins
    pix_p, psi_p = so3_healpix_cells(level)
    pix_c, psi_c = so3_healpix_cells(level + 1, children)
    assert np.array_equal(pix_c // 4, np.broadcast_to(pix_p[:, None], pix_c.shape))
    assert np.array_equal(psi_c // 2, np.broadcast_to(psi_p[:, None], psi_c.shape))
    # each child is nearer to its parent than to any other level-L rotation (all at levels 0-1, 98% at 2)
    near = so3_nearest_index(Rc, level)
    frac = (near == torch.arange(len(Rc)) // 8).double().mean().item()
    assert frac >= (1.0 if level < 2 else 0.98)
    # ... and the 8 children are the 8 nearest level-(L+1) rotations of the parent (levels 0-1)
    qp, qc = matrix_to_quat_wxyz(Rp), matrix_to_quat_wxyz(Rc)
    top8 = (qp @ qc.T).abs().topk(8, dim=1).indices.sort(dim=1).values
    frac8 = (top8 == children).all(1).double().mean().item()
    assert frac8 >= (1.0 if level < 2 else 0.85)
    # a child stays within about one parent step
    d = geodesic_angle_matrix(Rp[torch.arange(len(Rc)) // 8], Rc)
    assert math.degrees(d.max().item()) < 0.7 * so3_healpix_spacing_deg(level)


@pytest.mark.parametrize("level", [0, 2, 3])
def test_nearest_index_round_trip(level):
    idx = torch.randint(0, so3_healpix_size(level), (500,), generator=torch.Generator().manual_seed(level))
    R = so3_healpix_rotations(level, idx)
    assert torch.equal(so3_nearest_index(R, level), idx)
    # a small perturbation (a tenth of the step) keeps the index
    from speedpose.geometry.rotations import axis_angle_to_matrix
    w = torch.randn(500, 3, dtype=torch.float64)
    w = w / w.norm(dim=1, keepdim=True) * math.radians(0.1 * so3_healpix_spacing_deg(level))
    assert torch.equal(so3_nearest_index(R @ axis_angle_to_matrix(w), level), idx)


def test_nearest_index_matches_brute_force_geodesic():
    R = torch.from_numpy(random_rotation_matrices(300, np.random.default_rng(1)))
    grid = so3_healpix_rotations(1)
    d = geodesic_angle_matrix(R[:, None], grid[None])
    idx = so3_nearest_index(R, 1)
    torch.testing.assert_close(d.gather(1, idx[:, None])[:, 0], d.min(1).values, atol=1e-6, rtol=0)


def test_bad_level_and_index_raise():
    with pytest.raises(ShapeError):
        so3_healpix_size(-1)
    with pytest.raises(ShapeError):
        so3_healpix_rotations(0, [72])
    with pytest.raises(ShapeError):
        so3_nearest_index(torch.eye(3)[None], 6)


@pytest.mark.parametrize("level", [0, 1, 2])
def test_index_round_trip_and_structured_wigner_table(level):
    from speedpose.geometry.so3_grids import so3_healpix_index, so3_healpix_wigner_features, so3_healpix_wigner_table
    from speedpose.geometry.wigner import wigner_features

    idx = np.arange(so3_healpix_size(level))
    assert np.array_equal(so3_healpix_index(level, *so3_healpix_cells(level)), idx)
    ref = wigner_features(so3_healpix_rotations(level), 4)
    torch.testing.assert_close(so3_healpix_wigner_features(level, 4, torch.float64), ref, atol=1e-10, rtol=0)
    feats, index = so3_healpix_wigner_table(level, 4, [1, 5], torch.float64)
    assert len(index) == 2 * 6 * 2**level
    torch.testing.assert_close(feats, ref[index], atol=1e-10, rtol=0)
