"""Image encoders: torchvision ResNets without pooling and classifier, returning a feature map.

Pretrained ImageNet weights are read only from a local file: the torch hub cache
(``torch.hub.get_dir() / "checkpoints" / <torchvision file name>``) or an explicit path.  Nothing is downloaded, and
asking for pretrained weights that are not there raises :class:`~speedpose.errors.MissingWeightsError` saying which
file goes where; there is never a silent random initialisation.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm

from speedpose.errors import ConfigError, InputError, MissingWeightsError

__all__ = ["ENCODERS", "build_encoder", "encoder_weights_path", "list_encoders"]

# name -> (torchvision constructor, output channels, {weights tag: (file name, URL)})
ENCODERS: dict[str, tuple] = {
    "resnet18": (tvm.resnet18, 512, {"IMAGENET1K_V1": "resnet18-f37072fd.pth"}),
    "resnet34": (tvm.resnet34, 512, {"IMAGENET1K_V1": "resnet34-b627a593.pth"}),
    "resnet50": (tvm.resnet50, 2048, {"IMAGENET1K_V1": "resnet50-0676ba61.pth",
                                      "IMAGENET1K_V2": "resnet50-11ad3fa6.pth"}),
    "resnet101": (tvm.resnet101, 2048, {"IMAGENET1K_V1": "resnet101-63fe2227.pth",
                                        "IMAGENET1K_V2": "resnet101-cd907fc2.pth"}),
}
_URL = "https://download.pytorch.org/models/"


def list_encoders() -> list[str]:
    """Names accepted by :func:`build_encoder`."""
    return sorted(ENCODERS)


def _check_name(name: str) -> None:
    if name not in ENCODERS:
        raise ConfigError(f"encoder: expected one of {', '.join(list_encoders())}, got {name!r}")


def encoder_weights_path(name: str, weights: str = "IMAGENET1K_V1") -> Path:
    """Where the torchvision ImageNet weights of ``name`` must be: ``torch.hub.get_dir()/checkpoints/<file>``."""
    _check_name(name)
    files = ENCODERS[name][2]
    if weights not in files:
        raise ConfigError(f"weights for {name}: expected one of {', '.join(files)}, got {weights!r}")
    return Path(torch.hub.get_dir()) / "checkpoints" / files[weights]


class ResNetFeatures(nn.Module):
    """A torchvision ResNet up to ``layer4``: images (B, 3, H, W) -> feature map (B, C, H/32, W/32).

    Inputs are ImageNet-normalised RGB (grey images repeated over the 3 channels).
    """

    def __init__(self, net: nn.Module, out_channels: int):
        super().__init__()
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def build_encoder(name: str = "resnet18", pretrained: bool | str | Path = False,
                  weights: str = "IMAGENET1K_V1") -> tuple[nn.Module, int]:
    """Build a ResNet feature extractor.

    Args:
        name: resnet18, resnet34, resnet50 or resnet101.
        pretrained: False for a random init (seeded by the global torch seed); True for the ImageNet weights from the
            torch hub cache (see :func:`encoder_weights_path`); or the path of a torchvision state-dict file.
        weights: which torchvision weights file ``pretrained=True`` means (IMAGENET1K_V1; V2 for resnet50/101).
    Returns:
        (module mapping (B, 3, H, W) -> (B, C, H/32, W/32), C): C = 512 for resnet18/34, 2048 for resnet50/101.
    Raises:
        MissingWeightsError: pretrained weights requested but the file is absent.
        InputError: the file is not a state dict of this architecture.
    """
    _check_name(name)
    ctor, channels, files = ENCODERS[name]
    net = ctor(weights=None)
    if pretrained is not False and pretrained is not None:
        if pretrained is True:
            path = encoder_weights_path(name, weights)
            if not path.is_file():
                raise MissingWeightsError(
                    f"ImageNet weights for {name} were requested but {path} does not exist: download "
                    f"{_URL}{files[weights]} on a machine with internet access and copy it to {path} "
                    f"(or pass the file's path, or pretrained=False)")
        else:
            path = Path(pretrained)
            if not path.is_file():
                raise MissingWeightsError(f"encoder weights file {path} does not exist (expected a torchvision "
                                          f"{name} state dict such as {files[weights]})")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for corrupt / non-tensor files
            raise InputError(f"cannot read a torch state dict ({type(exc).__name__}: {exc})", path) from None
        if not isinstance(state, dict):
            raise InputError(f"expected a state dict (mapping of tensors), got {type(state).__name__}", path)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        own = {k for k in net.state_dict() if not k.startswith("fc.")}
        missing, unexpected = sorted(own - set(state)), sorted(set(state) - own)
        if missing or unexpected:
            raise InputError(f"not a {name} state dict: missing keys {missing[:3]}{'...' if len(missing) > 3 else ''}"
                             f", unexpected keys {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}", path)
        try:
            net.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise InputError(f"weights do not fit {name}: {str(exc).splitlines()[-1].strip()}", path) from None
    return ResNetFeatures(net, channels), channels
