"""The SPEED+ training task for :func:`speedpose.training.fit` (``task: speedplus``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from speedpose.data.crop_set import CropSet
from speedpose.data.loader import open_split
from speedpose.data.subsets import evenly_spaced
from speedpose.errors import InputError
from speedpose.pose.config import SpeedplusExperiment
from speedpose.pose.dataset import collate
from speedpose.pose.inference import predict_split
from speedpose.pose.kinds import model_kind
from speedpose.pose.metrics import pose_metrics
from speedpose.pose.model import PoseModel


def train_subset(n: int, fraction: float, seed: int) -> np.ndarray:
    """The seeded random subset of ``round(fraction * n)`` training records (sorted), at least one."""
    if fraction >= 1.0:
        return np.arange(n)
    k = max(1, int(round(fraction * n)))
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def resolve_crop_set(path: str, root: str | None) -> Path:
    """``data.crop_set``: an absolute path, or a path relative to the working folder or to ``data.root``."""
    p = Path(path)
    if p.is_absolute() or p.exists() or not root:
        return p
    return Path(root) / p


class _IndexOnly(Dataset):
    """Validation batches carry only record indices: inference crops from predicted boxes itself."""

    def __init__(self, indices: np.ndarray):
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict:
        return {"index": torch.tensor(int(self.indices[k]))}


class SpeedplusTask:
    """Trains the model of the experiment's kind (:func:`speedpose.pose.kinds.model_kind`) on stand-in or real SPEED+
    (synthetic/train, or a rendered crop set for a kind that trains on one; validation on synthetic/validation).

    Validation runs the whole inference chain (for the crop kind: localiser -> crop from the PREDICTED box -> mode
    search) and reports the SPEED+ score without thresholds (as on synthetic), E_T, E_R, Acc@k and the
    localisation IoU, plus what the kind adds (:meth:`~speedpose.pose.kinds.base.ModelKind.validation_metrics`).
    """

    best_metric = "score"
    best_mode = "min"

    def __init__(self, cfg: SpeedplusExperiment):
        if not cfg.data.root and not cfg.data.prep_dir:
            raise InputError("no dataset: pass --root DIR (or set data.root / data.prep_dir in the config)")
        self.cfg = cfg
        self.kind = model_kind(cfg)
        where = cfg.data.prep_dir or cfg.data.root
        root = cfg.data.root
        self.train_split = open_split(where, "synthetic", "train", root=root)
        self.val_split = open_split(where, "synthetic", "validation", root=root)
        for s in (self.train_split, self.val_split):
            if not s.labelled.all():
                raise InputError(f"synthetic/{s.split} has unlabelled records: training needs poses", s.directory)
        self.train_indices = train_subset(len(self.train_split), cfg.data.split, cfg.train.seed)
        self.val_indices = evenly_spaced(len(self.val_split), cfg.data.val_limit)
        self.crop_set, self.crop_indices = None, None
        if self.kind.crop_set is not None:
            self.crop_set = CropSet.open(resolve_crop_set(self.kind.crop_set, root))
            self.crop_indices = train_subset(len(self.crop_set), cfg.data.split, cfg.train.seed)

    # ------------------------------------------------------------------------------------------- Task protocol
    def build_model(self) -> PoseModel:
        return self.kind.build_model()

    collate = staticmethod(collate)

    def train_dataset(self) -> Dataset:
        return self.kind.training_set(self.train_split, self.train_indices, self.crop_set, self.crop_indices)

    def val_dataset(self) -> Dataset:
        return _IndexOnly(self.val_indices)

    def training_step(self, model, batch: dict) -> dict[str, torch.Tensor]:
        return self.kind.loss(model, batch)

    def validate(self, model: PoseModel, loader) -> dict[str, float]:
        indices = np.concatenate([b["index"].cpu().numpy() for b in loader])
        device = next(model.parameters()).device
        bs = self.cfg.train.batch_size
        pred = predict_split(model, self.val_split, indices, self.kind, device, batch_size=bs)
        metrics = pose_metrics(pred, self.val_split, thresholds=False)
        metrics.update(self.kind.validation_metrics(model, self.val_split, indices, device, bs))
        return metrics
