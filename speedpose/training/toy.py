"""``engine_toy``: a tiny synthetic regression task that exercises every part of the engine.

It is the reference implementation of the :class:`~speedpose.training.task.Task` protocol (tests, benchmarks
and a template for the real tasks).  Data: inputs ``x ~ N(0, I)`` of size ``dim``, targets
``y = W x + noise`` with a fixed random ``W`` (``out_dim x dim``); every training sample gets a fresh random
jitter (an "augmentation") drawn from the global torch and numpy RNGs, so that data-loading determinism is
actually tested.  Model: a two-layer MLP with dropout (tests the training RNG streams).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.utils.data import Dataset

from speedpose.config.sections import ConfigModel, ExperimentConfig


class ToyModelConfig(ConfigModel):
    """``model:`` section of ``engine_toy``."""

    hidden: int = Field(32, ge=1, description="hidden units of the MLP")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout probability after the hidden layer")


class ToyDataConfig(ConfigModel):
    """``data:`` section of ``engine_toy``."""

    num_train: int = Field(256, ge=1, description="training samples")
    num_val: int = Field(64, ge=1, description="validation samples")
    dim: int = Field(8, ge=1, description="input size")
    out_dim: int = Field(2, ge=1, description="target size")
    noise: float = Field(0.05, ge=0, description="std of the label noise (fixed per sample)")
    jitter: float = Field(0.02, ge=0, description="std of the random input jitter drawn per training sample")
    delay_s: float = Field(0.0, ge=0, description="sleep per sample (emulates slow decoding in benchmarks/tests)")
    data_seed: int = Field(1234, ge=0, description="seed of the synthetic data (independent of train.seed)")


class ToyDataset(Dataset):
    """Synthetic regression samples ``{"x": (dim,) float32, "y": (out_dim,) float32}``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, jitter: float, delay_s: float):
        self.x, self.y, self.jitter, self.delay_s = x, y, jitter, delay_s

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self.delay_s:
            time.sleep(self.delay_s)
        x = self.x[index]
        if self.jitter:
            # two RNG sources on purpose: the engine must seed both per sample
            x = x + self.jitter * torch.randn(x.shape) \
                + self.jitter * torch.from_numpy(np.random.standard_normal(x.shape).astype(np.float32))
        return {"x": x, "y": self.y[index]}


class ToyTask:
    """The ``engine_toy`` Task: MSE regression; validation reports ``loss`` (MSE, the best criterion) and ``mae``."""

    best_metric = "loss"
    best_mode = "min"

    def __init__(self, cfg: "ToyExperimentConfig"):
        self.cfg = cfg
        d = cfg.data
        gen = torch.Generator().manual_seed(d.data_seed)
        self.W = torch.randn(d.out_dim, d.dim, generator=gen) / d.dim ** 0.5
        n = d.num_train + d.num_val
        x = torch.randn(n, d.dim, generator=gen)
        y = x @ self.W.T + d.noise * torch.randn(n, d.out_dim, generator=gen)
        self._train = ToyDataset(x[:d.num_train], y[:d.num_train], d.jitter, d.delay_s)
        self._val = ToyDataset(x[d.num_train:], y[d.num_train:], 0.0, 0.0)

    def build_model(self) -> nn.Module:
        d, m = self.cfg.data, self.cfg.model
        return nn.Sequential(nn.Linear(d.dim, m.hidden), nn.ReLU(), nn.Dropout(m.dropout),
                             nn.Linear(m.hidden, d.out_dim))

    def train_dataset(self) -> Dataset:
        return self._train

    def val_dataset(self) -> Dataset:
        return self._val

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pred = model(batch["x"])
        loss = nn.functional.mse_loss(pred.float(), batch["y"])
        return {"loss": loss, "mae": (pred.detach().float() - batch["y"]).abs().mean()}

    def validate(self, model: nn.Module, loader: Any) -> dict[str, float]:
        se, ae, n = 0.0, 0.0, 0
        for batch in loader:
            err = model(batch["x"]).float() - batch["y"]
            se += float((err ** 2).mean(dim=1).sum())
            ae += float(err.abs().mean(dim=1).sum())
            n += err.shape[0]
        return {"loss": se / n, "mae": ae / n}


class ToyExperimentConfig(ExperimentConfig):
    """Schema of ``engine_toy`` configs: the generic sections plus ``model`` and ``data``."""

    task: Literal["engine_toy"] = "engine_toy"
    model: ToyModelConfig = Field(default_factory=ToyModelConfig, description="MLP")
    data: ToyDataConfig = Field(default_factory=ToyDataConfig, description="synthetic data")
