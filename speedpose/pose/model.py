"""The SPEED+ pose networks, shared by every model kind (:mod:`speedpose.pose.kinds`).

* :class:`PoseNet`: an image encoder shared by an :class:`~speedpose.models.i2s.head.I2SHead` for the rotation and a
  translation head (+ optionally a :class:`~speedpose.pose.keypoints.KeypointHead`), on square grey images: the
  virtual-camera crops of the ``crop`` kind, or the whole frame resized to a square for the ``fullimage`` kind.
* :class:`PoseModel`: what a kind trains: a ``net`` (a :class:`PoseNet`) and, for a kind that finds the spacecraft
  first, a ``localiser`` (:class:`~speedpose.pose.localiser.Localiser`).

Inputs are uint8 images; the networks normalise them.  One call of :meth:`PoseModel.forward` runs each network
once.  No file I/O.  The attribute names are the checkpoints' state-dict keys (``localiser.*``, ``net.encoder.*``,
``net.head.*``, ``net.kp_head.*``, ``net.reduce.*``, ``net.trans.*``): renaming one breaks every saved run.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

from speedpose.models.encoders import build_encoder, freeze_to_stride
from speedpose.models.i2s import I2SHead, so3_cross_entropy, so3_log_likelihood
from speedpose.models.i2s.grid_signal import SO3GridSignal
from speedpose.pose.config import I2SConfig, ModelConfig
from speedpose.pose.keypoints import KeypointHead
from speedpose.pose.localiser import Localiser, normalise_u8


class PoseNet(nn.Module):
    """Shared encoder + I2S rotation head + translation head (+ keypoint head) on square grey images.

    Input: (B, 1, S, S) uint8. Output: ``coeffs`` (B, n_coeffs), the rotation distribution in the frame of the
    camera of the input, and ``t`` (B, 3), the translation in the encoding of the model kind (+ ``kp_logits``
    (B, 11, S/stride, S/stride) and ``kp_vis_logits`` (B, 11) with the keypoint head).
    The translation head sees the spatial feature map (flattened after a 1x1 reduction), not only pooled
    features, since where the spacecraft is in the image is part of the answer.

    Args:
        input_size: S [px].
        encoder, pretrained, encoder_stride: the image encoder (:func:`speedpose.models.encoders.build_encoder`).
        frozen_stride: the encoder's layers up to this output stride get no gradient
            (:func:`speedpose.models.encoders.freeze_to_stride`; 0 = none).
        i2s: the ``model.i2s`` section; the head is built for this encoder's feature map of S.
        translation_hidden: hidden units of the translation head.
        keypoint_width: channels of the keypoint head's upsampling layers; None = no keypoint head.
        keypoint_stride: output stride of the keypoint heatmaps [px], 4 or 2.
    """

    def __init__(self, input_size: int, encoder: str, pretrained: bool | str, encoder_stride: int, i2s: I2SConfig,
                 translation_hidden: int, keypoint_width: int | None = None, keypoint_stride: int = 4,
                 frozen_stride: int = 0):
        super().__init__()
        self.encoder, c = build_encoder(encoder, pretrained, stride=encoder_stride)
        freeze_to_stride(self.encoder, frozen_stride)
        fmap = max(1, -(-input_size // encoder_stride))
        self.head = I2SHead(c, i2s.to_head_spec((fmap, fmap)))
        self.kp_head = KeypointHead(c, self.encoder.pyramid_channels, keypoint_width, keypoint_stride) \
            if keypoint_width is not None else None
        self.reduce = nn.Sequential(nn.Conv2d(c, 32, 1), nn.ReLU(inplace=True))
        # index 0 holds no weights: it keeps the checkpoint keys of the linear layers at trans.1.* and trans.3.*
        self.trans = nn.Sequential(nn.Identity(), nn.Linear(32 * fmap * fmap + c, translation_hidden),
                                   nn.ReLU(inplace=True), nn.Linear(translation_hidden, 3))

    def forward(self, images_u8: torch.Tensor) -> dict[str, torch.Tensor]:
        x = normalise_u8(images_u8, 3, self.encoder.input_mean, self.encoder.input_std)
        if self.kp_head is None:
            f, pyramid = self.encoder(x), None
        else:
            f, pyramid = self.encoder.forward_pyramid(x)
        pooled = f.mean(dim=(2, 3))
        t = self.trans(torch.cat([self.reduce(f).flatten(1), pooled], dim=1))
        out = {"coeffs": self.head(f), "t": t}
        if self.kp_head is not None:
            out.update(self.kp_head(f, pyramid))
        return out


def build_pose_net(model: ModelConfig, input_size: int) -> PoseNet:
    """The :class:`PoseNet` the ``model:`` section describes, for square inputs of ``input_size`` [px]."""
    return PoseNet(input_size, model.encoder, model.pretrained, model.encoder_stride, model.i2s,
                   model.translation_hidden, model.keypoints.width if model.keypoints.enabled else None,
                   model.keypoints.stride, model.freeze_to_stride)


class PoseModel(nn.Module):
    """The networks of a model kind: ``net`` on the square images of ``batch[input_key]`` and, when the kind has
    one, ``localiser`` on the downscaled full frames of ``batch["loc_image"]``.

    Args:
        net: the pose network.
        localiser: the localisation network, or None.
        input_key: the key of a training batch that holds ``net``'s (B, 1, S, S) uint8 input.
    """

    def __init__(self, net: PoseNet, localiser: Localiser | None = None, input_key: str = "crop"):
        super().__init__()
        self.localiser = localiser  # registered first: the order of the parameters (and of optimiser states)
        self.net = net
        self.input_key = input_key

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Training forward: every network once. Keys: ``coeffs``, ``t`` (+ the keypoint head's, + ``heatmap_logits``
        and ``box_reg`` when the batch carries localiser samples)."""
        out = self.net(batch[self.input_key])
        if self.localiser is not None and "loc_image" in batch:  # a share data.loc_fraction of the samples
            out.update(self.localiser(batch["loc_image"]))
        return out

    def net_outputs(self, images_u8: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        """``net`` on (B, S, S) uint8 images (no ``torch.no_grad`` here: the caller decides)."""
        return self.net(torch.from_numpy(np.ascontiguousarray(images_u8)[:, None]).to(device))


def unwrap(model: nn.Module) -> PoseModel:
    """The :class:`PoseModel` of a model or of a DDP-wrapped one."""
    return model.module if hasattr(model, "module") else model


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
