"""The rotation estimate of an I2S head's distribution: its mode (coarse-to-fine search) and a confidence."""

from __future__ import annotations

import torch

from speedpose.models.i2s import I2SHead, predict_mode


@torch.no_grad()
def rotation_mode(head: I2SHead, coeffs: torch.Tensor, level: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mode of the distribution given by ``coeffs`` (B, n_coeffs), searched coarse-to-fine down to HEALPix
    ``level`` (5 = 1.875 deg) from the head's training grid and refined on SO(3), with the probability mass within
    15 deg of it as the confidence.

    Returns:
        (R (B, 3, 3) float32, confidence (B,) in [0, 1]).
    """
    return predict_mode(coeffs, level=max(level, head.grid.level), grid=head.grid)
