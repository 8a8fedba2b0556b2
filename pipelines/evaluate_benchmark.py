"""Stage `evaluate --dataset modelnet10|pascal3d`: score a trained benchmark run with the papers' metrics.

Inputs: a run folder written by ``speedpose train --dataset modelnet10|pascal3d`` (its ``config.yaml`` and
``last.pt`` by default: the benchmarks have no validation split, so the papers report the final model) and the
dataset root (default: the one the run was trained with).
Outputs in ``out`` (default ``<run>/eval/<dataset>-<split>-<checkpoint>``):

* ``metrics.json``: per class and class-averaged Acc@15, Acc@30, median and mean error [deg] (the papers' numbers
  are the class averages), the same pooled over all images, the log-likelihood when asked, and provenance;
* ``per_image.csv``: record, class, error [deg], predicted and true quaternion (w, x, y, z).

Inference runs in resumable chunks (``out/.cache``, :mod:`speedpose.resumable`; discarded when the checkpoint, config
or split changes), with a progress bar.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Subset
from tqdm import tqdm

from speedpose.benchmarks import (
    benchmark_metrics,
    class_names,
    format_metrics_table,
    make_adapter,
    make_dataset,
    predict_rotations,
)
from speedpose.config import RESOLVED_NAME
from speedpose.devices import resolve_device
from speedpose.errors import ConfigError, InputError
from speedpose.geometry.rotations import matrix_to_quat_wxyz
from speedpose.io_utils import atomic_path, atomic_write_json
from speedpose.resumable import compute_chunks, concatenate_chunks, resumable_chunks
from speedpose.runs import load_run, read_run_config
from speedpose.training import eval_loader, move_to_device

BENCHMARKS = ("modelnet10", "pascal3d")
CHUNK = 512  # images per cached chunk


def run(run_dir: Path, dataset: str, root: Path | None = None, *, split: str = "test", checkpoint: str = "last",
        out: Path | None = None, device: str = "auto", batch_size: int | None = None,
        log_likelihood: bool | None = None, workers: int = 0, progress: bool = True) -> dict:
    """Evaluate a benchmark run; returns the metrics dict written to ``metrics.json``."""
    run_dir = Path(run_dir)
    if dataset not in BENCHMARKS:
        raise InputError(f"--dataset: expected one of {', '.join(BENCHMARKS)}, got {dataset!r}")
    cfg = read_run_config(run_dir, [("data.root", Path(root).resolve())] if root is not None else [])
    if cfg.task != dataset:
        raise ConfigError(f"{run_dir / RESOLVED_NAME}: the run was trained on {cfg.task!r}, not --dataset {dataset}")
    want_ll = cfg.eval.log_likelihood if log_likelihood is None else log_likelihood
    bs = batch_size or cfg.eval.batch_size
    dev = resolve_device(device)
    loaded = load_run(run_dir, checkpoint, task=dataset, cfg=cfg)
    model = loaded.model.to(dev)
    records = make_adapter(cfg).get_records(split)
    if len(records) == 0:
        raise InputError(f"{dataset} split {split!r} has no usable record", cfg.data.root)
    data = make_dataset(cfg, records)
    ckpt_path = loaded.checkpoint
    out = Path(out) if out is not None else run_dir / "eval" / f"{dataset}-{split}-{ckpt_path.stem}"
    st = ckpt_path.stat()
    key = {"checkpoint": str(ckpt_path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
           "config_hash": loaded.config_hash, "split": split, "n": len(records), "root": str(cfg.data.root),
           "log_likelihood": bool(want_ll), "chunk": CHUNK, "files": [str(p) for p in records.filenames[:3]]}
    files = resumable_chunks(out / ".cache", key, pattern="part_{k:05d}.npz")

    def compute(start: int, stop: int) -> dict[str, np.ndarray]:
        loader = eval_loader(Subset(data, range(start, stop)), bs, workers, cfg.train.seed)
        p = predict_rotations(model, (move_to_device(b, dev) for b in loader), want_ll, progress=bar)
        return {"index": p.index, "class_id": p.class_id, "R_pred": p.R_pred, "R_true": p.R_true,
                "err_deg": p.err_deg, "ll": p.log_likelihood if want_ll else np.zeros(0)}

    def advance(start: int, stop: int, reused: bool) -> None:
        if reused:  # a computed chunk advanced the bar batch by batch
            bar.update(stop - start)

    with tqdm(total=len(records), desc=f"evaluate {dataset}/{split}", unit="img", disable=not progress) as bar, \
            torch.no_grad():
        cat = concatenate_chunks(compute_chunks(len(records), CHUNK, compute, files, on_chunk=advance))
    names = class_names(cfg)
    metrics = benchmark_metrics(cat["err_deg"], cat["class_id"], names, cat["ll"] if want_ll else None)
    report = {"dataset": dataset, "split": split, "run": str(run_dir), "checkpoint": str(ckpt_path),
              "step": loaded.step, "config_hash": loaded.config_hash, "root": str(cfg.data.root),
              "images": int(len(cat["index"])), "metrics": metrics}
    atomic_write_json(out / "metrics.json", report)
    q_pred = np.asarray(matrix_to_quat_wxyz(cat["R_pred"]))
    q_true = np.asarray(matrix_to_quat_wxyz(cat["R_true"]))
    table = pd.DataFrame({"record": [records.filenames[i] for i in cat["index"]],
                          "class": [names[c] for c in cat["class_id"]], "err_deg": cat["err_deg"],
                          **{f"q_pred_{c}": q_pred[:, k] for k, c in enumerate("wxyz")},
                          **{f"q_true_{c}": q_true[:, k] for k, c in enumerate("wxyz")}})
    if want_ll:
        table["log_likelihood"] = cat["ll"]
    with atomic_path(out / "per_image.csv") as tmp:
        table.to_csv(tmp, index=False)
    report["out"] = str(out)
    return report


def format_report(report: dict) -> str:
    """The per-class table with a header line."""
    head = (f"{report['dataset']} {report['split']}: {report['images']} images, checkpoint {report['checkpoint']} "
            f"(step {report['step']})")
    return head + "\n" + format_metrics_table(report["metrics"]) + f"\n-> {report.get('out', '')}"
