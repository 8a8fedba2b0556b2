"""Localisation of the spacecraft on the downscaled full frame: a light CenterNet-style network.

Output on a grid of stride ``s`` over the localiser input (``data.loc_size``, e.g. 384x256):

* a heatmap whose peak is the centre of the VISIBLE (clipped) keypoint box, so that the peak is always inside the
  image, even for a truncated spacecraft;
* at every cell, 6 regression channels: the sub-cell offset of the centre (2) and the log distances from the centre
  to the four edges of the UNCLIPPED keypoint box in cells (4), so that a truncated spacecraft gets its whole box
  (extending beyond the frame), which the crop and the depth prior need.

Boxes are (x0, y0, x1, y1) in pixels of the localiser input; :func:`boxes_to_full` maps them to full resolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: grey-level normalisation of the scratch localiser (ImageNet's mean/std averaged over RGB)
GRAY_MEAN, GRAY_STD = 0.449, 0.226


def normalise_u8(x: torch.Tensor, channels: int, mean: float = GRAY_MEAN, std: float = GRAY_STD) -> torch.Tensor:
    """(B, 1, H, W) uint8 -> (B, channels, H, W) float, ``(x / 255 - mean) / std``."""
    x = (x.float() / 255.0 - mean) / std
    return x.expand(-1, channels, -1, -1) if channels != 1 else x


def _conv_bn(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Residual(nn.Module):
    def __init__(self, c: int, dilation: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(c, c, dilation=dilation), nn.Conv2d(c, c, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class Localiser(nn.Module):
    """Heatmap + box network.

    Args:
        width: channels of the first stage of the scratch backbone (doubled at each of its 3 strides); the heads
            have ``4 * width`` channels with either backbone.
        stride: 8 or 16, output stride (16 with the Lite0 backbone).
        backbone: ``scratch`` (a small residual CNN, random init) or ``tf_efficientnet_lite0`` (the ImageNet
            EfficientNet-Lite0 trunk to its stride-16 stage, :func:`speedpose.models.build_encoder`).
        pretrained: ImageNet weights for the Lite0 backbone (as ``build_encoder``'s ``pretrained``).
    Input:  (B, 1, H, W) uint8 grey images (:meth:`forward` normalises them for its backbone).
    Output: dict ``heatmap_logits`` (B, 1, H/s, W/s) and ``box_reg`` (B, 6, H/s, W/s).
    """

    def __init__(self, width: int = 32, stride: int = 8, backbone: str = "scratch", pretrained: bool | str = False):
        super().__init__()
        self.stride = stride
        w = width
        c = 4 * w
        if backbone == "scratch":
            self.input_mean, self.input_std, self.in_channels = GRAY_MEAN, GRAY_STD, 1
            layers = [_conv_bn(1, w, 2), _conv_bn(w, 2 * w, 2), _Residual(2 * w, 1), _conv_bn(2 * w, c, 2),
                      _Residual(c, 1)]
            if stride == 16:
                layers += [_conv_bn(c, 2 * c, 2)]
                c = 2 * c
            layers += [_Residual(c, 2), _Residual(c, 4)]  # dilations: context for boxes larger than the receptive field
        elif backbone == "tf_efficientnet_lite0":
            from speedpose.errors import ConfigError
            from speedpose.models.encoders import build_encoder

            if stride != 16:
                raise ConfigError(f"model.localiser.stride: the Lite0 backbone has stride 16, got {stride}")
            trunk, channels = build_encoder("tf_efficientnet_lite0", pretrained, stride=16)
            self.input_mean, self.input_std, self.in_channels = trunk.input_mean, trunk.input_std, 3
            layers = [trunk, _conv_bn(channels, c), _Residual(c, 2)]
        else:
            raise ValueError(f"localiser backbone: expected 'scratch' or 'tf_efficientnet_lite0', got {backbone!r}")
        self.body = nn.Sequential(*layers)
        self.context = nn.Linear(c, c)  # global context, broadcast to every cell
        self.heat = nn.Sequential(_conv_bn(c, c), nn.Conv2d(c, 1, 1))
        self.reg = nn.Sequential(_conv_bn(c, c), nn.Conv2d(c, 6, 1))
        nn.init.constant_(self.heat[-1].bias, -2.19)  # prior probability 0.1 of a centre (CenterNet)

    def forward(self, x_u8: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.body(normalise_u8(x_u8, self.in_channels, self.input_mean, self.input_std))
        f = f + self.context(f.mean(dim=(2, 3)))[:, :, None, None]
        return {"heatmap_logits": self.heat(f), "box_reg": self.reg(f)}


def make_targets(box_clipped: torch.Tensor, box_unclipped: torch.Tensor, grid_hw: tuple[int, int],
                 stride: int) -> dict[str, torch.Tensor]:
    """Training targets from boxes in localiser-input pixels.

    Args:
        box_clipped, box_unclipped: (B, 4) boxes (x0, y0, x1, y1) [localiser px].
        grid_hw: (H/s, W/s).
    Returns:
        dict ``heatmap`` (B, 1, h, w) Gaussian peaks in [0, 1]; ``cell`` (B, 2) long (x, y) of the centre cell;
        ``reg`` (B, 6) regression target at that cell.
    """
    h, w = grid_hw
    cx = (box_clipped[:, 0] + box_clipped[:, 2]) / 2 / stride
    cy = (box_clipped[:, 1] + box_clipped[:, 3]) / 2 / stride
    ix = cx.floor().clamp(0, w - 1)
    iy = cy.floor().clamp(0, h - 1)
    centre_x, centre_y = cx, cy
    eps = 1e-3
    reg = torch.stack([cx - ix, cy - iy,
                       torch.log((centre_x - box_unclipped[:, 0] / stride).clamp_min(eps)),
                       torch.log((centre_y - box_unclipped[:, 1] / stride).clamp_min(eps)),
                       torch.log((box_unclipped[:, 2] / stride - centre_x).clamp_min(eps)),
                       torch.log((box_unclipped[:, 3] / stride - centre_y).clamp_min(eps))], dim=1)
    size = torch.stack([box_clipped[:, 2] - box_clipped[:, 0], box_clipped[:, 3] - box_clipped[:, 1]], 1) / stride
    sigma = (size.min(dim=1).values / 6).clamp(min=0.8)
    ys = torch.arange(h, dtype=cx.dtype, device=cx.device)[None, :, None]
    xs = torch.arange(w, dtype=cx.dtype, device=cx.device)[None, None, :]
    heat = torch.exp(-((xs - ix[:, None, None]) ** 2 + (ys - iy[:, None, None]) ** 2) / (2 * sigma[:, None, None] ** 2))
    return {"heatmap": heat[:, None], "cell": torch.stack([ix, iy], 1).long(), "reg": reg}


def localisation_loss(out: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """CenterNet focal loss on the heatmap + L1 on the regression at the true centre cell. Scalar."""
    logits = out["heatmap_logits"].float()
    gt = targets["heatmap"]
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = gt >= 0.999
    # at the peak: -(1-p)^2 log p; elsewhere: -(1-gt)^4 p^2 log(1-p)
    pos_loss = -((1 - p) ** 2 * torch.log(p))[pos].sum()
    neg_loss = -(((1 - gt) ** 4) * p ** 2 * torch.log(1 - p))[~pos].sum()
    n = max(int(pos.sum()), 1)
    b = torch.arange(len(targets["cell"]), device=logits.device)
    reg = out["box_reg"].float()[b, :, targets["cell"][:, 1], targets["cell"][:, 0]]
    return (pos_loss + neg_loss) / n + F.l1_loss(reg, targets["reg"])


@torch.no_grad()
def decode_boxes(out: dict[str, torch.Tensor], stride: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boxes from the network output (the heatmap's maximum).

    Returns:
        (unclipped boxes (B, 4), visible-centre (B, 2), peak score (B,)), in localiser-input pixels.
    """
    heat = out["heatmap_logits"].float()
    bsz, _, h, w = heat.shape
    flat = heat.view(bsz, -1)
    score, idx = flat.max(dim=1)
    iy, ix = idx // w, idx % w
    b = torch.arange(bsz, device=heat.device)
    reg = out["box_reg"].float()[b, :, iy, ix]
    cx = ix.to(reg.dtype) + reg[:, 0]
    cy = iy.to(reg.dtype) + reg[:, 1]
    d = torch.exp(reg[:, 2:].clamp(max=math.log(4 * max(h, w))))
    boxes = torch.stack([cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]], 1) * stride
    return boxes, torch.stack([cx, cy], 1) * stride, torch.sigmoid(score)


def _rescale_boxes(boxes, src_size: tuple[int, int], dst_size: tuple[int, int]):
    """(..., 4) boxes from an image of ``src_size`` (W, H) to one of ``dst_size`` (pixel-centre convention)."""
    sx, sy = dst_size[0] / src_size[0], dst_size[1] / src_size[1]
    out = boxes.clone() if isinstance(boxes, torch.Tensor) else boxes.copy()
    out[..., 0::2] = (boxes[..., 0::2] + 0.5) * sx - 0.5
    out[..., 1::2] = (boxes[..., 1::2] + 0.5) * sy - 0.5
    return out


def boxes_to_full(boxes, loc_size: tuple[int, int], full_size: tuple[int, int]):
    """Map (..., 4) boxes from localiser-input pixels to full-resolution pixels (pixel-centre convention)."""
    return _rescale_boxes(boxes, loc_size, full_size)


def boxes_to_loc(boxes, loc_size: tuple[int, int], full_size: tuple[int, int]):
    """Inverse of :func:`boxes_to_full`."""
    return _rescale_boxes(boxes, full_size, loc_size)
