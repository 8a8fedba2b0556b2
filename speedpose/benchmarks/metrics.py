"""Benchmark metrics of the orientation literature: Acc@15, Acc@30, median error, per class and class-averaged.

ModelNet10-SO(3) and PASCAL3D+ papers (Implicit-PDF, Image2Sphere, Rotation Laplace) report each metric per class
and then the plain mean over classes (every class weighs the same, whatever its number of test images).  Both the
class average and the pooled value (over all images) are returned, named apart so that they cannot be confused.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from speedpose.errors import ShapeError
from speedpose.geometry.rotations import geodesic_angle_matrix
from speedpose.scoring import fraction_within_deg

#: thresholds of the accuracies [deg]
ACC_THRESHOLDS_DEG = (15.0, 30.0)


def rotation_errors_deg(R_pred: np.ndarray, R_true: np.ndarray) -> np.ndarray:
    """Geodesic angle between predicted and true rotations [deg]. (N, 3, 3), (N, 3, 3) -> (N,)."""
    R_pred = np.asarray(R_pred, dtype=np.float64)
    R_true = np.asarray(R_true, dtype=np.float64)
    if R_pred.shape != R_true.shape or R_pred.shape[-2:] != (3, 3) or R_pred.ndim != 3:
        raise ShapeError(f"rotations: expected two (N, 3, 3) arrays, got {R_pred.shape} and {R_true.shape}")
    return np.degrees(np.asarray(geodesic_angle_matrix(R_pred, R_true)))


def _summary(err_deg: np.ndarray) -> dict[str, float]:
    out = {f"acc{int(t)}": fraction_within_deg(err_deg, t) for t in ACC_THRESHOLDS_DEG}
    out["median_deg"] = float(np.median(err_deg))
    out["mean_deg"] = float(np.mean(err_deg))
    return out


def benchmark_metrics(err_deg: np.ndarray, class_ids: np.ndarray, class_names: Sequence[str],
                      log_likelihood: np.ndarray | None = None) -> dict:
    """Per-class and averaged metrics of rotation errors.

    Args:
        err_deg: (N,) rotation errors [deg].
        class_ids: (N,) integer class of each image, indices into ``class_names``.
        class_names: names of all classes of the dataset (classes without an image are left out of the averages).
        log_likelihood: optional (N,) log-density of the true rotation (SO(3) volume pi^2), averaged the same way.
    Returns:
        ``{"per_class": {name: {"count", "acc15", "acc30", "median_deg", "mean_deg"[, "log_likelihood"]}},
        "class_mean": {same keys averaged over classes}, "pooled": {same keys over all images}}``.
        An image counts as correct at threshold t when its error is at most t degrees (the one Acc@k rule,
        :func:`speedpose.scoring.fraction_within_deg`).
    """
    err = np.asarray(err_deg, dtype=np.float64).reshape(-1)
    cls = np.asarray(class_ids).reshape(-1)
    if len(err) != len(cls):
        raise ShapeError(f"got {len(err)} errors but {len(cls)} class ids")
    if len(err) == 0:
        raise ShapeError("no images to score")
    if not np.issubdtype(cls.dtype, np.integer) or cls.min() < 0 or cls.max() >= len(class_names):
        raise ShapeError(f"class ids must be integers in [0, {len(class_names)}), got {cls.min()}..{cls.max()}")
    ll = None
    if log_likelihood is not None:
        ll = np.asarray(log_likelihood, dtype=np.float64).reshape(-1)
        if len(ll) != len(err):
            raise ShapeError(f"got {len(err)} errors but {len(ll)} log-likelihoods")
    per_class: dict[str, dict[str, float]] = {}
    for k, name in enumerate(class_names):
        sel = cls == k
        if not sel.any():
            continue
        row = {"count": int(sel.sum()), **_summary(err[sel])}
        if ll is not None:
            row["log_likelihood"] = float(ll[sel].mean())
        per_class[name] = row
    keys = [k for k in next(iter(per_class.values())) if k != "count"]
    class_mean = {k: float(np.mean([row[k] for row in per_class.values()])) for k in keys}
    class_mean["classes"] = len(per_class)
    pooled = {"count": int(len(err)), **_summary(err)}
    if ll is not None:
        pooled["log_likelihood"] = float(ll.mean())
    return {"per_class": per_class, "class_mean": class_mean, "pooled": pooled}


def flat_metrics(metrics: dict) -> dict[str, float]:
    """The class-averaged and pooled numbers of :func:`benchmark_metrics` as a flat dict of floats (for logs):
    ``acc15``, ``acc30``, ``median_deg``, ... (class means) and ``pooled_acc15``, ... (over all images)."""
    flat = {k: float(v) for k, v in metrics["class_mean"].items() if k != "classes"}
    flat.update({f"pooled_{k}": float(v) for k, v in metrics["pooled"].items() if k != "count"})
    return flat


def format_metrics_table(metrics: dict) -> str:
    """A plain-text table: one row per class, then the class mean and the pooled row."""
    has_ll = "log_likelihood" in metrics["pooled"]
    head = f"{'class':<14}{'count':>7}{'Acc@15':>9}{'Acc@30':>9}{'median':>9}" + (f"{'loglik':>9}" if has_ll else "")
    lines = [head]

    def row(name: str, r: dict, count) -> str:
        s = f"{name:<14}{count:>7}{r['acc15']:>9.3f}{r['acc30']:>9.3f}{r['median_deg']:>9.2f}"
        return s + (f"{r['log_likelihood']:>9.2f}" if has_ll else "")

    for name, r in metrics["per_class"].items():
        lines.append(row(name, r, r["count"]))
    lines.append(row("class mean", metrics["class_mean"], ""))
    lines.append(row("all images", metrics["pooled"], metrics["pooled"]["count"]))
    return "\n".join(lines)
