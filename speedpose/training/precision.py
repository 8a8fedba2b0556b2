"""Mixed-precision policy: which autocast dtype and whether fp16 loss scaling is needed."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager

import torch

from speedpose.errors import ConfigError


@dataclass(frozen=True)
class Precision:
    """Resolved ``train.amp`` setting.

    Attributes:
        dtype: autocast dtype, or None for full float32.
        device_type: ``"cuda"`` or ``"cpu"``.
        scaler: True when fp16 needs a GradScaler.
    """

    dtype: torch.dtype | None
    device_type: str
    scaler: bool

    @property
    def name(self) -> str:
        return {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self) -> ContextManager:
        """The autocast context of a training step (a no-op when off)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


def resolve_precision(amp: str, device: torch.device) -> Precision:
    """``auto``: bf16 on a CUDA device that supports it, else off; ``fp16`` needs CUDA; ``bf16`` works on CPU."""
    cuda = device.type == "cuda"
    if amp == "auto":
        amp = "bf16" if cuda and torch.cuda.is_bf16_supported() else "off"
    if amp == "off":
        return Precision(None, device.type, False)
    if amp == "bf16":
        return Precision(torch.bfloat16, device.type, False)
    if amp == "fp16":
        if not cuda:
            raise ConfigError("train.amp=fp16 needs a CUDA device; use bf16 or off on CPU")
        return Precision(torch.float16, device.type, True)
    raise ConfigError(f"train.amp={amp!r}: expected auto, bf16, fp16 or off")
