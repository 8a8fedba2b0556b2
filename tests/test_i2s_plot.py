"""The SO(3) distribution plot: coordinates convention and a written PNG."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from speedpose.errors import ShapeError
from speedpose.geometry.rotations import axis_angle_to_matrix, rotation_about_z
from speedpose.geometry.so3_grids import euler_zyz_to_matrix
from speedpose.viz.so3_plot import plot_so3_distribution, so3_plot_coordinates


def test_coordinates_follow_zyz_euler_angles():
    phi, theta, psi = np.array([0.3, -2.0, 1.0]), np.array([0.5, 2.0, 1.2]), np.array([0.1, 4.0, 6.0])
    lon, lat, ps = so3_plot_coordinates(euler_zyz_to_matrix(phi, theta, psi))
    np.testing.assert_allclose(lon, phi, atol=1e-12)
    np.testing.assert_allclose(lat, math.pi / 2 - theta, atol=1e-12)
    np.testing.assert_allclose(ps, psi, atol=1e-12)
    # an in-plane turn of the camera image (left Rz) moves the longitude, a body turn about z (right Rz) the colour
    R = euler_zyz_to_matrix(*(np.array([v]) for v in (0.3, 0.5, 0.1)))
    lon2, _, psi2 = so3_plot_coordinates(rotation_about_z(torch.tensor(0.4, dtype=torch.float64)) @ R)
    np.testing.assert_allclose(lon2, [0.7], atol=1e-12)
    _, _, psi3 = so3_plot_coordinates(R @ rotation_about_z(torch.tensor(0.4, dtype=torch.float64)))
    np.testing.assert_allclose(psi3, [0.5], atol=1e-12)


def test_plot_writes_png(tmp_path):
    R = axis_angle_to_matrix(torch.randn(500, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    p = torch.softmax(torch.randn(500, generator=torch.Generator().manual_seed(1)), 0)
    out = plot_so3_distribution(R, p, tmp_path / "sub" / "dist.png", R_true=R[int(p.argmax())], title="test")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10000
    assert list((tmp_path / "sub").iterdir()) == [out]  # no temporary file left behind
    with pytest.raises(ShapeError):
        plot_so3_distribution(R, p[:-1], tmp_path / "x.png")
