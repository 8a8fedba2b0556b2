"""The ``Task`` protocol: what a pipeline (SPEED+, ModelNet10-SO(3), PASCAL3D+) implements to use :func:`fit`.

Required::

    build_model() -> nn.Module                       # on CPU; the engine moves it to the device
    train_dataset() -> Dataset                       # map-style; items are whatever collate expects
    val_dataset() -> Dataset | None                  # None: no validation (and no best.pt); rank 0 only
    training_step(model, batch) -> dict[str, Tensor] # ONE forward pass; "loss" (scalar) + scalars to log
    validate(model, loader) -> dict[str, float]      # model in eval mode under no_grad; batches on the device

Optional attributes/methods (looked up with ``getattr``)::

    best_metric: str = "loss"                        # key of validate()'s dict that selects best.pt
    best_mode: "min" | "max" = "min"                 # lower is better by default
    collate(samples: list) -> batch                  # default: torch default_collate
    param_groups(model) -> list[dict]                # optimiser parameter groups (e.g. a lower encoder lr:
                                                     # {"params": [...], "lr_scale": 0.1}); default: all params

``training_step`` receives the model as the engine runs it (DDP-wrapped under torchrun: call ``model(...)``,
never ``model.module(...)``, so that gradients are synchronised) and a batch already moved to the device; it runs
under autocast when mixed precision is on.  ``validate`` receives the bare model and an iterable of batches
already on the device; it runs on rank 0 only, without autocast, with the training RNG states preserved.
Datasets draw their randomness from python ``random``, ``numpy.random`` or ``torch`` global RNGs (seeded per
sample by the engine) or implement ``reseed(sample_seed: int)`` for transforms with their own generator.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from torch.utils.data import Dataset


@runtime_checkable
class Task(Protocol):
    """Structural type of a trainable task (see the module docstring for the optional hooks)."""

    def build_model(self) -> nn.Module: ...

    def train_dataset(self) -> Dataset: ...

    def val_dataset(self) -> Dataset | None: ...

    def training_step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]: ...

    def validate(self, model: nn.Module, loader: Any) -> dict[str, float]: ...


REQUIRED_METHODS = ("build_model", "train_dataset", "val_dataset", "training_step", "validate")


def check_task(task: Any) -> None:
    """Raise ``TypeError`` naming the missing methods when ``task`` does not implement :class:`Task`."""
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(task, m, None))]
    if missing:
        raise TypeError(f"{type(task).__name__} does not implement the Task protocol: missing {', '.join(missing)}")
    mode = getattr(task, "best_mode", "min")
    if mode not in ("min", "max"):
        raise TypeError(f"{type(task).__name__}.best_mode must be 'min' or 'max', got {mode!r}")
