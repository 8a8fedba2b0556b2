"""Encoders: feature-map shapes, weights only from local files, clear errors."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import resnet18

from speedpose.errors import ConfigError, InputError, MissingWeightsError
from speedpose.models.encoders import build_encoder, encoder_weights_path


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
