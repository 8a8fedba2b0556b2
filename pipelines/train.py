"""Stage `train`: train a registered experiment (SPEED+ by default) into a run folder.

Run folders: ``<out>/<name>`` (default ``runs/<config stem>``); a fresh run never overwrites an existing one
(``-2``, ``-3``, ... are appended, as ultralytics does); ``--resume`` continues ``<out>/<name>`` exactly where it
stopped.  Under ``torchrun --nproc-per-node N -m speedpose train ...`` the engine runs DistributedDataParallel.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from speedpose.config import Override, load_config, with_options
from speedpose.config.registry import get_experiment
from speedpose.config.shipped import resolve_config
from speedpose.errors import ConfigError, InputError
from speedpose.training import fit


def run_folder(out: Path, name: str, resume: bool) -> Path:
    """``out/name`` for a resume; otherwise the first of ``out/name``, ``out/name-2``, ... without a checkpoint."""
    base = Path(out) / name
    if resume:
        if not (base / "last.pt").is_file():
            raise InputError(f"nothing to resume: {base / 'last.pt'} does not exist")
        return base
    if os.environ.get("RANK") not in (None, "0") or os.environ.get("LOCAL_RANK") not in (None, "0"):
        return base  # DDP: every rank must agree on the folder; rank 0 picks it before any checkpoint exists
    k = 1
    cand = base
    while (cand / "last.pt").exists() or (cand / "summary.json").exists():
        k += 1
        cand = Path(out) / f"{name}-{k}"
    return cand


def run(root: Path | None, config: str | Path | None = None, overrides: Sequence[Override] = (), *,
        dataset: str = "speedplus", split: float | None = None, epochs: int | None = None, device: str | None = None,
        out: Path = Path("runs"), name: str | None = None, resume: bool = False, max_time_min: float | None = None,
        progress: bool | None = None):
    """Train; returns the engine's :class:`~speedpose.training.FitSummary`.  ``overrides``: dotted ``key=value``
    strings (read as YAML) or ``(dotted key, value)`` pairs; the options (``root``, ``split``...) override both."""
    cfg_path = resolve_config(config, dataset)
    extra = with_options(overrides, {
        "data.root": Path(root).resolve() if root is not None else None, "data.split": split,
        "train.epochs": epochs, "train.device": device, "train.max_time_min": max_time_min})
    cfg = load_config(cfg_path, extra)
    if dataset != "speedplus" and cfg.task == "speedplus":
        raise ConfigError(f"{cfg_path}: a speedplus config was given for --dataset {dataset}")
    entry = get_experiment(cfg.task)
    if entry.task_factory is None:
        raise ConfigError(f"{cfg_path}: experiment {cfg.task!r} cannot be trained (no task)")
    run_dir = run_folder(out, name or cfg_path.stem, resume)
    return fit(entry.task_factory(cfg), cfg, run_dir, resume=resume, progress=progress)
