"""The held-out synthetic check: a few labelled synthetic/validation images scored before and during adaptation,
so that an adaptation that wrecks the source domain (entropy collapse, drifting pseudo-labels) is noticed and
undone."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from speedpose.data.loader import PreprocessedSplit
from speedpose.pose.inference import predict_split
from speedpose.pose.kinds.base import ModelKind
from speedpose.pose.metrics import pose_metrics
from speedpose.pose.model import PoseModel


@dataclass
class SyntheticCheck:
    """Scores a model on fixed labelled synthetic images (SPEED+ score without thresholds, lower is better).

    Attributes:
        split: labelled synthetic/validation split (None when the check is off).
        indices: which of its records (empty: the check is off).
        kind: the run's model kind (its inference settings).
        tolerance: largest allowed relative increase of the score over ``baseline``.
        device, batch_size: inference settings.
        baseline: the score before adaptation (set by :meth:`set_baseline`).
    """

    split: PreprocessedSplit | None
    indices: np.ndarray
    kind: ModelKind
    tolerance: float
    device: torch.device
    batch_size: int = 16
    baseline: float | None = None

    @property
    def enabled(self) -> bool:
        return len(self.indices) > 0

    def metrics(self, model: PoseModel) -> dict[str, float]:
        """Score, E_T, E_R... of ``model`` on the check images (the model is left in eval mode)."""
        pred = predict_split(model, self.split, self.indices, self.kind, self.device, batch_size=self.batch_size)
        return pose_metrics(pred, self.split, thresholds=False)

    def set_baseline(self, model: PoseModel) -> dict[str, float]:
        m = self.metrics(model)
        self.baseline = m["score"]
        return m

    def passes(self, score: float) -> bool:
        """Whether ``score`` is within the tolerance of the baseline (always, without a baseline)."""
        if self.baseline is None:
            return True
        if not np.isfinite(score):
            return False
        if not np.isfinite(self.baseline):
            return True
        return bool(score <= self.baseline * (1.0 + self.tolerance) + 1e-12)
