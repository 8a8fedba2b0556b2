"""Opening a trained run folder (written by ``speedpose train`` or ``speedpose adapt``): its resolved config, one of
its checkpoints and the model with that checkpoint's weights.

One loader for every experiment (SPEED+ pose runs and the ModelNet10-SO(3)/PASCAL3D+ benchmark runs): the same
folder check, the same checkpoint choice (``best``, ``last`` or a file; ``best`` falls back to ``last`` when no
validation has run yet) and the same record of what was loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import torch
from torch import nn

from speedpose.config import RESOLVED_NAME, ExperimentConfig, Override, config_hash, load_config
from speedpose.devices import place_model
from speedpose.errors import InputError
from speedpose.training import BEST_NAME, LAST_NAME, load_checkpoint, select_checkpoint

if TYPE_CHECKING:
    from speedpose.pose.kinds.base import ModelKind


@dataclass
class LoadedRun:
    """A run folder opened for inference.

    Attributes:
        run_dir: the folder.
        cfg: the resolved config saved with the run (with the overrides it was read with).
        model: the model in eval mode on CPU with the checkpoint's weights.
        kind: a SPEED+ run's model kind, with the settings inference needs
            (:func:`speedpose.pose.inference.predict_split`); None for the benchmarks' runs.
        checkpoint: the checkpoint file used.
        step: its global step (None when unknown).
        config_hash: hash of ``cfg``.
    """

    run_dir: Path
    cfg: Any
    model: nn.Module
    checkpoint: Path
    step: int | None
    config_hash: str
    kind: ModelKind | None = None


def read_run_config(run_dir: str | Path, overrides: Iterable[Override] = ()) -> ExperimentConfig:
    """The resolved config of ``run_dir`` (its ``config.yaml``), with ``overrides`` (e.g. another data root).

    Raises:
        InputError: the folder holds no ``config.yaml`` (not a run folder).
        ConfigError: the file does not validate.
    """
    cfg_file = Path(run_dir) / RESOLVED_NAME
    if not cfg_file.is_file():
        raise InputError(f"not a run folder (expected {RESOLVED_NAME} written by `speedpose train`)", run_dir)
    return load_config(cfg_file, overrides)


def run_checkpoint(run_dir: str | Path, checkpoint: str = "best") -> Path:
    """The checkpoint file ``checkpoint`` (``best``, ``last``, or a file) of ``run_dir``; ``best`` is ``last``
    when the run has no ``best.pt`` yet (no validation has run)."""
    run_dir = Path(run_dir)
    if checkpoint == "best" and not (run_dir / BEST_NAME).is_file() and (run_dir / LAST_NAME).is_file():
        checkpoint = "last"
    return select_checkpoint(run_dir, checkpoint)


def _pose_model(cfg: Any) -> tuple[nn.Module, Any]:
    from speedpose.pose.kinds import model_kind

    kind = model_kind(cfg.model_copy(update={"model": cfg.model.model_copy(update={"pretrained": False})}))
    return kind.build_model(), kind


def _benchmark_model(cfg: Any) -> tuple[nn.Module, None]:
    from speedpose.benchmarks import build_model

    return build_model(cfg, pretrained=False), None


#: how the model (and, for SPEED+, its kind) of each experiment is built before its weights are loaded (never
#: with a download of pretrained weights: the checkpoint holds them all)
MODEL_BUILDERS: dict[str, Callable[[Any], tuple[nn.Module, Any]]] = {
    "speedplus": _pose_model, "modelnet10": _benchmark_model, "pascal3d": _benchmark_model}


def load_run(run_dir: str | Path, checkpoint: str = "best", *, task: str | None = "speedplus",
             cfg: ExperimentConfig | None = None) -> LoadedRun:
    """Open ``run_dir``: config, checkpoint (see :func:`run_checkpoint`) and model.

    Args:
        run_dir: the run folder.
        checkpoint: ``best``, ``last`` or a checkpoint file.
        task: the experiment the run must be of (``speedplus``, ``modelnet10``, ``pascal3d``); None: any.
        cfg: the run's config when the caller has read it already (:func:`read_run_config` with overrides).
    Raises:
        InputError: not a run folder, a run of another task, no such checkpoint, weights that do not fit.
    """
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir) if cfg is None else cfg
    if task is not None and cfg.task != task:
        raise InputError(f"run of task {cfg.task!r}, not a {task} run", run_dir / RESOLVED_NAME)
    if cfg.task not in MODEL_BUILDERS:
        raise InputError(f"run of task {cfg.task!r}: no model to load (expected one of "
                         f"{', '.join(MODEL_BUILDERS)})", run_dir / RESOLVED_NAME)
    path = run_checkpoint(run_dir, checkpoint)
    model, kind = MODEL_BUILDERS[cfg.task](cfg)
    ckpt = load_checkpoint(path, model)
    model = place_model(model, torch.device("cpu"), cfg.train.channels_last).eval()
    step = ckpt.get("global_step")
    step = int(step) if step is not None else None
    return LoadedRun(run_dir, cfg, model, path, step, config_hash(cfg), kind)
