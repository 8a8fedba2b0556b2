"""The Image2Sphere head: feature map -> SO(3) Fourier coefficients (an unnormalised log-density over rotations)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from speedpose.errors import ConfigError, ShapeError
from speedpose.geometry.wigner import n_so3_coeffs
from speedpose.models.i2s.grid_signal import SO3GridSignal
from speedpose.models.i2s.layers import S2ToSO3Conv, SO3Activation, SO3Conv, near_identity_rotations
from speedpose.models.i2s.projector import SphereProjector

__all__ = ["I2SHead", "I2SHeadSpec"]


@dataclass(frozen=True)
class I2SHeadSpec:
    """Settings of :class:`I2SHead` (defaults: the I2S reference, SPEEDPLUS.md section 9).

    Experiments build it from their ``model.i2s`` section (:class:`speedpose.pose.config.I2SConfig`) with
    :meth:`~speedpose.pose.config.I2SConfig.to_head_spec`.

    Attributes:
        lmax: maximum degree of the output (6 -> 455 coefficients).
        sphere_channels: channels of the S2 signal after the 1x1 convolution (512).
        hidden_channels: channels of the SO(3) signal between the S2 and SO(3) convolutions (8).
        fmap_hw: feature-map size the projector expects ((7, 7) for 224x224 input to a ResNet).
        proj_level: HEALPix level of the hemisphere sample points (2).
        proj_sigma: Gaussian width of the projection weights in normalised feature-map units (0.2).
        proj_coverage: fraction of the feature map the hemisphere covers (0.9).
        proj_max_angle_deg, proj_taper_angle_deg: hemisphere half-angle (90) and taper start (75), degrees.
        proj_n_subset: random projection points per training step (20; eval uses all of them).
        s2_kernel_level: HEALPix level of the global S2 kernel (1, 48 points).
        act_grid_level: SO(3) grid level of the activation (2, 4,608 rotations).
        so3_kernel_max_angle_deg: radius of the local SO(3) kernel around the identity (22.5).
        train_grid_level: SO(3) grid level of the cross-entropy / start of the mode search (3, 36,864 rotations).
        cond_dim: size of an optional conditioning vector (e.g. a class one-hot) appended to the feature map (0).
    """

    lmax: int = 6
    sphere_channels: int = 512
    hidden_channels: int = 8
    fmap_hw: tuple[int, int] = (7, 7)
    proj_level: int = 2
    proj_sigma: float = 0.2
    proj_coverage: float = 0.9
    proj_max_angle_deg: float = 90.0
    proj_taper_angle_deg: float = 75.0
    proj_n_subset: int | None = 20
    s2_kernel_level: int = 1
    act_grid_level: int = 2
    so3_kernel_max_angle_deg: float = 22.5
    train_grid_level: int = 3
    cond_dim: int = 0

    def __post_init__(self):
        checks = [
            (1 <= self.lmax <= 12, "lmax in [1, 12]"),
            (self.sphere_channels >= 1 and self.hidden_channels >= 1, "channel counts >= 1"),
            (len(self.fmap_hw) == 2 and min(self.fmap_hw) >= 1, "fmap_hw = (H, W) >= 1"),
            (0 <= self.proj_level <= 6 and 0 <= self.s2_kernel_level <= 4, "HEALPix levels in range"),
            (0 <= self.act_grid_level <= 3 and 0 <= self.train_grid_level <= 4, "SO(3) grid levels in range"),
            (self.proj_sigma > 0 and 0 < self.proj_coverage <= 1, "sigma > 0, coverage in (0, 1]"),
            (0 < self.proj_max_angle_deg <= 180, "proj_max_angle_deg in (0, 180]"),
            (self.proj_n_subset is None or self.proj_n_subset >= 1, "proj_n_subset >= 1 or None"),
            (self.cond_dim >= 0, "cond_dim >= 0"),
        ]
        for ok, what in checks:
            if not ok:
                raise ConfigError(f"I2SHeadSpec: expected {what}, got {self}")

    def to_dict(self) -> dict:
        """Plain-data form (for saving next to a run)."""
        return asdict(self)


class I2SHead(nn.Module):
    """Image2Sphere head.

    feature map (B, C, H, W) [+ condition (B, cond_dim)] -> projector -> S2 conv -> SO(3) ReLU -> SO(3) conv
    -> coefficients (B, n_so3_coeffs(lmax)), float32 or the autocast dtype.

    The coefficients define ``f(R) = <coeffs, wigner_features(R)>``, the unnormalised log-density of the rotation
    R = R_cam_body of the object in the frame of the camera that produced the image (p_cam = R p_body + r).
    The head holds the training grid (``self.grid``, level ``train_grid_level``) as buffers for the loss and the
    start of the mode search.  Deterministic in eval mode; no file I/O.

    Args:
        in_channels: C of the encoder feature map.
        config: :class:`I2SHeadSpec`.
    """

    def __init__(self, in_channels: int, config: I2SHeadSpec | None = None):
        super().__init__()
        cfg = config or I2SHeadSpec()
        self.config, self.in_channels = cfg, in_channels
        self.lmax = cfg.lmax
        self.n_coeffs = n_so3_coeffs(cfg.lmax)
        self.projector = SphereProjector(
            in_channels + cfg.cond_dim, cfg.sphere_channels, cfg.lmax, cfg.fmap_hw, level=cfg.proj_level,
            sigma=cfg.proj_sigma, coverage=cfg.proj_coverage, max_angle_rad=math.radians(cfg.proj_max_angle_deg),
            taper_angle_rad=math.radians(cfg.proj_taper_angle_deg), n_subset=cfg.proj_n_subset)
        self.s2_conv = S2ToSO3Conv(cfg.sphere_channels, cfg.hidden_channels, cfg.lmax, cfg.s2_kernel_level)
        self.so3_act = SO3Activation(cfg.lmax, cfg.act_grid_level)
        self.so3_conv = SO3Conv(cfg.hidden_channels, 1, cfg.lmax,
                                near_identity_rotations(math.radians(cfg.so3_kernel_max_angle_deg)))
        self.grid = SO3GridSignal(cfg.train_grid_level, cfg.lmax)
        # A grid value sums n_coeffs terms (the Wigner rows of degree l carry norm 2l+1), so unit-variance output
        # coefficients give logits of std ~sqrt(n_coeffs) (~20 for lmax 6): a confidently wrong start with a
        # cross-entropy of ~100 nats.  Shrinking the last layer's init by 1/sqrt(n_coeffs) starts near uniform.
        with torch.no_grad():
            self.so3_conv.weight.mul_(1.0 / math.sqrt(self.n_coeffs))

    def forward(self, fmap: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) feature map [, (B, cond_dim) condition] -> (B, n_coeffs) Fourier coefficients."""
        if fmap.ndim != 4 or fmap.shape[1] != self.in_channels:
            raise ShapeError(f"feature map: expected (B, {self.in_channels}, H, W), got {tuple(fmap.shape)}")
        if self.config.cond_dim:
            if cond is None or tuple(cond.shape) != (fmap.shape[0], self.config.cond_dim):
                raise ShapeError(f"cond: expected ({fmap.shape[0]}, {self.config.cond_dim}), "
                                 f"got {None if cond is None else tuple(cond.shape)}")
            cond_map = cond.to(fmap.dtype)[:, :, None, None].expand(-1, -1, fmap.shape[2], fmap.shape[3])
            fmap = torch.cat([fmap, cond_map], dim=1)
        elif cond is not None:
            raise ShapeError("cond: this head was built with cond_dim=0 but a condition was given")
        x = self.projector(fmap)
        x = self.s2_conv(x)
        x = self.so3_act(x)
        return self.so3_conv(x)[:, 0]
