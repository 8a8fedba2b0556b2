"""Optimiser and learning-rate schedule from the ``optim:`` and ``schedule:`` config sections."""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

from speedpose.config.sections import OptimConfig, ScheduleConfig


def build_optimizer(params: Iterable[Any], cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov, L2 weight decay) or AdamW (decoupled weight decay).

    ``params`` is an iterable of tensors or of parameter-group dicts; a group's optional ``lr_scale`` multiplies
    ``cfg.lr`` for that group (e.g. 0.1 for a pretrained encoder).
    """
    groups = list(params)
    if groups and isinstance(groups[0], dict):
        groups = [dict(g) for g in groups]
        for g in groups:
            g["lr"] = cfg.lr * float(g.pop("lr_scale", 1.0))
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimiser {cfg.name!r}")


def lr_factor(step: int, cfg: ScheduleConfig, steps_per_epoch: int, total_steps: int,
              time_fraction: float = 0.0) -> float:
    """Multiplier of the base learning rate for optimiser step ``step`` (0-based).

    warm-up (linear, ``(step+1)/warmup_steps`` while ``step < warmup_steps``) times
    step: ``gamma ** floor(epoch / step_size_epochs)`` with ``epoch = step // steps_per_epoch``;
    cosine: ``0.5 * (1 + cos(pi * p))`` with the progress ``p = step / total_steps``, or the fraction of the
    training-time budget spent (``time_fraction``, in [0, 1]) when that is larger (``schedule.fit_time_budget``);
    constant: 1.
    """
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
    if cfg.name == "step":
        epoch = step // max(steps_per_epoch, 1)
        base = cfg.gamma ** (epoch // cfg.step_size_epochs)
    elif cfg.name == "cosine":
        progress = max(min(step, total_steps) / max(total_steps, 1), min(max(time_fraction, 0.0), 1.0))
        base = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif cfg.name == "constant":
        base = 1.0
    else:
        raise ValueError(f"unknown schedule {cfg.name!r}")
    return warm * base


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int,
                    total_steps: int, time_fraction: Callable[[], float] | None = None) -> LambdaLR:
    """A ``LambdaLR`` stepped once per optimiser step, following :func:`lr_factor`; ``time_fraction()`` (when given)
    returns the fraction of the training-time budget spent so far (read at each step)."""
    frac = time_fraction or (lambda: 0.0)
    return LambdaLR(optimizer, lambda s: lr_factor(s, cfg, steps_per_epoch, total_steps, frac()))
