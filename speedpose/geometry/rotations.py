"""Rotations: scalar-first unit quaternions (w, x, y, z) and 3x3 rotation matrices.

Conventions (the SPEED+ ones, see the README):

* Quaternions are SCALAR-FIRST, ``q_wxyz = (w, x, y, z)``, Hamilton product, and ``R(q)`` is the usual active
  rotation matrix (scipy: ``Rotation.from_quat([x, y, z, w]).as_matrix()``).  For a SPEED+ label
  ``q_vbs2tango_true``, ``R(q)`` maps Tango body coordinates into camera coordinates: ``p_cam = R(q) p_body + r``.
* ``q`` and ``-q`` are the same rotation.  :func:`canonical_quat_wxyz` picks the sign with ``w >= 0``.

Every function accepts numpy arrays or torch tensors of any batch shape ``(..., 4)`` / ``(..., 3, 3)`` and
returns the same type, dtype and device.
"""

from __future__ import annotations

import importlib
import math
import sys
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from speedpose.errors import ShapeError

if TYPE_CHECKING:
    import torch
else:
    class _LazyTorch:
        """torch, imported on first use: numpy-only callers (preprocess workers, the renderer) never load it."""

        def __getattr__(self, name: str):
            return getattr(importlib.import_module("torch"), name)

    torch = _LazyTorch()

Array = TypeVar("Array")  # np.ndarray or torch.Tensor; every function returns the type it is given


def _is_tensor(x) -> bool:
    mod = sys.modules.get("torch")  # a tensor cannot exist unless torch was imported
    return mod is not None and isinstance(x, mod.Tensor)


def _check_last(x, shape: tuple[int, ...], name: str) -> None:
    if tuple(x.shape[len(x.shape) - len(shape):]) != shape or len(x.shape) < len(shape):
        raise ShapeError(f"{name}: expected shape (..., {', '.join(map(str, shape))}), got {tuple(x.shape)}")


def _xp(x):
    return sys.modules["torch"] if _is_tensor(x) else np


def _as_array(x):
    return x if _is_tensor(x) else np.asarray(x, dtype=np.result_type(np.asarray(x).dtype, np.float32))


def quat_wxyz_to_matrix(q_wxyz: Array) -> Array:
    """Rotation matrix of scalar-first quaternions.

    Args:
        q_wxyz: (..., 4) quaternions (w, x, y, z); need not be exactly unit (they are normalised).

    Returns:
        (..., 3, 3) rotation matrices R with ``v_rotated = R @ v``.
    """
    q = _as_array(q_wxyz)
    _check_last(q, (4,), "q_wxyz")
    xp = _xp(q)
    q = q / xp.linalg.norm(q, axis=-1, keepdims=True) if xp is np else q / torch.linalg.norm(q, dim=-1, keepdim=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    m = xp.stack(rows, -1) if xp is not np else np.stack(rows, axis=-1)
    return m.reshape(tuple(q.shape[:-1]) + (3, 3))


def matrix_to_quat_wxyz(R: Array) -> Array:
    """Scalar-first unit quaternions of rotation matrices, with the canonical sign ``w >= 0``.

    Uses the numerically stable branch selection (largest of 1+trace, 1+2Rxx-trace, ...), vectorised.

    Args:
        R: (..., 3, 3) rotation matrices.

    Returns:
        (..., 4) unit quaternions (w, x, y, z) with w >= 0.
    """
    R = _as_array(R)
    _check_last(R, (3, 3), "R")
    xp = _xp(R)
    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    stack = (lambda xs: torch.stack(xs, -1)) if xp is not np else (lambda xs: np.stack(xs, axis=-1))
    # 4 * (w^2, x^2, y^2, z^2)
    d = stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22])
    # candidate quaternions, each scaled by 4 * (its largest component)
    cand = xp.stack(
        [
            stack([d[..., 0], m21 - m12, m02 - m20, m10 - m01]),
            stack([m21 - m12, d[..., 1], m10 + m01, m02 + m20]),
            stack([m02 - m20, m10 + m01, d[..., 2], m12 + m21]),
            stack([m10 - m01, m20 + m02, m21 + m12, d[..., 3]]),
        ],
        -2,
    )
    if xp is not np:
        best = d.argmax(dim=-1)
        q = torch.gather(cand, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
        q = q / torch.linalg.norm(q, dim=-1, keepdim=True)
    else:
        best = d.argmax(axis=-1)
        q = np.take_along_axis(cand, best[..., None, None], axis=-2)[..., 0, :]
        q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return canonical_quat_wxyz(q)


def canonical_quat_wxyz(q_wxyz: Array) -> Array:
    """The sign of each quaternion that has ``w >= 0`` (ties at w == 0 broken by the first nonzero of x, y, z).

    Args:
        q_wxyz: (..., 4) quaternions.
    Returns:
        (..., 4) quaternions representing the same rotations.
    """
    q = _as_array(q_wxyz)
    _check_last(q, (4,), "q_wxyz")
    xp = _xp(q)
    # first component that is not (numerically) zero decides the sign
    nonzero = xp.abs(q) > 1e-12
    first = nonzero.int().argmax(dim=-1) if xp is not np else nonzero.argmax(axis=-1)
    if xp is not np:
        lead = torch.gather(q, -1, first[..., None])
    else:
        lead = np.take_along_axis(q, first[..., None], axis=-1)
    return xp.where(lead < 0, -q, q)


def quat_wxyz_multiply(a: Array, b: Array) -> Array:
    """Hamilton product ``a * b`` of scalar-first quaternions (rotation b first, then a).  (..., 4) -> (..., 4)."""
    a, b = _as_array(a), _as_array(b)
    _check_last(a, (4,), "a")
    _check_last(b, (4,), "b")
    xp = _xp(a)
    aw, ax, ay, az = (a[..., i] for i in range(4))
    bw, bx, by, bz = (b[..., i] for i in range(4))
    out = [
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ]
    return torch.stack(out, -1) if xp is not np else np.stack(out, axis=-1)


def quat_wxyz_conjugate(q_wxyz: Array) -> Array:
    """Conjugate (inverse for unit quaternions) of scalar-first quaternions. (..., 4) -> (..., 4)."""
    q = _as_array(q_wxyz)
    _check_last(q, (4,), "q_wxyz")
    sign = q.new_tensor([1.0, -1.0, -1.0, -1.0]) if _is_tensor(q) else np.array([1.0, -1.0, -1.0, -1.0])
    return q * sign


def geodesic_angle_matrix(R1: Array, R2: Array) -> Array:
    """Geodesic distance on SO(3) in RADIANS, in [0, pi], between rotation matrices.

    Uses ``atan2(|sin|, cos)`` of the relative rotation, stable near 0 and near pi (``arccos`` of the trace is not).

    Args:
        R1, R2: (..., 3, 3) rotation matrices (broadcastable).
    Returns:
        (...) angles in radians.
    """
    R1, R2 = _as_array(R1), _as_array(R2)
    _check_last(R1, (3, 3), "R1")
    _check_last(R2, (3, 3), "R2")
    xp = _xp(R1)
    Rd = xp.swapaxes(R1, -1, -2) @ R2 if xp is np else R1.transpose(-1, -2) @ R2
    cos = (Rd[..., 0, 0] + Rd[..., 1, 1] + Rd[..., 2, 2] - 1) / 2
    vee = [Rd[..., 2, 1] - Rd[..., 1, 2], Rd[..., 0, 2] - Rd[..., 2, 0], Rd[..., 1, 0] - Rd[..., 0, 1]]
    if xp is not np:
        sin = torch.linalg.norm(torch.stack(vee, -1), dim=-1) / 2
        return torch.atan2(sin, cos)
    sin = np.linalg.norm(np.stack(vee, axis=-1), axis=-1) / 2
    return np.arctan2(sin, cos)


def geodesic_angle_quat_wxyz(q1_wxyz: Array, q2_wxyz: Array) -> Array:
    """Geodesic distance in RADIANS between rotations given as quaternions; invariant to the sign of either.

    ``2 * atan2(|q1 x q2 vector part of the relative rotation|, |<q1, q2>|)``, equal to ``2 * arccos(|<q1, q2>|)``
    for unit quaternions but accurate for small angles too.

    Args:
        q1_wxyz, q2_wxyz: (..., 4) quaternions (normalised here).
    Returns:
        (...) angles in [0, pi].
    """
    q1, q2 = _as_array(q1_wxyz), _as_array(q2_wxyz)
    _check_last(q1, (4,), "q1_wxyz")
    _check_last(q2, (4,), "q2_wxyz")
    xp = _xp(q1)
    if xp is not np:
        q1 = q1 / torch.linalg.norm(q1, dim=-1, keepdim=True)
        q2 = q2 / torch.linalg.norm(q2, dim=-1, keepdim=True)
        rel = quat_wxyz_multiply(quat_wxyz_conjugate(q1), q2)
        return 2 * torch.atan2(torch.linalg.norm(rel[..., 1:], dim=-1), rel[..., 0].abs())
    q1 = q1 / np.linalg.norm(q1, axis=-1, keepdims=True)
    q2 = q2 / np.linalg.norm(q2, axis=-1, keepdims=True)
    rel = quat_wxyz_multiply(quat_wxyz_conjugate(q1), q2)
    return 2 * np.arctan2(np.linalg.norm(rel[..., 1:], axis=-1), np.abs(rel[..., 0]))


def axis_angle_to_matrix(axis_angle: Array) -> Array:
    """Rodrigues: rotation vectors (..., 3) [radians * unit axis] -> (..., 3, 3) rotation matrices."""
    v = _as_array(axis_angle)
    _check_last(v, (3,), "axis_angle")
    xp = _xp(v)
    if xp is not np:
        theta = torch.linalg.norm(v, dim=-1, keepdim=True)
        half = theta / 2
        # sin(x/2)/x with its limit 1/2 at 0
        k = torch.where(theta > 1e-8, torch.sin(half) / theta.clamp_min(1e-12), 0.5 - theta**2 / 48)
        q = torch.cat([torch.cos(half), v * k], -1)
    else:
        theta = np.linalg.norm(v, axis=-1, keepdims=True)
        half = theta / 2
        with np.errstate(invalid="ignore", divide="ignore"):
            k = np.where(theta > 1e-8, np.sin(half) / np.maximum(theta, 1e-12), 0.5 - theta**2 / 48)
        q = np.concatenate([np.cos(half), v * k], axis=-1)
    return quat_wxyz_to_matrix(q)


def matrix_to_axis_angle(R: Array) -> Array:
    """Rotation vectors (..., 3) (axis * angle in radians, angle in [0, pi]) of rotation matrices (..., 3, 3)."""
    q = matrix_to_quat_wxyz(R)  # w >= 0, so the angle is in [0, pi]
    xp = _xp(q)
    if xp is not np:
        s = torch.linalg.norm(q[..., 1:], dim=-1, keepdim=True)
        angle = 2 * torch.atan2(s, q[..., :1])
        k = torch.where(s > 1e-8, angle / s.clamp_min(1e-12), 2.0 + 0 * s)
    else:
        s = np.linalg.norm(q[..., 1:], axis=-1, keepdims=True)
        angle = 2 * np.arctan2(s, q[..., :1])
        with np.errstate(invalid="ignore", divide="ignore"):
            k = np.where(s > 1e-8, angle / np.maximum(s, 1e-12), 2.0)
    return q[..., 1:] * k


def random_quat_wxyz(n: int, generator: np.random.Generator | torch.Generator | None = None,
                     dtype=None) -> np.ndarray | torch.Tensor:
    """Uniformly distributed (Haar) random unit quaternions, random sign.

    Args:
        n: number of quaternions.
        generator: a ``numpy.random.Generator`` (returns numpy) or ``torch.Generator`` (returns torch);
            ``None`` uses a fresh numpy generator.
    Returns:
        (n, 4) unit quaternions (w, x, y, z).
    """
    if "torch" in sys.modules and isinstance(generator, sys.modules["torch"].Generator):
        q = torch.randn(n, 4, generator=generator, dtype=dtype or torch.float32)
        return q / torch.linalg.norm(q, dim=-1, keepdim=True)
    rng = generator if generator is not None else np.random.default_rng()
    q = rng.standard_normal((n, 4))
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return q.astype(dtype) if dtype is not None else q


def random_rotation_matrices(n: int, generator: np.random.Generator | torch.Generator | None = None,
                             dtype=None) -> np.ndarray | torch.Tensor:
    """Uniformly distributed (Haar) random rotation matrices, (n, 3, 3); numpy or torch as :func:`random_quat_wxyz`."""
    return quat_wxyz_to_matrix(random_quat_wxyz(n, generator, dtype))


def rotation_about_z(theta_rad: Array) -> Array:
    """Rotation matrices about the z axis (the optical axis of a camera): (...) radians -> (..., 3, 3)."""
    t = _as_array(theta_rad)
    xp = _xp(t)
    c, s = xp.cos(t), xp.sin(t)
    zero, one = c * 0, c * 0 + 1
    rows = [c, -s, zero, s, c, zero, zero, zero, one]
    m = torch.stack(rows, -1) if xp is not np else np.stack(rows, axis=-1)
    return m.reshape(tuple(t.shape) + (3, 3))


DEG = math.pi / 180.0
