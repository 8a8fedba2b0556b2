"""HEALPix grids on the unit sphere S2 (nested ordering), full or within a cap around an axis.

Recursion level L means ``nside = 2**L`` and ``12 * 4**L`` equal-area pixels; in the nested ordering the four
children of pixel p at level L are pixels ``4p .. 4p+3`` at level L+1.  Directions are unit vectors in the frame whose
z axis is HEALPix' pole (polar angle theta from +z, azimuth phi from +x towards +y).
"""

from __future__ import annotations

import math

import healpy as hp
import numpy as np
import torch

from speedpose.errors import ShapeError

__all__ = ["s2_healpix_npix", "s2_healpix_angles", "s2_healpix_grid", "s2_healpix_cap"]


def s2_healpix_npix(level: int) -> int:
    """Number of HEALPix pixels at recursion level L: 12 * 4**L."""
    return 12 * 4**level


def _check_level(level: int, name: str = "level") -> None:
    if not isinstance(level, (int, np.integer)) or level < 0 or level > 12:
        raise ShapeError(f"{name}: expected an integer recursion level in [0, 12], got {level!r}")


def s2_healpix_angles(level: int, pix: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Polar and azimuth angles (radians, float64) of nested HEALPix pixel centres.

    Args:
        level: recursion level (nside = 2**level).
        pix: (N,) nested pixel indices; all pixels when None.
    Returns:
        theta (N,) in [0, pi] from +z, phi (N,) in [0, 2 pi).
    """
    _check_level(level)
    nside = 2**level
    if pix is None:
        pix = np.arange(s2_healpix_npix(level))
    theta, phi = hp.pix2ang(nside, np.asarray(pix, dtype=np.int64), nest=True)
    return np.asarray(theta, dtype=np.float64), np.asarray(phi, dtype=np.float64)


def _angles_to_xyz(theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    st = np.sin(theta)
    return np.stack([st * np.cos(phi), st * np.sin(phi), np.cos(theta)], axis=-1)


def s2_healpix_grid(level: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """All pixel centres of the HEALPix grid of recursion level L, nested order.

    Returns:
        (12 * 4**L, 3) unit vectors.
    """
    theta, phi = s2_healpix_angles(level)
    return torch.from_numpy(_angles_to_xyz(theta, phi)).to(dtype)


def s2_healpix_cap(level: int, max_angle_rad: float, axis=(0.0, 0.0, 1.0),
                   dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centres of the level-L HEALPix grid within ``max_angle_rad`` of ``axis`` (inclusive, 1e-9 slack).

    The grid itself is the standard one (pole +z); only the selection depends on ``axis`` (for ``axis = -z`` the cap
    is the south polar cap of the standard grid, with the same points as the north cap mirrored).

    Returns:
        xyz (N, 3) unit vectors, angle (N,) their angles from ``axis`` in radians; N points in nested order.
    """
    a = np.asarray(axis, dtype=np.float64)
    if a.shape != (3,) or not np.isfinite(a).all() or np.linalg.norm(a) == 0:
        raise ShapeError(f"axis: expected a nonzero 3-vector, got {axis!r}")
    a = a / np.linalg.norm(a)
    if not (0 < max_angle_rad <= math.pi):
        raise ShapeError(f"max_angle_rad: expected a value in (0, pi], got {max_angle_rad!r}")
    xyz = s2_healpix_grid(level).numpy()
    ang = np.arccos(np.clip(xyz @ a, -1.0, 1.0))
    keep = ang <= max_angle_rad + 1e-9
    return torch.from_numpy(xyz[keep]).to(dtype), torch.from_numpy(ang[keep]).to(dtype)
