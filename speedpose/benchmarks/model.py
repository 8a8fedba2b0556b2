"""The benchmark model: ResNet encoder + Image2Sphere head, class-conditioned as the I2S reference.

Input: (B, 3, S, S) uint8 RGB images (ModelNet10-SO(3)'s grey renderings repeated over the channels) and (B,)
int64 class ids.  Output: (B, n_coeffs) SO(3) Fourier coefficients of the log-density of ``R_cam_obj`` (object
rotation in the frame of the camera of the image, x right, y down, z forward).  No file I/O (except the encoder
weights file when ``pretrained`` names one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from speedpose.models.encoders import build_encoder
from speedpose.models.i2s import I2SHead, predict_mode, so3_cross_entropy, so3_log_likelihood

#: ImageNet statistics of RGB in [0, 1]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resnet_fmap_side(size: int) -> int:
    """Side of a torchvision ResNet's layer4 output for a (size x size) input: 5 halvings with padding."""
    for _ in range(5):
        size = (size - 1) // 2 + 1
    return size


class BenchmarkModel(nn.Module):
    """ResNet + I2S head (+ one-hot class appended to the feature map).

    Args:
        encoder: torchvision ResNet name.
        pretrained: as :func:`speedpose.models.build_encoder`.
        i2s: the ``model.i2s`` section (:class:`speedpose.pose.config.I2SConfig`).
        image_size: side of the square input [px].
        num_classes: number of classes; the head is conditioned on the one-hot class when ``class_conditioned``.
    """

    def __init__(self, encoder: str, pretrained, i2s, image_size: int, num_classes: int,
                 class_conditioned: bool = True):
        super().__init__()
        self.encoder, channels = build_encoder(encoder, pretrained)
        side = resnet_fmap_side(image_size)
        self.num_classes = num_classes
        self.class_conditioned = class_conditioned
        self.infer_level = i2s.infer_level
        self.head = I2SHead(channels, i2s.to_head_spec((side, side), cond_dim=num_classes if class_conditioned else 0))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images_u8: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) uint8, (B,) int64 -> (B, n_coeffs) coefficients."""
        x = (images_u8.float() / 255.0 - self.mean) / self.std
        cond = F.one_hot(class_ids.long(), self.num_classes).float() if self.class_conditioned else None
        return self.head(self.encoder(x), cond)

    def loss(self, coeffs: torch.Tensor, R_target: torch.Tensor) -> torch.Tensor:
        """The I2S cross-entropy on the head's training grid."""
        return so3_cross_entropy(coeffs, R_target, self.head.grid)

    @torch.no_grad()
    def predict(self, coeffs: torch.Tensor) -> torch.Tensor:
        """Most probable rotation (coarse-to-fine search to ``infer_level`` + refinement). -> (B, 3, 3) float32."""
        R, _ = predict_mode(coeffs, level=max(self.infer_level, self.head.grid.level), grid=self.head.grid)
        return R

    @torch.no_grad()
    def log_likelihood(self, coeffs: torch.Tensor, R_target: torch.Tensor) -> torch.Tensor:
        """Log-density of the true rotations (SO(3) volume pi^2; normaliser on the training grid). -> (B,)."""
        return so3_log_likelihood(coeffs, R_target, self.head.grid)
