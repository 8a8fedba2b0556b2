"""The SPEC2021 (ESA Kelvins SPEED+) score, exactly, plus the errors papers report.

Per image, with ``q`` scalar-first and ``r`` in metres:

* position error ``e_t = |r_est - r_gt| / |r_gt|`` (dimensionless), counted as 0 when below
  :data:`POSITION_THRESHOLD` (2.173e-3);
* orientation error ``e_q = 2 arccos(|<q_est, q_gt>|)`` in RADIANS, counted as 0 when below
  :data:`ORIENTATION_THRESHOLD_DEG` (0.169 degrees; the comparison is made in degrees);
* pose score ``= e_q + e_t`` (each component thresholded on its own, the post-2023 rule).

A domain's score is the mean over its images.  The thresholds are the hardware-in-the-loop rule; SPNv2 and
speedpose apply none on synthetic (``thresholds=False``).
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


def accuracy_at_deg(errors_rad: np.ndarray, thresholds_deg=(2.0, 5.0, 10.0)) -> dict[str, float]:
    """Fraction of rotation errors below each threshold in DEGREES: ``{"acc@2": ..., ...}``."""
    e = np.degrees(np.asarray(errors_rad, dtype=np.float64))
    return {f"acc@{t:g}": float(np.mean(e < t)) if e.size else math.nan for t in thresholds_deg}


def _rows(x, n: int, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1 and a.shape[0] == n:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != n:
        raise ShapeError(f"{name}: expected shape (N, {n}), got {a.shape}")
    return a
