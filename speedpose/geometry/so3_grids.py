"""The HEALPix grid on SO(3) (Implicit-PDF / Image2Sphere style) with a fully nested hierarchy.

Level L has ``72 * 8**L`` rotations: the ``12 * 4**L`` nested HEALPix pixels (nside = 2**L) for the direction of the
rotated z axis times ``6 * 2**L`` in-plane angles.  A cell is a pair (pixel p, in-plane bin j); its rotation is

    R = Rz(phi_p) @ Ry(theta_p) @ Rz(psi_j - s_p * phi_p),   psi_j = (j + 1/2) * 2 pi / (6 * 2**L)

so ``R @ e_z`` is the pixel centre (theta_p, phi_p) and psi is the in-plane angle.  ``s_p`` is +1 for pixels of the
four northern HEALPix base pixels, 0 for the four equatorial ones and -1 for the four southern ones: the in-plane
angle is then measured in a frame that is smooth at the pole of the base pixel (plain ZYZ Euler angles, as the
Implicit-PDF and I2S grids use, make all rotations with equal phi + psi coincide at the pole, which puts grid points
of neighbouring pixels out of step).  Because ``s_p`` is constant on each base pixel, the in-plane coordinate is a
fixed function of R on every base-pixel region, so the cells still partition SO(3) exactly at every level.
The in-plane bins are centred in their intervals so that the two child bins split the parent bin evenly.

Indices are nested: cell ``i`` at level L has the 8 children ``8 i .. 8 i + 7`` at level L + 1 (4 child pixels
times 2 child in-plane bins) and the parent ``i // 8``; the children partition the parent cell.  With the section
above the parent is the nearest level-L rotation of 100% (levels 0-1) and 99% (level 2) of the children, and a
child is at most 10.1 degrees from its parent at level 2 (26.2 with plain Euler angles).  The grid spacing
(in-plane step) is ``60 / 2**L`` degrees: 7.5 at level 3, 1.875 at level 5.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from speedpose.errors import ShapeError
from speedpose.geometry.rotations import matrix_to_quat_wxyz
from speedpose.geometry.s2_grids import s2_healpix_angles

__all__ = [
    "so3_healpix_size",
    "so3_healpix_spacing_deg",
    "so3_healpix_cells",
    "so3_healpix_euler_zyz",
    "so3_healpix_rotations",
    "so3_children",
    "so3_parent",
    "so3_nearest_index",
    "euler_zyz_to_matrix",
]

MAX_NEAREST_LEVEL = 5


def so3_healpix_size(level: int) -> int:
    """Number of rotations at recursion level L: 72 * 8**L (36,864 at 3; 2,359,296 at 5)."""
    _check_level(level)
    return 72 * 8**level


def so3_healpix_spacing_deg(level: int) -> float:
    """In-plane angular step of level L in degrees, 60 / 2**L (the usual 'resolution' of the grid)."""
    return 60.0 / 2**level


def _check_level(level: int) -> None:
    if not isinstance(level, (int, np.integer)) or isinstance(level, bool) or not 0 <= level <= 10:
        raise ShapeError(f"level: expected an integer recursion level in [0, 10], got {level!r}")


def _as_index(level: int, index) -> np.ndarray:
    n = so3_healpix_size(level)
    if index is None:
        return np.arange(n, dtype=np.int64)
    idx = index.detach().cpu().numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ShapeError(f"index: expected values in [0, {n}) for level {level}, got [{idx.min()}, {idx.max()}]")
    return idx


def so3_healpix_cells(level: int, index=None) -> tuple[np.ndarray, np.ndarray]:
    """Split nested SO(3) indices into (nested HEALPix pixel at nside 2**L, in-plane bin in [0, 6 * 2**L)).

    Args:
        level: recursion level L.
        index: (...) integer indices in [0, 72 * 8**L); all of them when None.
    Returns:
        pix (...), psi_bin (...) int64 numpy arrays.
    """
    _check_level(level)
    idx = _as_index(level, index)
    base = idx >> (3 * level)
    pix, psi = base // 6, base % 6
    for k in range(1, level + 1):
        bits = (idx >> (3 * (level - k))) & 7
        pix = 4 * pix + (bits >> 1)
        psi = 2 * psi + (bits & 1)
    return pix, psi


def so3_healpix_euler_zyz(level: int, index=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ZYZ Euler angles (phi, theta, psi), radians float64, of grid rotations ``Rz(phi) Ry(theta) Rz(psi)``.

    ``psi`` here is the Euler angle, i.e. the in-plane bin centre minus ``s_p * phi`` (see the module docstring).
    """
    pix, psi_bin = so3_healpix_cells(level, index)
    shape = pix.shape
    pix = pix.reshape(-1)
    theta, phi = s2_healpix_angles(level, pix)
    base = pix >> (2 * level)
    section = np.where(base < 4, 1.0, np.where(base < 8, 0.0, -1.0))
    psi = (psi_bin.reshape(-1) + 0.5) * (2 * math.pi / (6 * 2**level)) - section * phi
    return phi.reshape(shape), theta.reshape(shape), psi.reshape(shape)


def euler_zyz_to_matrix(phi, theta, psi) -> torch.Tensor:
    """``Rz(phi) @ Ry(theta) @ Rz(psi)`` for angles in radians (arrays or tensors of the same shape (...)).

    Returns:
        (..., 3, 3) float64 torch tensor (or the input tensor dtype).
    """
    phi, theta, psi = (x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float64))
                       for x in (phi, theta, psi))
    ca, sa, cb, sb, cc, sc = phi.cos(), phi.sin(), theta.cos(), theta.sin(), psi.cos(), psi.sin()
    rows = [
        ca * cb * cc - sa * sc, -ca * cb * sc - sa * cc, ca * sb,
        sa * cb * cc + ca * sc, -sa * cb * sc + ca * cc, sa * sb,
        -sb * cc, sb * sc, cb,
    ]
    return torch.stack(rows, -1).reshape(tuple(phi.shape) + (3, 3))


def so3_healpix_rotations(level: int, index=None, dtype: torch.dtype = torch.float64,
                          device=None) -> torch.Tensor:
    """Rotation matrices of the level-L SO(3) grid.

    Args:
        level: recursion level L.
        index: (...) nested indices (numpy or torch); all 72 * 8**L rotations when None.
    Returns:
        (..., 3, 3) rotation matrices (computed in float64, then cast).
    """
    phi, theta, psi = so3_healpix_euler_zyz(level, index)
    return euler_zyz_to_matrix(phi, theta, psi).to(dtype=dtype, device=device)


def so3_children(index: torch.Tensor) -> torch.Tensor:
    """Indices at level L+1 of the 8 children of cells at level L: (...) -> (..., 8), ``8 i + [0..7]``."""
    return index[..., None] * 8 + torch.arange(8, device=index.device, dtype=index.dtype)


def so3_parent(index: torch.Tensor) -> torch.Tensor:
    """Index at level L-1 of the parent of cells at level L: ``i // 8``."""
    return torch.div(index, 8, rounding_mode="floor")


@lru_cache(maxsize=4)
def _grid_quats(level: int) -> torch.Tensor:
    return matrix_to_quat_wxyz(so3_healpix_rotations(level)).to(torch.float32)


def so3_nearest_index(R: torch.Tensor, level: int, chunk: int = 1 << 18) -> torch.Tensor:
    """Index of the nearest (geodesic) level-L grid rotation of each rotation R; exact brute force.

    Compares unit quaternions (|<q, q_i>| is monotone in the geodesic angle) chunk by chunk, so the memory is
    ``len(R) * chunk`` floats; the grid quaternions of the level are cached (level 5: 38 MB).

    Args:
        R: (..., 3, 3) rotation matrices.
        level: recursion level L <= 5.
    Returns:
        (...) int64 indices on R's device.
    """
    if not isinstance(R, torch.Tensor) or R.ndim < 2 or tuple(R.shape[-2:]) != (3, 3):
        raise ShapeError(f"R: expected a torch tensor of shape (..., 3, 3), got {getattr(R, 'shape', R)!r}")
    _check_level(level)
    if level > MAX_NEAREST_LEVEL:
        raise ShapeError(f"level: brute-force nearest search supports levels <= {MAX_NEAREST_LEVEL}, got {level}")
    q = matrix_to_quat_wxyz(R.detach().to(torch.float64)).reshape(-1, 4).to(torch.float32)
    grid = _grid_quats(level).to(R.device)
    best_val = torch.full((q.shape[0],), -1.0, device=R.device)
    best_idx = torch.zeros(q.shape[0], dtype=torch.int64, device=R.device)
    for start in range(0, grid.shape[0], chunk):
        val, idx = (q.to(R.device) @ grid[start:start + chunk].T).abs().max(dim=1)
        better = val > best_val
        best_val = torch.where(better, val, best_val)
        best_idx = torch.where(better, idx + start, best_idx)
    return best_idx.reshape(R.shape[:-2])
