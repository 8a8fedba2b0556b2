"""Rotation conventions: scalar-first quaternions, Hamilton matrices, geodesic angles (numpy and torch)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from speedpose.errors import ShapeError
from speedpose.geometry.rotations import (
    axis_angle_to_matrix,
    canonical_quat_wxyz,
    geodesic_angle_matrix,
    geodesic_angle_quat_wxyz,
    matrix_to_axis_angle,
    matrix_to_quat_wxyz,
    quat_wxyz_multiply,
    quat_wxyz_to_matrix,
    random_quat_wxyz,
    random_rotation_matrices,
    rotation_about_z,
)

quats = st.lists(st.floats(-1, 1, allow_nan=False), min_size=4, max_size=4).filter(
    lambda v: np.linalg.norm(v) > 0.1)


@settings(max_examples=200, deadline=None)
@given(quats)
def test_quat_to_matrix_matches_scipy_scalar_last(q):
    q = np.asarray(q) / np.linalg.norm(q)
    expected = Rotation.from_quat([q[1], q[2], q[3], q[0]]).as_matrix()  # scipy is scalar-LAST
    np.testing.assert_allclose(quat_wxyz_to_matrix(q), expected, atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(quats)
def test_matrix_quat_round_trip_and_sign(q):
    q = np.asarray(q) / np.linalg.norm(q)
    R = quat_wxyz_to_matrix(q)
    back = matrix_to_quat_wxyz(R)
    assert back[0] >= -1e-12  # w >= 0 (|w| < 1e-12 counts as 0: sign set by x, y, z)
    assert min(np.abs(back - q).max(), np.abs(back + q).max()) < 1e-9
    np.testing.assert_allclose(quat_wxyz_to_matrix(-q), R, atol=1e-12)


def test_a_scalar_last_reading_would_fail():
    # 90 deg about x: (w, x, y, z) = (cos45, sin45, 0, 0)
    q = np.array([math.cos(math.pi / 4), math.sin(math.pi / 4), 0, 0])
    R = quat_wxyz_to_matrix(q)
    np.testing.assert_allclose(R @ [0, 1, 0], [0, 0, 1], atol=1e-12)  # y -> z under +90 deg about x
    wrong = Rotation.from_quat(q).as_matrix()  # scipy reading it as (x, y, z, w)
    assert np.abs(wrong - R).max() > 0.5


@pytest.mark.parametrize("shape", [(), (5,), (3, 4)])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_batch_shapes(shape, backend):
    rng = np.random.default_rng(0)
    q = rng.standard_normal(shape + (4,))
    if backend == "torch":
        q = torch.from_numpy(q)
    R = quat_wxyz_to_matrix(q)
    assert tuple(R.shape) == shape + (3, 3)
    assert tuple(matrix_to_quat_wxyz(R).shape) == shape + (4,)
    assert tuple(geodesic_angle_matrix(R, R).shape) == shape
    assert tuple(geodesic_angle_quat_wxyz(q, q).shape) == shape
    assert type(R) is type(q)


def test_torch_matches_numpy_and_keeps_dtype():
    q = np.random.default_rng(1).standard_normal((50, 4))
    for dtype in (torch.float32, torch.float64):
        qt = torch.from_numpy(q).to(dtype)
        Rt = quat_wxyz_to_matrix(qt)
        assert Rt.dtype == dtype
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        np.testing.assert_allclose(Rt.numpy(), quat_wxyz_to_matrix(q), atol=tol)
        qb = matrix_to_quat_wxyz(Rt)
        np.testing.assert_allclose(qb.numpy(), matrix_to_quat_wxyz(quat_wxyz_to_matrix(q)), atol=10 * tol)


def test_geodesic_angle_known_values_and_sign_invariance():
    for deg in (0.0, 1e-4, 0.169, 1.0, 90.0, 179.9, 180.0):
        rad = math.radians(deg)
        R = axis_angle_to_matrix(np.array([0.0, 0.0, rad]))
        assert geodesic_angle_matrix(np.eye(3), R) == pytest.approx(rad, abs=1e-9)
        q = matrix_to_quat_wxyz(R)
        q0 = np.array([1.0, 0, 0, 0])
        assert geodesic_angle_quat_wxyz(q0, q) == pytest.approx(rad, abs=1e-9)
        assert geodesic_angle_quat_wxyz(q0, -q) == pytest.approx(rad, abs=1e-9)


def test_geodesic_gradient_is_finite_at_identity():
    R = torch.eye(3, dtype=torch.float64, requires_grad=True)
    a = geodesic_angle_quat_wxyz(matrix_to_quat_wxyz(R), torch.tensor([1.0, 0, 0, 0], dtype=torch.float64))
    a.backward()
    assert torch.isfinite(R.grad).all()


def test_canonical_sign():
    q = np.array([[-0.5, 0.5, 0.5, 0.5], [0.0, -1.0, 0.0, 0.0], [0.5, 0.5, -0.5, 0.5]])
    c = canonical_quat_wxyz(q)
    np.testing.assert_allclose(c, [[0.5, -0.5, -0.5, -0.5], [0.0, 1.0, 0.0, 0.0], [0.5, 0.5, -0.5, 0.5]])
    np.testing.assert_allclose(canonical_quat_wxyz(torch.from_numpy(q)).numpy(), c)


def test_multiply_composes_matrices():
    rng = np.random.default_rng(2)
    a, b = random_quat_wxyz(10, rng), random_quat_wxyz(10, rng)
    np.testing.assert_allclose(quat_wxyz_to_matrix(quat_wxyz_multiply(a, b)),
                               quat_wxyz_to_matrix(a) @ quat_wxyz_to_matrix(b), atol=1e-12)


def test_axis_angle_round_trip():
    rng = np.random.default_rng(3)
    R = random_rotation_matrices(100, rng)
    np.testing.assert_allclose(axis_angle_to_matrix(matrix_to_axis_angle(R)), R, atol=1e-9)


def test_random_rotations_are_uniform():
    R = random_rotation_matrices(20000, np.random.default_rng(4))
    np.testing.assert_allclose(np.einsum("nij,nkj->nik", R, R)[0], np.eye(3), atol=1e-12)
    # Haar measure: the angle density is (1 - cos t) / pi, mean angle pi/2 + 2/pi
    angles = geodesic_angle_matrix(np.eye(3), R)
    assert angles.mean() == pytest.approx(math.pi / 2 + 2 / math.pi, abs=0.02)
    # each column uniform on the sphere: mean ~ 0
    assert np.abs(R.mean(axis=0)).max() < 0.03
    gen = torch.Generator().manual_seed(0)
    assert random_rotation_matrices(3, gen).shape == (3, 3, 3)


def test_rotation_about_z():
    np.testing.assert_allclose(rotation_about_z(np.pi / 2) @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_shape_errors_say_expected_and_actual():
    with pytest.raises(ShapeError, match=r"expected shape \(\.\.\., 4\), got \(3,\)"):
        quat_wxyz_to_matrix(np.zeros(3))
    with pytest.raises(ShapeError, match=r"\(\.\.\., 3, 3\)"):
        matrix_to_quat_wxyz(np.zeros((4, 4)))
