"""Evaluating SO(3) Fourier coefficients on a fixed HEALPix SO(3) grid (the training / start grid)."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from speedpose.errors import ShapeError
from speedpose.geometry.rotations import matrix_to_quat_wxyz
from speedpose.geometry.so3_grids import so3_healpix_rotations, so3_healpix_size, so3_healpix_wigner_features
from speedpose.geometry.wigner import n_so3_coeffs

__all__ = ["SO3GridSignal", "check_coeffs"]


def check_coeffs(coeffs: torch.Tensor, lmax: int) -> None:
    """Raise ShapeError unless ``coeffs`` is (B, n_so3_coeffs(lmax))."""
    n = n_so3_coeffs(lmax)
    if not isinstance(coeffs, torch.Tensor) or coeffs.ndim != 2 or coeffs.shape[1] != n:
        raise ShapeError(f"coeffs: expected shape (B, {n}) for lmax {lmax}, got {tuple(getattr(coeffs, 'shape', ()))}")


@lru_cache(maxsize=2)
def _grid_tensors(level: int, lmax: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CPU float32 (rotations, quaternions, Wigner matrix) of a grid; shared by all modules of the process (the
    tensors are read-only buffers; ``.to(device)`` makes copies)."""
    R64 = so3_healpix_rotations(level)
    wigner = so3_healpix_wigner_features(level, lmax, torch.float32).T.contiguous()  # ~1e-6 accurate
    return R64.float(), matrix_to_quat_wxyz(R64).float(), wigner


class SO3GridSignal(nn.Module):
    """The level-L HEALPix SO(3) grid with its Wigner features as buffers, built at construction.

    Buffers:
        rotations: (N, 3, 3) float32 grid rotations, N = 72 * 8**L.
        quats_wxyz: (N, 4) float32 unit quaternions of the rotations (for nearest-rotation look-ups).
        wigner: (n_coeffs, N) float32 features, so that ``coeffs @ wigner`` is the signal on the grid.

    Memory: 455 * N * 4 bytes (67 MB at level 3, 537 MB at level 4: use coarse-to-fine search above level 3).
    """

    def __init__(self, level: int = 3, lmax: int = 6):
        super().__init__()
        self.level, self.lmax = int(level), int(lmax)
        self.size = so3_healpix_size(level)
        rotations, quats, wigner = _grid_tensors(self.level, self.lmax)
        self.register_buffer("rotations", rotations, persistent=False)
        self.register_buffer("quats_wxyz", quats, persistent=False)
        self.register_buffer("wigner", wigner, persistent=False)

    def logits(self, coeffs: torch.Tensor) -> torch.Tensor:
        """Signal values (unnormalised log-density) on the grid: (B, n_coeffs) -> (B, N) in the buffers' dtype
        (float32 unless the module was converted), autocast off."""
        check_coeffs(coeffs, self.lmax)
        with torch.autocast(coeffs.device.type, enabled=False):
            return coeffs.to(self.wigner.dtype) @ self.wigner

    def nearest(self, R: torch.Tensor) -> torch.Tensor:
        """Index of the nearest grid rotation (exact, by quaternion dot products): (B, 3, 3) -> (B,) int64."""
        if R.ndim != 3 or tuple(R.shape[1:]) != (3, 3):
            raise ShapeError(f"R: expected shape (B, 3, 3), got {tuple(R.shape)}")
        with torch.autocast(R.device.type, enabled=False):
            q = matrix_to_quat_wxyz(R.detach().to(self.quats_wxyz.dtype))
            return (q @ self.quats_wxyz.T).abs().argmax(dim=1)
