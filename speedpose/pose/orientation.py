"""The rotation estimate of an I2S head's distribution: its mode and a confidence."""

from __future__ import annotations

import torch

from speedpose.models.i2s.head import I2SHead


@torch.no_grad()
def rotation_mode(head: I2SHead, coeffs: torch.Tensor, level: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mode of the distribution given by ``coeffs`` (B, n_coeffs) and the probability of its grid cell.

    Returns:
        (R (B, 3, 3) float32, confidence (B,) in [0, 1]).
    """
    logits = head.grid.logits(coeffs)
    prob = torch.softmax(logits, dim=1)
    conf, idx = prob.max(dim=1)
    return head.grid.rotations[idx], conf
