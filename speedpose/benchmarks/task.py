"""The benchmark training task (``task: modelnet10`` and ``task: pascal3d``) for :func:`speedpose.training.fit`,
and the prediction loop shared by validation and ``speedpose evaluate --dataset``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
from torch.utils.data import Dataset

from speedpose.benchmarks.config import BenchmarkExperiment, ModelNet10Experiment
from speedpose.benchmarks.datasets import MixedSamples, ModelNet10Samples, Pascal3DSamples
from speedpose.benchmarks.metrics import benchmark_metrics, flat_metrics, rotation_errors_deg
from speedpose.benchmarks.model import BenchmarkModel
from speedpose.data.category_records import CategoryRecords
from speedpose.data.modelnet10 import MODELNET10_CLASSES, ModelNet10Adapter
from speedpose.data.pascal3d import PASCAL3D_CLASSES, Pascal3DAdapter
from speedpose.data.subsets import evenly_spaced
from speedpose.errors import InputError


@dataclass
class Predictions:
    """Per-image outputs of :func:`predict_rotations`.

    Attributes:
        index: (N,) record indices.
        class_id: (N,) classes.
        R_pred, R_true: (N, 3, 3) float64 rotations object -> camera of the image.
        err_deg: (N,) geodesic errors [deg].
        log_likelihood: (N,) log-density of the true rotation, or None when not asked.
    """

    index: np.ndarray
    class_id: np.ndarray
    R_pred: np.ndarray
    R_true: np.ndarray
    err_deg: np.ndarray
    log_likelihood: np.ndarray | None


def predict_rotations(model: BenchmarkModel, batches: Iterable[dict], log_likelihood: bool = False,
                      progress=None) -> Predictions:
    """Run ``model`` (eval mode, no grad) on batches already on its device; ``progress``: optional tqdm to update."""
    out: dict[str, list] = {"index": [], "class_id": [], "R_pred": [], "R_true": [], "ll": []}
    for batch in batches:
        coeffs = model(batch["image"], batch["class_id"])
        out["R_pred"].append(model.predict(coeffs).double().cpu().numpy())
        out["R_true"].append(batch["R"].double().cpu().numpy())
        out["index"].append(batch["index"].cpu().numpy())
        out["class_id"].append(batch["class_id"].cpu().numpy())
        if log_likelihood:
            out["ll"].append(model.log_likelihood(coeffs, batch["R"].float()).double().cpu().numpy())
        if progress is not None:
            progress.update(len(batch["index"]))
    cat = {k: np.concatenate(v) if v else None for k, v in out.items()}
    if cat["index"] is None:
        raise InputError("no images to evaluate")
    return Predictions(cat["index"], cat["class_id"], cat["R_pred"], cat["R_true"],
                       rotation_errors_deg(cat["R_pred"], cat["R_true"]), cat["ll"])


def make_adapter(cfg: BenchmarkExperiment) -> ModelNet10Adapter | Pascal3DAdapter:
    """The dataset adapter of an experiment (its ``data.root``; InputError when unset)."""
    if not cfg.data.root:
        raise InputError(f"no dataset: pass --root DIR (the {cfg.task} data folder) or set data.root")
    if isinstance(cfg, ModelNet10Experiment):
        return ModelNet10Adapter(cfg.data.root)
    return Pascal3DAdapter(cfg.data.root, cfg.data.synthetic_root, progress=True)


def class_names(cfg: BenchmarkExperiment) -> tuple[str, ...]:
    """The class names of an experiment's dataset."""
    return MODELNET10_CLASSES if isinstance(cfg, ModelNet10Experiment) else PASCAL3D_CLASSES


def make_dataset(cfg: BenchmarkExperiment, records: CategoryRecords, indices: np.ndarray | None = None,
                 train: bool = False) -> Dataset:
    """Samples of ``records`` (all, or ``indices``) at the config's image size; augmented when ``train``."""
    idx = np.arange(len(records)) if indices is None else np.asarray(indices)
    d = cfg.data
    if isinstance(cfg, ModelNet10Experiment):
        return ModelNet10Samples(records, idx, d.image_size)
    if train:
        return Pascal3DSamples(records, idx, d.image_size, d.margin, True, d.mirror, d.roll_std_deg, d.box_jitter)
    return Pascal3DSamples(records, idx, d.image_size, d.margin)


def build_model(cfg: BenchmarkExperiment, pretrained: bool | str | None = None) -> BenchmarkModel:
    """The experiment's model (``pretrained`` overrides ``model.pretrained``, e.g. False before loading a run)."""
    m = cfg.model
    return BenchmarkModel(m.encoder, m.pretrained if pretrained is None else pretrained, m.i2s, cfg.data.image_size,
                          len(class_names(cfg)), m.class_conditioned)


class BenchmarkTask:
    """Trains :class:`BenchmarkModel` on ModelNet10-SO(3) or PASCAL3D+ and validates with the benchmark metrics
    (class-averaged Acc@15, Acc@30, median error; best.pt = lowest class-averaged median)."""

    best_metric = "median_deg"
    best_mode = "min"

    def __init__(self, cfg: BenchmarkExperiment):
        self.cfg = cfg
        self.adapter = make_adapter(cfg)
        self.class_names = class_names(cfg)
        train_split = cfg.data.train_split if isinstance(cfg, ModelNet10Experiment) else "train"
        self.train_records = self.adapter.get_records(train_split)
        self.val_records = self.adapter.get_records(cfg.data.val_split)
        if len(self.train_records) == 0:
            raise InputError(f"{cfg.task}: the training split has no usable record", cfg.data.root)

    # ------------------------------------------------------------------------------------------- Task protocol
    def build_model(self) -> BenchmarkModel:
        return build_model(self.cfg)

    def train_dataset(self) -> Dataset:
        real = make_dataset(self.cfg, self.train_records, train=True)
        d = self.cfg.data
        if isinstance(self.cfg, ModelNet10Experiment) or not d.synthetic_root or d.synthetic_fraction == 0:
            return real
        synthetic = make_dataset(self.cfg, self.adapter.get_records("synthetic"), train=True)
        return MixedSamples(real, synthetic, d.synthetic_fraction)

    def val_dataset(self) -> Dataset:
        return make_dataset(self.cfg, self.val_records, evenly_spaced(len(self.val_records), self.cfg.data.val_limit))

    def training_step(self, model, batch: dict) -> dict[str, torch.Tensor]:
        coeffs = model(batch["image"], batch["class_id"])
        core = model.module if hasattr(model, "module") else model
        return {"loss": core.loss(coeffs, batch["R"].float())}

    def validate(self, model: BenchmarkModel, loader) -> dict[str, float]:
        pred = predict_rotations(model, loader, self.cfg.eval.log_likelihood)
        return flat_metrics(benchmark_metrics(pred.err_deg, pred.class_id, self.class_names, pred.log_likelihood))
