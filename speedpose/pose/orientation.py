"""The rotation estimate of an I2S head's distribution: its mode (coarse-to-fine search) and a confidence."""

from __future__ import annotations

import math

import numpy as np
import torch

from speedpose.geometry.rotations import matrix_to_quat_wxyz
from speedpose.models.i2s import I2SHead, predict_mode, refine_mode, rotate_coeffs

#: grid cells (highest logits first) searched for the other modes
ALTERNATIVE_POOL = 256


@torch.no_grad()
def rotation_mode(head: I2SHead, coeffs: torch.Tensor, level: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mode of the distribution given by ``coeffs`` (B, n_coeffs), searched coarse-to-fine down to HEALPix
    ``level`` (5 = 1.875 deg) from the head's training grid and refined on SO(3), with the probability mass within
    15 deg of it as the confidence.

    Returns:
        (R (B, 3, 3) float32, confidence (B,) in [0, 1]).
    """
    return predict_mode(coeffs, level=max(level, head.grid.level), grid=head.grid)


def mean_over_views(coeffs: torch.Tensor, R_cam_virt: np.ndarray) -> torch.Tensor:
    """The mean of V views' log-densities (their geometric mean, renormalised: the mode of their product, and about
    the sharpness of one view, as the views are far from independent), in the first view's frame: view ``v``
    predicts the rotation in its own virtual camera, ``R_virt_v = Q_v R_virt_0`` with ``Q_v = R_cam_virt_v^T
    R_cam_virt_0``, so its coefficients are re-expressed by :func:`rotate_coeffs`.

    Args:
        coeffs: (V, B, n_coeffs) each view's head output.
        R_cam_virt: (V, B, 3, 3) each view's virtual-camera rotation (virtual -> real camera).
    Returns:
        (B, n_coeffs) float32, a distribution of the rotation in view 0's virtual camera.
    """
    R = torch.from_numpy(np.asarray(R_cam_virt, dtype=np.float64))
    Q = R.transpose(-1, -2) @ R[:1]  # (V, B, 3, 3)
    return torch.stack([rotate_coeffs(c.float(), q) for c, q in zip(coeffs, Q)]).mean(dim=0)


@torch.no_grad()
def rotation_alternatives(head: I2SHead, coeffs: torch.Tensor, R_mode: torch.Tensor, k: int,
                          min_separation_deg: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``k`` other modes of each distribution: greedily, the highest cells of the head's training grid that
    lie at least ``min_separation_deg`` from the mode and from each other (among its :data:`ALTERNATIVE_POOL` best
    cells), each refined on SO(3) (for the near-symmetric Tango, typically the 180-deg flip of the body).

    Args:
        coeffs: (B, n_coeffs); R_mode: (B, 3, 3) the modes (:func:`rotation_mode`).
    Returns:
        (R (B, k, 3, 3) float64, gap (B, k): the alternative's grid logit minus the best grid logit [nats, <= 0];
        NaN rows where fewer than ``k`` cells are far enough).
    """
    grid = head.grid
    logits = grid.logits(coeffs).float()
    top_val, top_idx = logits.topk(min(ALTERNATIVE_POOL, logits.shape[1]), dim=1)
    q_grid = grid.quats_wxyz.float()
    q_mode = matrix_to_quat_wxyz(R_mode.detach().float().to(q_grid.device))
    cos_half = math.cos(math.radians(min_separation_deg) / 2)  # |<q1, q2>| = cos(angle / 2)
    B = coeffs.shape[0]
    R = np.full((B, k, 3, 3), np.nan)
    gap = np.full((B, k), np.nan)
    q_top = q_grid[top_idx]  # (B, P, 4)
    near_mode = ((q_top @ q_mode[:, :, None]).squeeze(2).abs() >= cos_half).cpu().numpy()  # (B, P)
    near = ((q_top @ q_top.transpose(1, 2)).abs() >= cos_half).cpu().numpy()  # (B, P, P)
    top_val, top_idx = top_val.cpu().numpy(), top_idx.cpu().numpy()
    picks: list[tuple[int, int, int]] = []  # (b, slot, grid cell)
    for b in range(B):
        taken: list[int] = []  # positions in the top list
        for j in np.flatnonzero(~near_mode[b]):
            if not near[b, j, taken].any():
                picks.append((b, len(taken), int(top_idx[b, j])))
                gap[b, len(taken)] = top_val[b, j] - top_val[b, 0]
                taken.append(j)
                if len(taken) == k:
                    break
    if picks:
        rows = torch.tensor([b for b, _, _ in picks], device=coeffs.device)
        start = grid.rotations[torch.tensor([i for _, _, i in picks], device=grid.rotations.device)]
        refined = refine_mode(coeffs[rows], start.to(coeffs.device).float()).double().cpu().numpy()
        for (b, slot, _), Rb in zip(picks, refined):
            R[b, slot] = Rb
    return R, gap
