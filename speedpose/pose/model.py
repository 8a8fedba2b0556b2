"""The SPEED+ pose networks.

* ``kind: crop`` (the pipeline): :class:`~speedpose.pose.localiser.Localiser` on the downscaled full frame, and a
  crop network (ResNet encoder shared by an :class:`~speedpose.models.i2s.head.I2SHead` for the rotation in the
  virtual camera and a translation head for ``(du, dv, log(z / z0))``, :mod:`speedpose.pose.crops`).
* ``kind: fullimage`` (the seed's baseline): the whole frame resized to a square, I2S for the rotation in the real
  camera and an MLP on pooled features for the normalised translation.

Inputs are uint8 images; the networks normalise them.  One call of :meth:`PoseModel.forward` runs each network
once.  No file I/O.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from speedpose.models.encoders import build_encoder
from speedpose.models.i2s import I2SConfig, I2SHead, so3_cross_entropy, so3_log_likelihood
from speedpose.models.i2s.grid_signal import SO3GridSignal
from speedpose.pose.config import SpeedplusExperiment
from speedpose.pose.keypoints import KeypointHead
from speedpose.pose.localiser import Localiser, normalise_u8



class CropNet(nn.Module):
    """Shared encoder + I2S rotation head + translation head on square crops.

    Input: (B, 1, S, S) uint8. Output: ``coeffs`` (B, n_coeffs) and ``t`` (B, 3) (+ ``kp_logits`` (B, 11, S/4, S/4)
    and ``kp_vis_logits`` (B, 11) with the keypoint head).
    The translation head sees the spatial feature map (flattened after a 1x1 reduction), not only pooled
    features, since the target offset is a position in the crop.
    """

    def __init__(self, cfg: SpeedplusExperiment, input_size: int):
        super().__init__()
        m = cfg.model
        self.encoder, c = build_encoder(m.encoder, m.pretrained, stride=m.encoder_stride)
        fmap = max(1, -(-input_size // m.encoder_stride))
        i2s = m.i2s
        self.head = I2SHead(c, I2SConfig(lmax=i2s.lmax, sphere_channels=i2s.sphere_channels,
                                         hidden_channels=i2s.hidden_channels, fmap_hw=(fmap, fmap),
                                         proj_level=i2s.proj_level, proj_sigma=i2s.proj_sigma,
                                         train_grid_level=i2s.train_grid_level))
        self.kp_head = KeypointHead(c, self.encoder.pyramid_channels, m.keypoints.width) \
            if m.keypoints.enabled else None
        self.reduce = nn.Sequential(nn.Conv2d(c, 32, 1), nn.ReLU(inplace=True))
        self.trans = nn.Sequential(nn.Flatten(), nn.Linear(32 * fmap * fmap + c, m.translation_hidden),
                                   nn.ReLU(inplace=True), nn.Linear(m.translation_hidden, 3))

    def forward(self, crops_u8: torch.Tensor) -> dict[str, torch.Tensor]:
        x = normalise_u8(crops_u8, 3, self.encoder.input_mean, self.encoder.input_std)
        if self.kp_head is None:
            f, pyramid = self.encoder(x), None
        else:
            f, pyramid = self.encoder.forward_pyramid(x)
        pooled = f.mean(dim=(2, 3))
        t = self.trans[1:](torch.cat([self.reduce(f).flatten(1), pooled], dim=1))
        out = {"coeffs": self.head(f), "t": t}
        if self.kp_head is not None:
            out.update(self.kp_head(f, pyramid))
        return out


class PoseModel(nn.Module):
    """Localiser + crop network (``kind: crop``) or the whole-image baseline (``kind: fullimage``)."""

    def __init__(self, cfg: SpeedplusExperiment):
        super().__init__()
        self.kind = cfg.model.kind
        if self.kind == "crop":
            lc = cfg.model.localiser
            self.localiser = Localiser(lc.width, lc.stride, lc.backbone, lc.pretrained)
            self.net = CropNet(cfg, cfg.data.crop_size)
        else:
            self.localiser = None
            self.net = CropNet(cfg, cfg.data.fullimage_size)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Training forward: every network once. Keys: ``coeffs``, ``t`` (+ ``heatmap_logits``, ``box_reg``)."""
        if self.kind == "crop":
            out = self.net(batch["crop"])
            if "loc_image" in batch:  # carried by a share data.loc_fraction of the samples
                out.update(self.localiser(batch["loc_image"]))
            return out
        return self.net(batch["image"])


def rotation_loss(grid: SO3GridSignal, coeffs: torch.Tensor, R_target: torch.Tensor,
                  target: Literal["grid", "exact"] = "grid") -> torch.Tensor:
    """Rotation loss of (B, n_coeffs) coefficients against (B, 3, 3) labels (in the frame of the network's input)
    on ``grid`` (the head's training grid).

    ``grid``: cross-entropy of the label's nearest cell on the head's training grid (the I2S loss).
    ``exact``: mean negative log-likelihood of the exact label, normaliser on the same grid (it differs from the
    cross-entropy by the constant -log(N / pi^2) when the label sits on a grid rotation).
    """
    if target == "exact":
        return -so3_log_likelihood(coeffs, R_target, grid).mean()
    if target == "grid":
        return so3_cross_entropy(coeffs, R_target, grid)
    raise ValueError(f"rotation loss target: expected 'grid' or 'exact', got {target!r}")
