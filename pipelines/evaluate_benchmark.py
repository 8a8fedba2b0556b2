"""Stage `evaluate --dataset modelnet10|pascal3d`: score a trained benchmark run with the papers' metrics.

Inputs: a run folder written by ``speedpose train --dataset modelnet10|pascal3d`` (its ``config.yaml`` and
``last.pt`` by default: the benchmarks have no validation split, so the papers report the final model) and the
dataset root (default: the one the run was trained with).
Outputs in ``out`` (default ``<run>/eval/<dataset>-<split>-<checkpoint>``):

* ``metrics.json``: per class and class-averaged Acc@15, Acc@30, median and mean error [deg] (the papers' numbers
  are the class averages), the same pooled over all images, the log-likelihood when asked, and provenance;
* ``per_image.csv``: record, class, error [deg], predicted and true quaternion (w, x, y, z).

Inference runs in resumable chunks (``out/.cache``; discarded when the checkpoint, config or split changes), with a
progress bar.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Subset
from tqdm import tqdm

from speedpose.benchmarks import (
    benchmark_metrics,
    build_model,
    class_names,
    format_metrics_table,
    make_adapter,
    make_dataset,
    predict_rotations,
)
from speedpose.config import RESOLVED_NAME, config_hash, load_config
from speedpose.errors import ConfigError, InputError
from speedpose.geometry.rotations import matrix_to_quat_wxyz
from speedpose.io_utils import atomic_path, atomic_write_json, read_json
from speedpose.training import eval_loader, load_checkpoint, move_to_device, select_checkpoint

BENCHMARKS = ("modelnet10", "pascal3d")
CHUNK = 512  # images per cached chunk


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda asked for but no CUDA device is available")
    if device not in ("cpu", "cuda"):
        raise InputError(f"--device: expected cpu, cuda or auto, got {device!r}")
    return torch.device(device)


def run(run_dir: Path, dataset: str, root: Path | None = None, *, split: str = "test", checkpoint: str = "last",
        out: Path | None = None, device: str = "auto", batch_size: int | None = None,
        log_likelihood: bool | None = None, workers: int = 0, progress: bool = True) -> dict:
    """Evaluate a benchmark run; returns the metrics dict written to ``metrics.json``."""
    run_dir = Path(run_dir)
    if dataset not in BENCHMARKS:
        raise InputError(f"--dataset: expected one of {', '.join(BENCHMARKS)}, got {dataset!r}")
    cfg_file = run_dir / RESOLVED_NAME
    if not cfg_file.is_file():
        raise InputError(f"not a run folder (expected {RESOLVED_NAME} written by `speedpose train`)", run_dir)
    overrides = [("data.root", Path(root).resolve())] if root is not None else []
    cfg = load_config(cfg_file, overrides)
    if cfg.task != dataset:
        raise ConfigError(f"{cfg_file}: the run was trained on {cfg.task!r}, not --dataset {dataset}")
    want_ll = cfg.eval.log_likelihood if log_likelihood is None else log_likelihood
    bs = batch_size or cfg.eval.batch_size
    dev = _device(device)
    ckpt_path = select_checkpoint(run_dir, checkpoint)
    model = build_model(cfg, pretrained=False)
    ckpt = load_checkpoint(ckpt_path, model)
    model.to(dev).eval()
    records = make_adapter(cfg).get_records(split)
    if len(records) == 0:
        raise InputError(f"{dataset} split {split!r} has no usable record", cfg.data.root)
    data = make_dataset(cfg, records)
    out = Path(out) if out is not None else run_dir / "eval" / f"{dataset}-{split}-{ckpt_path.stem}"
    cache = out / ".cache"
    st = ckpt_path.stat()
    key = {"checkpoint": str(ckpt_path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
           "config_hash": config_hash(cfg), "split": split, "n": len(records), "root": str(cfg.data.root),
           "log_likelihood": bool(want_ll), "chunk": CHUNK, "files": [str(p) for p in records.filenames[:3]]}
    key_file = cache / "key.json"
    if cache.is_dir() and (not key_file.is_file() or read_json(key_file) != key):
        shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write_json(key_file, key)
    starts = range(0, len(records), CHUNK)
    parts = []
    bar = tqdm(total=len(records), desc=f"evaluate {dataset}/{split}", unit="img", disable=not progress)
    with torch.no_grad():
        for start in starts:
            part = cache / f"part_{start // CHUNK:05d}.npz"
            if not part.is_file():
                sub = Subset(data, range(start, min(start + CHUNK, len(records))))
                loader = eval_loader(sub, bs, workers, cfg.train.seed)
                batches = (move_to_device(b, dev) for b in loader)
                p = predict_rotations(model, batches, want_ll, progress=bar)
                with atomic_path(part) as tmp:
                    with open(tmp, "wb") as f:
                        np.savez(f, index=p.index, class_id=p.class_id, R_pred=p.R_pred, R_true=p.R_true,
                                 err_deg=p.err_deg, ll=p.log_likelihood if want_ll else np.zeros(0))
            else:
                bar.update(min(CHUNK, len(records) - start))
            with np.load(part) as z:
                parts.append({k: z[k] for k in z.files})
    bar.close()
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    names = class_names(cfg)
    metrics = benchmark_metrics(cat["err_deg"], cat["class_id"], names, cat["ll"] if want_ll else None)
    report = {"dataset": dataset, "split": split, "run": str(run_dir), "checkpoint": str(ckpt_path),
              "step": ckpt.get("global_step"), "config_hash": config_hash(cfg), "root": str(cfg.data.root),
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
