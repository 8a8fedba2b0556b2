"""Append-only metrics log: ``metrics.csv`` in long format, plus TensorBoard when it is installed.

Columns: ``time_s`` (seconds since the epoch, UTC), ``step`` (optimiser steps done), ``epoch`` (0-based epoch
the step belongs to), ``split`` (``train`` or ``val``), ``name``, ``value``.  The long format lets training and
validation log different names without changing the header; read it with ``pandas.read_csv`` and pivot.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any, Mapping

from speedpose.io_utils import atomic_path

FIELDS = ("time_s", "step", "epoch", "split", "name", "value")
METRICS_NAME = "metrics.csv"


def _tensorboard_writer(log_dir: Path) -> Any | None:
    try:
        from torch.utils.tensorboard import SummaryWriter  # needs the optional `tensorboard` package
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(log_dir))


class MetricsLog:
    """Rank-0 metrics writer (a disabled instance, for other ranks, writes nothing).

    Args:
        run_dir: run folder; the CSV is ``run_dir/metrics.csv`` and TensorBoard events go to ``run_dir/tb``.
        enabled: False on ranks other than 0.
        tensorboard: also write TensorBoard events when the package is importable.
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True):
        self.path = Path(run_dir) / METRICS_NAME
        self.enabled = enabled
        self._tb = _tensorboard_writer(Path(run_dir) / "tb") if (enabled and tensorboard) else None

    def log(self, step: int, epoch: int, split: str, metrics: Mapping[str, float]) -> None:
        """Append one row per metric (non-finite values are written as ``nan``/``inf``)."""
        if not self.enabled or not metrics:
            return
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        now = f"{time.time():.3f}"
        with self.path.open("a", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(FIELDS)
            for name, value in metrics.items():
                writer.writerow((now, int(step), int(epoch), split, name, repr(float(value))))
        if self._tb is not None:
            for name, value in metrics.items():
                if math.isfinite(float(value)):
                    self._tb.add_scalar(f"{split}/{name}", float(value), int(step))

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (they belong to a run interrupted after its last checkpoint)."""
        if not self.enabled or not self.path.exists():
            return
        rows = read_metrics(self.path)
        keep = [r for r in rows if _step_of(r) is not None and _step_of(r) <= step]
        if len(keep) == len(rows):
            return
        with atomic_path(self.path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(keep)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _step_of(row: Mapping[str, Any]) -> int | None:
    try:  # a row cut short by a kill parses with missing fields
        return int(row["step"]) if row.get("value") not in (None, "") else None
    except (TypeError, ValueError):
        return None


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    """The rows of a ``metrics.csv`` as dicts of strings (convert ``step``/``value`` as needed)."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
