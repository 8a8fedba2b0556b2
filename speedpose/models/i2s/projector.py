"""Orthographic projection of an image feature map onto a hemisphere of S2 (the I2S "image to sphere" step)."""

from __future__ import annotations

import math

import torch
from torch import nn

from speedpose.errors import ShapeError
from speedpose.geometry.s2_grids import s2_healpix_cap
from speedpose.geometry.wigner import s2_harmonics

__all__ = ["SphereProjector"]


class SphereProjector(nn.Module):
    """Feature map (B, C, H, W) -> S2 signal (B, sphere_channels, (lmax+1)^2) on the hemisphere facing the camera.

    Frame: the camera frame of the image (OpenCV: x right, y down, z forward).  Sample points are the HEALPix
    pixels of ``level`` within ``max_angle`` of -z (the half of the sphere that faces the camera); a point
    s = (sx, sy, sz) is seen at the normalised feature-map position ``(u, v) = coverage * (sx, sy) / max_radius``
    (u along the width, v along the height, both in [-1, 1] across pixel centres).  Rotating the image about its
    centre by theta therefore rotates the sphere signal by Rz(theta), which is how an in-plane rotation acts on the
    SPEED+ pose (R' = Rz(theta) R).

    Each point gathers the 1x1-projected features with a learned spatial weight initialised as a normalised
    Gaussian of width ``sigma`` (normalised coordinates) around its position, times a taper that falls linearly to 0
    between ``taper_angle`` and ``max_angle``.  The signal is ReLU'd and transformed to spherical-harmonic
    coefficients by the (scaled) mean over points.  In training mode a random subset of ``n_subset`` points is used
    (an unbiased estimate of the all-points transform, as a regulariser); in eval mode all points are used, so the
    output is deterministic.

    Args:
        in_channels: C of the feature map (plus the conditioning size, handled by the caller).
        sphere_channels: output channels (the reference uses 512).
        lmax: maximum degree.
        fmap_hw: (H, W) of the feature map (7, 7 for 224x224 ResNet input).
        level: HEALPix level of the sample points (2: about 104 points within 90 degrees).
        sigma, coverage, max_angle_rad, taper_angle_rad: see above.
        n_subset: points per training step (None or >= number of points: all).
    """

    def __init__(self, in_channels: int, sphere_channels: int, lmax: int, fmap_hw: tuple[int, int] = (7, 7),
                 level: int = 2, sigma: float = 0.2, coverage: float = 0.9, max_angle_rad: float = math.pi / 2,
                 taper_angle_rad: float = math.radians(75), n_subset: int | None = 20):
        super().__init__()
        self.fmap_hw = tuple(int(v) for v in fmap_hw)
        self.conv1x1 = nn.Conv2d(in_channels, sphere_channels, kernel_size=1)
        xyz, ang = s2_healpix_cap(level, max_angle_rad, axis=(0.0, 0.0, -1.0))
        max_radius = torch.linalg.norm(xyz[:, :2], dim=1).max()
        u = coverage * xyz[:, 0] / max_radius
        v = coverage * xyz[:, 1] / max_radius
        H, W = self.fmap_hw
        gy = torch.linspace(-1, 1, H, dtype=torch.float64)[:, None, None]
        gx = torch.linspace(-1, 1, W, dtype=torch.float64)[None, :, None]
        weight = torch.exp(-((gx - u) ** 2 + (gy - v) ** 2) / (2 * sigma**2))  # (H, W, P)
        weight = weight / weight.sum(dim=(0, 1), keepdim=True)
        if taper_angle_rad < max_angle_rad:
            weight = weight * ((ang - max_angle_rad) / (taper_angle_rad - max_angle_rad)).clamp(max=1.0)
        self.weight = nn.Parameter(weight.float())
        self.register_buffer("Y", s2_harmonics(xyz, lmax).float(), persistent=False)  # (P, (lmax+1)^2)
        self.register_buffer("points_xyz", xyz.float(), persistent=False)
        self.n_points = len(xyz)
        self.n_subset = n_subset

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        if fmap.ndim != 4 or tuple(fmap.shape[2:]) != self.fmap_hw:
            raise ShapeError(f"feature map: expected (B, C, {self.fmap_hw[0]}, {self.fmap_hw[1]}), "
                             f"got {tuple(fmap.shape)}")
        x = self.conv1x1(fmap)
        weight, Y = self.weight, self.Y
        if self.training and self.n_subset is not None and self.n_subset < self.n_points:
            idx = torch.randperm(self.n_points, device=fmap.device)[: self.n_subset]
            weight, Y = weight[..., idx], Y[idx]
        n = Y.shape[0]
        x = torch.relu(torch.einsum("bchw,hwp->bcp", x, weight))
        # mean over points, scaled like the reference's sum / sqrt(P) when all points are used
        return torch.einsum("bcp,pk->bck", x, Y) * (math.sqrt(self.n_points) / n)
