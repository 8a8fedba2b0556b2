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
    "so3_healpix_wigner_features",
    "so3_healpix_wigner_table",
    "so3_healpix_factors",
    "so3_healpix_index",
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


def so3_healpix_index(level: int, pix, psi_bin) -> np.ndarray:
    """Nested SO(3) index of (nested HEALPix pixel, in-plane bin) pairs; inverse of :func:`so3_healpix_cells`."""
    _check_level(level)
    pix, psi = np.asarray(pix, dtype=np.int64), np.asarray(psi_bin, dtype=np.int64)
    idx = (pix >> (2 * level)) * 6 + (psi >> level)
    for k in range(1, level + 1):
        a = (pix >> (2 * (level - k))) & 3
        b = (psi >> (level - k)) & 1
        idx = idx * 8 + 2 * a + b
    return idx


def so3_healpix_factors(level: int, lmax: int, pix=None, dtype: torch.dtype = torch.float32
                        ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-pixel and per-bin Wigner-D factors of the grid: ``D^l(R_(p, j)) = P^l_p @ Z^l_j`` with
    ``P_p = D(Rz(phi_p) Ry(theta_p) Rz(-s_p phi_p))`` and ``Z_j = D(Rz(psi_j))``.

    Args:
        pix: (P,) nested HEALPix pixels at nside 2**L (default: all).
    Returns:
        P (list over l of (P, 2l+1, 2l+1)), Z (list over l of (6 * 2**L, 2l+1, 2l+1)).
    """
    from speedpose.geometry.wigner import axis_rotation_blocks

    _check_level(level)
    npsi = 6 * 2**level
    pix = np.arange(12 * 4**level) if pix is None else np.asarray(pix, dtype=np.int64)
    theta, phi = s2_healpix_angles(level, pix)
    base = pix >> (2 * level)
    section = np.where(base < 4, 1.0, np.where(base < 8, 0.0, -1.0))
    theta, phi, shift = (torch.from_numpy(x).to(dtype) for x in (theta, phi, -section * phi))
    psi = (torch.arange(npsi, dtype=torch.float64) + 0.5).to(dtype) * (2 * math.pi / npsi)
    P, Z = [torch.ones(len(pix), 1, 1, dtype=dtype)], [torch.ones(npsi, 1, 1, dtype=dtype)]
    for l in range(1, lmax + 1):
        P.append(axis_rotation_blocks(phi, l, 2) @ axis_rotation_blocks(theta, l, 1)
                 @ axis_rotation_blocks(shift, l, 2))
        Z.append(axis_rotation_blocks(psi, l, 2))
    return P, Z


def so3_healpix_wigner_table(level: int, lmax: int, pix=None, dtype: torch.dtype = torch.float32
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Wigner features of all grid rotations whose pixel is in ``pix`` (default: all pixels), pixel-major.

    Uses :func:`so3_healpix_factors`: each degree block of all (pixel, bin) pairs is one GEMM of the per-pixel and
    per-bin factors (the level-5 grid can be swept in pixel chunks without ever holding its 4.3 GB matrix).

    Returns:
        features (P * 6 * 2**L, n_so3_coeffs(lmax)), index (P * 6 * 2**L,) int64 nested SO(3) indices of the rows.
    """
    npsi = 6 * 2**level
    pix = np.arange(12 * 4**level) if pix is None else np.asarray(pix, dtype=np.int64)
    npix = len(pix)
    P, Z = so3_healpix_factors(level, lmax, pix, dtype)
    out = []
    for l in range(lmax + 1):
        d = 2 * l + 1
        table = P[l].reshape(npix * d, d) @ Z[l].permute(1, 0, 2).reshape(d, npsi * d)  # (npix*d, npsi*d)
        out.append(math.sqrt(d) * table.reshape(npix, d, npsi, d).permute(0, 2, 1, 3).reshape(npix * npsi, d * d))
    index = so3_healpix_index(level, np.repeat(pix, npsi), np.tile(np.arange(npsi), npix))
    return torch.cat(out, dim=1), torch.from_numpy(index)


def so3_healpix_wigner_features(level: int, lmax: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Wigner features of every level-L grid rotation in index order: (72 * 8**L, n_so3_coeffs(lmax))."""
    feats, index = so3_healpix_wigner_table(level, lmax, None, dtype)
    out = torch.empty_like(feats)
    out[index] = feats
    return out
