"""Train any registered experiment from a YAML file in one call (the command line is ``speedpose train``)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from speedpose.config.loading import load_config
from speedpose.config.registry import get_experiment
from speedpose.errors import ConfigError
from speedpose.training.loop import FitSummary, fit


def train_from_config(config: str | Path, overrides: Iterable[str], run_dir: str | Path,
                      resume: bool = False, progress: bool | None = None) -> FitSummary:
    """Load ``config`` (+ dotted overrides), build the registered Task and :func:`fit` it into ``run_dir``."""
    cfg = load_config(config, overrides)
    entry = get_experiment(cfg.task)
    if entry.task_factory is None:
        raise ConfigError(f"{config}: experiment {cfg.task!r} registers no task_factory, so it cannot be trained")
    return fit(entry.task_factory(cfg), cfg, run_dir, resume=resume, progress=progress)
