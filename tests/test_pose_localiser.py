"""Localiser targets and decoding: a perfect output decodes to the true (unclipped) box, truncation included."""

import numpy as np
import pytest
import torch

from speedpose.errors import ConfigError
from speedpose.pose.localiser import (
    Localiser,
    boxes_to_full,
    boxes_to_loc,
    decode_boxes,
    localisation_loss,
    make_targets,
)


def _perfect_output(targets, grid_hw):
    b = len(targets["cell"])
    heat = torch.full((b, 1, *grid_hw), -10.0)
    reg = torch.zeros((b, 6, *grid_hw))
    for k in range(b):
        x, y = targets["cell"][k]
        heat[k, 0, y, x] = 10.0
        reg[k, :, y, x] = targets["reg"][k]
    return {"heatmap_logits": heat, "box_reg": reg}


def test_perfect_output_decodes_to_the_unclipped_box():
    unclipped = torch.tensor([[100.0, 50.0, 180.0, 120.0], [-60.0, 100.0, 90.0, 300.0], [300.0, 200.0, 420.0, 290.0]])
    clipped = unclipped.clone()
    clipped[:, 0::2] = clipped[:, 0::2].clamp(0, 383)
    clipped[:, 1::2] = clipped[:, 1::2].clamp(0, 255)
    t = make_targets(clipped, unclipped, (32, 48), 8)
    assert t["heatmap"].shape == (3, 1, 32, 48) and t["heatmap"].max() <= 1
    boxes, centre, score = decode_boxes(_perfect_output(t, (32, 48)), 8)
    torch.testing.assert_close(boxes, unclipped, atol=1e-3, rtol=0)
    # the peak is at the centre of the VISIBLE box, inside the image, also for the truncated one
    assert (centre[:, 0] >= 0).all() and (centre[:, 0] < 384).all()
    assert (score > 0.99).all()


def test_box_mapping_round_trip():
    b = np.array([10.0, 20.0, 1500.0, 1100.0])
    loc = boxes_to_loc(b, (384, 256), (1920, 1200))
    np.testing.assert_allclose(boxes_to_full(loc, (384, 256), (1920, 1200)), b)
    np.testing.assert_allclose(boxes_to_loc(np.array([959.5, 599.5, 0, 0]), (384, 256), (1920, 1200))[:2],
                               [191.5, 127.5])


@pytest.mark.parametrize("backbone, stride", [("scratch", 8), ("tf_efficientnet_lite0", 16)])
def test_network_shapes_and_loss_decreases(backbone, stride):
    torch.manual_seed(0)
    net = Localiser(width=8, stride=stride, backbone=backbone, pretrained=False)
    x = torch.randint(0, 256, (4, 1, 64, 96), dtype=torch.uint8)
    h, w = 64 // stride, 96 // stride
    out = net(x)
    assert out["heatmap_logits"].shape == (4, 1, h, w) and out["box_reg"].shape == (4, 6, h, w)
    unclipped = torch.tensor([[10.0, 10.0, 40.0, 30.0]] * 4)
    t = make_targets(unclipped, unclipped, (h, w), stride)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    first = None
    for _ in range(30):
        loss = localisation_loss(net(x), t)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_lite0_backbone_needs_stride_16():
    with pytest.raises(ConfigError, match="stride 16"):
        Localiser(width=8, stride=8, backbone="tf_efficientnet_lite0", pretrained=False)
