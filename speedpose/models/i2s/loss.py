"""Training loss and likelihood of SO(3) Fourier coefficients on a HEALPix SO(3) grid."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from speedpose.errors import ShapeError
from speedpose.geometry.wigner import wigner_features
from speedpose.models.i2s.grid_signal import SO3GridSignal, check_coeffs

__all__ = ["so3_cross_entropy", "so3_log_likelihood", "LOG_SO3_VOLUME"]

LOG_SO3_VOLUME = math.log(math.pi**2)
"""log of the volume of SO(3) in the measure of Implicit-PDF / I2S likelihoods (pi^2; the uniform density is
1 / pi^2, log-likelihood -2.29)."""


def _check_R(R: torch.Tensor, B: int) -> None:
    if not isinstance(R, torch.Tensor) or tuple(R.shape) != (B, 3, 3):
        raise ShapeError(f"R_target: expected shape ({B}, 3, 3), got {tuple(getattr(R, 'shape', ()))}")


def so3_cross_entropy(coeffs: torch.Tensor, R_target: torch.Tensor, grid: SO3GridSignal,
                      n_sample: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean cross-entropy of the softmax over grid rotations against the grid rotation nearest to the target.

    Args:
        coeffs: (B, n_coeffs) output of the head (any float dtype; computed in float32, autocast off).
        R_target: (B, 3, 3) true rotations, same frame as the head's output.
        grid: the grid (the head's ``grid``, level 3 as the reference; a finer SO3GridSignal works too).
        n_sample: if set, a sampled softmax: the target cell plus ``n_sample`` random grid cells shared by the batch
            (cells equal to a sample's target are masked out), drawn with ``generator`` (or the global RNG).
    Returns:
        () scalar loss in nats.
    """
    check_coeffs(coeffs, grid.lmax)
    _check_R(R_target, coeffs.shape[0])
    target = grid.nearest(R_target)
    if n_sample is None or n_sample >= grid.size:
        return F.cross_entropy(grid.logits(coeffs), target)
    idx = torch.randperm(grid.size, generator=generator, device="cpu")[:n_sample].to(coeffs.device)
    with torch.autocast(coeffs.device.type, enabled=False):
        c = coeffs.to(grid.wigner.dtype)
        pos = (c * grid.wigner[:, target].T).sum(dim=1, keepdim=True)  # (B, 1)
        neg = c @ grid.wigner[:, idx]  # (B, n_sample)
        neg = neg.masked_fill(idx[None, :] == target[:, None], float("-inf"))
        logits = torch.cat([pos, neg], dim=1)
        return F.cross_entropy(logits, torch.zeros(len(c), dtype=torch.long, device=c.device))


def so3_log_likelihood(coeffs: torch.Tensor, R_target: torch.Tensor, grid: SO3GridSignal,
                       at_nearest: bool = False) -> torch.Tensor:
    """Log-likelihood of the true rotations under the predicted densities (per sample).

    The density is ``exp f(R) / Z`` with the normaliser ``Z = (pi^2 / N) sum_i exp f(R_i)`` over the grid (a
    quadrature of the integral over SO(3) of volume pi^2; the HEALPix cells have equal volume).  By default f is
    evaluated at the exact target; ``at_nearest=True`` evaluates it at the nearest grid rotation instead (the
    reference's histogram-style likelihood ``log(p_i N / pi^2)``).

    Args:
        coeffs: (B, n_coeffs).
        R_target: (B, 3, 3).
        grid: the grid used for the normaliser (finer is more accurate for peaked densities).
    Returns:
        (B,) log-likelihoods (float32); a uniform density gives -log(pi^2) = -2.289.
    """
    check_coeffs(coeffs, grid.lmax)
    _check_R(R_target, coeffs.shape[0])
    logits = grid.logits(coeffs)
    with torch.autocast(coeffs.device.type, enabled=False):
        c = coeffs.to(logits.dtype)
        if at_nearest:
            f_true = logits.gather(1, grid.nearest(R_target)[:, None])[:, 0]
        else:
            f_true = (c * wigner_features(R_target.to(logits.dtype), grid.lmax)).sum(dim=1)
        log_z = torch.logsumexp(logits, dim=1) - math.log(grid.size) + LOG_SO3_VOLUME
        return f_true - log_z
