"""Train any registered experiment from a YAML file: the library call behind ``speedpose train`` and torchrun.

``torchrun --nproc_per_node 2 -m speedpose.training.launch CONFIG [key=value ...] --run-dir DIR [--resume]``
runs DistributedDataParallel; without torchrun it trains in one process.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterable

from speedpose.config.loading import load_config
from speedpose.config.registry import get_experiment
from speedpose.errors import ConfigError, SpeedposeError
from speedpose.training.loop import FitSummary, fit


def train_from_config(config: str | Path, overrides: Iterable[str] = (), run_dir: str | Path = "runs/default",
                      resume: bool = False, progress: bool | None = None) -> FitSummary:
    """Load ``config`` (+ dotted overrides), build the registered Task and :func:`fit` it into ``run_dir``."""
    cfg = load_config(config, overrides)
    entry = get_experiment(cfg.task)
    if entry.task_factory is None:
        raise ConfigError(f"{config}: experiment {cfg.task!r} registers no task_factory, so it cannot be trained")
    return fit(entry.task_factory(cfg), cfg, run_dir, resume=resume, progress=progress)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry for ``python -m`` / ``torchrun -m``; bad input exits with code 2, no traceback."""
    parser = argparse.ArgumentParser(prog="python -m speedpose.training.launch", description=__doc__)
    parser.add_argument("config", type=Path, help="experiment YAML (its task: key selects the schema)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides such as train.epochs=3 optim.lr=1e-3")
    parser.add_argument("--run-dir", type=Path, required=True, help="run folder (checkpoints, metrics)")
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    args = parser.parse_args(argv)
    try:
        summary = train_from_config(args.config, args.overrides, args.run_dir, args.resume)
    except SpeedposeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"{summary.stopped}: step {summary.global_step}, epochs {summary.epochs_completed}, "
          f"best {summary.best_metric}={summary.best_value}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
