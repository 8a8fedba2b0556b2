"""The SPEC2021 (ESA Kelvins SPEED+) score, exactly, plus the errors papers report.

Per image, with ``q`` scalar-first and ``r`` in metres:

* position error ``e_t = |r_est - r_gt| / |r_gt|`` (dimensionless), counted as 0 when below
  :data:`POSITION_THRESHOLD` (2.173e-3);
* orientation error ``e_q = 2 arccos(|<q_est, q_gt>|)`` in RADIANS, counted as 0 when below
  :data:`ORIENTATION_THRESHOLD_DEG` (0.169 degrees; the comparison is made in degrees);
* pose score ``= e_q + e_t`` (each component thresholded on its own, the post-2023 rule).

A domain's score is the mean over its images.  The thresholds are the hardware-in-the-loop rule; SPNv2 and
speedpose apply none on synthetic (``thresholds=False``).

The other numbers reported with it have one rule each, here:

* Acc@k (:func:`fraction_within_deg`): the fraction of images whose rotation error is AT MOST k degrees
  (``e_r_deg <= k``, "error within k degrees" as the orientation papers state it).  Every Acc@k of speedpose
  (SPEED+ ``acc@k``, the benchmarks' ``acc15``/``acc30``) uses it;
* localisation IoU (:func:`box_iou`): intersection over union of the predicted and the true keypoint boxes;
* the summary of a set of predictions (:func:`summarise_pose_errors`): the keys of validation, of
  ``speedpose evaluate`` and of the adaptation check alike.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from speedpose.errors import ShapeError

#: position error (relative, dimensionless) below which it counts as 0 on lightbox/sunlamp
POSITION_THRESHOLD = 2.173e-3
#: orientation error in DEGREES below which it counts as 0 on lightbox/sunlamp
ORIENTATION_THRESHOLD_DEG = 0.169
#: domains on which the thresholds apply by default
THRESHOLD_DOMAINS = frozenset({"lightbox", "sunlamp"})
#: rotation-accuracy thresholds [deg] of the SPEED+ summaries (``acc@2`` ... ``acc@30``)
ACC_THRESHOLDS_DEG = (2.0, 5.0, 10.0, 30.0)


def default_thresholds(domain: str) -> bool:
    """Whether the SPEC2021 thresholds apply to a domain by default (lightbox and sunlamp: yes; synthetic: no)."""
    return domain in THRESHOLD_DOMAINS


def orientation_errors_rad(q_est_wxyz: np.ndarray, q_gt_wxyz: np.ndarray) -> np.ndarray:
    """``2 arccos(|<q_est, q_gt>|)`` per image [rad], quaternions normalised first. (N, 4), (N, 4) -> (N,)."""
    qe = _rows(q_est_wxyz, 4, "q_est")
    qg = _rows(q_gt_wxyz, 4, "q_gt")
    qe = qe / np.linalg.norm(qe, axis=1, keepdims=True)
    qg = qg / np.linalg.norm(qg, axis=1, keepdims=True)
    dot = np.clip(np.abs(np.sum(qe * qg, axis=1)), 0.0, 1.0)
    return 2.0 * np.arccos(dot)


def position_errors(r_est_m: np.ndarray, r_gt_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Absolute [m] and relative (``/|r_gt|``) position errors. (N, 3), (N, 3) -> (N,), (N,)."""
    re = _rows(r_est_m, 3, "r_est")
    rg = _rows(r_gt_m, 3, "r_gt")
    err_m = np.linalg.norm(re - rg, axis=1)
    return err_m, err_m / np.linalg.norm(rg, axis=1)


def per_image_scores(q_est_wxyz, r_est_m, q_gt_wxyz, r_gt_m, thresholds: bool) -> dict[str, np.ndarray]:
    """Per-image arrays: ``e_q_rad``, ``e_t_rel``, ``e_t_m``, ``score_q``, ``score_t``, ``score`` (all (N,))."""
    e_q = orientation_errors_rad(q_est_wxyz, q_gt_wxyz)
    e_t_m, e_t = position_errors(r_est_m, r_gt_m)
    if len(e_q) != len(e_t):
        raise ShapeError(f"got {len(e_q)} quaternions but {len(e_t)} translations")
    s_q, s_t = e_q.copy(), e_t.copy()
    if thresholds:
        s_q[np.degrees(e_q) < ORIENTATION_THRESHOLD_DEG] = 0.0
        s_t[e_t < POSITION_THRESHOLD] = 0.0
    return {"e_q_rad": e_q, "e_t_rel": e_t, "e_t_m": e_t_m, "score_q": s_q, "score_t": s_t, "score": s_q + s_t}


@dataclass(frozen=True)
class DomainScore:
    """Aggregates over one domain.

    Attributes:
        score: mean pose score (orientation part + position part).
        score_orientation: mean orientation part [rad].
        score_position: mean position part (relative).
        mean_e_t_m, median_e_t_m: translation error |r_est - r_gt| [m].
        mean_e_r_deg, median_e_r_deg: rotation error [deg].
        count: number of images.
        thresholds: whether the SPEC2021 thresholds were applied.
    """

    score: float
    score_orientation: float
    score_position: float
    mean_e_t_m: float
    median_e_t_m: float
    mean_e_r_deg: float
    median_e_r_deg: float
    count: int
    thresholds: bool

    def to_dict(self) -> dict:
        return asdict(self)


def score_poses(q_est_wxyz, r_est_m, q_gt_wxyz, r_gt_m, thresholds: bool) -> DomainScore:
    """Score one domain (see module docstring).  Inputs (N, 4), (N, 3), (N, 4), (N, 3) with N >= 1."""
    s = per_image_scores(q_est_wxyz, r_est_m, q_gt_wxyz, r_gt_m, thresholds)
    if len(s["score"]) == 0:
        raise ShapeError("cannot score an empty set of poses")
    e_r_deg = np.degrees(s["e_q_rad"])
    return DomainScore(
        score=float(s["score"].mean()),
        score_orientation=float(s["score_q"].mean()),
        score_position=float(s["score_t"].mean()),
        mean_e_t_m=float(s["e_t_m"].mean()),
        median_e_t_m=float(np.median(s["e_t_m"])),
        mean_e_r_deg=float(e_r_deg.mean()),
        median_e_r_deg=float(np.median(e_r_deg)),
        count=int(len(e_r_deg)),
        thresholds=thresholds,
    )


def combined_score(scores: dict[str, DomainScore]) -> float | None:
    """Mean of the lightbox and sunlamp scores (each domain weighted equally), or None unless both are given."""
    if "lightbox" in scores and "sunlamp" in scores:
        return (scores["lightbox"].score + scores["sunlamp"].score) / 2
    return None


def fraction_within_deg(errors_deg: np.ndarray, threshold_deg: float) -> float:
    """Acc@k: the fraction of rotation errors [deg] AT MOST ``threshold_deg`` (inclusive: an error of exactly
    k degrees counts as correct).  (N,) -> float; NaN when there is no error to count."""
    e = np.asarray(errors_deg, dtype=np.float64).reshape(-1)
    return float(np.mean(e <= threshold_deg)) if e.size else math.nan


def accuracy_at_deg(errors_rad: np.ndarray, thresholds_deg=(2.0, 5.0, 10.0)) -> dict[str, float]:
    """Acc@k of rotation errors given in RADIANS, thresholds in DEGREES: ``{"acc@2": ..., ...}``
    (rule: :func:`fraction_within_deg`)."""
    e = np.degrees(np.asarray(errors_rad, dtype=np.float64))
    return {f"acc@{t:g}": fraction_within_deg(e, t) for t in thresholds_deg}


def box_iou(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """Intersection over union of paired boxes ``(x0, y0, x1, y1)`` [px]. (N, 4), (N, 4) -> (N,);
    NaN where a box holds a NaN (e.g. no predicted box)."""
    a = np.asarray(a_xyxy, dtype=np.float64)
    b = np.asarray(b_xyxy, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != 4:
        raise ShapeError(f"boxes: expected two (N, 4) arrays, got {a.shape} and {b.shape}")
    ix = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def summarise_pose_errors(score_q: np.ndarray, score_t: np.ndarray, e_t_m: np.ndarray, e_r_deg: np.ndarray,
                          loc_iou: np.ndarray | None = None,
                          thresholds_deg: tuple[float, ...] = ACC_THRESHOLDS_DEG) -> dict[str, float]:
    """The summary of a set of predictions: the one rule behind validation, ``speedpose evaluate`` and the
    adaptation check.

    Args:
        score_q, score_t: (N,) orientation and position parts of the pose score (see :func:`per_image_scores`).
        e_t_m: (N,) translation errors [m].
        e_r_deg: (N,) rotation errors [deg].
        loc_iou: (N,) localisation IoU per image, NaN where an image has no box; None: no localiser.
        thresholds_deg: the Acc@k thresholds [deg].
    Returns:
        ``count``; and, when ``count > 0``, ``score`` (mean of ``score_q + score_t``), ``score_orientation``,
        ``score_position``, ``e_t_mean_m``, ``e_t_median_m``, ``e_r_mean_deg``, ``e_r_median_deg``, ``acc@k``
        for each threshold (:func:`fraction_within_deg`), and ``loc_iou`` (mean over the images with a box;
        absent when no image has one).
    """
    s_q, s_t = np.asarray(score_q, np.float64), np.asarray(score_t, np.float64)
    e_t, e_r = np.asarray(e_t_m, np.float64), np.asarray(e_r_deg, np.float64)
    if not (s_q.shape == s_t.shape == e_t.shape == e_r.shape and s_q.ndim == 1):
        raise ShapeError(f"per-image errors: expected four (N,) arrays, got {s_q.shape}, {s_t.shape}, {e_t.shape} "
                         f"and {e_r.shape}")
    n = len(e_r)
    if n == 0:
        return {"count": 0}
    out = {"count": n, "score": float(np.mean(s_q + s_t)), "score_orientation": float(s_q.mean()),
           "score_position": float(s_t.mean()), "e_t_mean_m": float(e_t.mean()),
           "e_t_median_m": float(np.median(e_t)), "e_r_mean_deg": float(e_r.mean()),
           "e_r_median_deg": float(np.median(e_r))}
    out.update({f"acc@{t:g}": fraction_within_deg(e_r, t) for t in thresholds_deg})
    if loc_iou is not None:
        iou = np.asarray(loc_iou, np.float64)
        if iou.shape != e_r.shape:
            raise ShapeError(f"loc_iou: expected shape {e_r.shape}, got {iou.shape}")
        if np.isfinite(iou).any():
            out["loc_iou"] = float(np.nanmean(iou))
    return out


def _rows(x, n: int, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1 and a.shape[0] == n:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != n:
        raise ShapeError(f"{name}: expected shape (N, {n}), got {a.shape}")
    return a
