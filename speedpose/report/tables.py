"""Per-image tables and their summaries: the numbers of ``speedpose evaluate``.

Every number comes from :mod:`speedpose.scoring` (the SPEC2021 score, with or without the lightbox/sunlamp
thresholds): the per-image table holds the errors of each image, and :func:`summarise` / :func:`breakdowns`
aggregate that table, so the report and ``per_image.csv`` agree by construction.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from speedpose.scoring import box_iou, fraction_within_deg, per_image_scores, summarise_pose_errors
from speedpose.tango import project_keypoints

#: distance bins [m] of the breakdown (SPEED+ distances span about 2.2 to 10 m)
DISTANCE_BINS_M = (0.0, 4.0, 6.0, 8.0, math.inf)


def per_image_table(filenames, q_est_wxyz: np.ndarray, r_est_m: np.ndarray, q_gt_wxyz: np.ndarray,
                    r_gt_m: np.ndarray, thresholds: bool, truncated: np.ndarray | None = None,
                    box_pred_xyxy: np.ndarray | None = None, box_true_xyxy: np.ndarray | None = None,
                    confidence: np.ndarray | None = None) -> pd.DataFrame:
    """One row per image with its pose, its errors and its score.

    Args:
        filenames: (N,) file names.
        q_est_wxyz, q_gt_wxyz: (N, 4) scalar-first quaternions (camera frame <- body frame).
        r_est_m, r_gt_m: (N, 3) body origin in the camera frame [m].
        thresholds: apply the SPEC2021 thresholds (lightbox/sunlamp) or not (synthetic).
        truncated: (N,) bool, a keypoint outside the frame.
        box_pred_xyxy, box_true_xyxy: (N, 4) predicted and true keypoint boxes [full-resolution px].
        confidence: (N,) probability mass near the rotation mode.
    Returns:
        DataFrame with columns ``filename``, ``q_w..q_z`` (estimate), ``r_x_m..r_z_m`` (estimate),
        ``gt_q_w..gt_q_z``, ``gt_r_x_m..gt_r_z_m``, ``distance_m`` (true |r|), ``e_t_m``, ``e_t_rel``,
        ``e_r_deg``, ``score_orientation``, ``score_position``, ``score`` and, when given, ``truncated``,
        ``loc_iou``, ``confidence``.
    """
    s = per_image_scores(q_est_wxyz, r_est_m, q_gt_wxyz, r_gt_m, thresholds)
    q_est, r_est = np.asarray(q_est_wxyz, float), np.asarray(r_est_m, float)
    q_gt, r_gt = np.asarray(q_gt_wxyz, float), np.asarray(r_gt_m, float)
    df = pd.DataFrame({"filename": list(filenames)})
    for k, c in enumerate("wxyz"):
        df[f"q_{c}"] = q_est[:, k]
    for k, c in enumerate("xyz"):
        df[f"r_{c}_m"] = r_est[:, k]
    for k, c in enumerate("wxyz"):
        df[f"gt_q_{c}"] = q_gt[:, k]
    for k, c in enumerate("xyz"):
        df[f"gt_r_{c}_m"] = r_gt[:, k]
    df["distance_m"] = np.linalg.norm(r_gt, axis=1)
    df["e_t_m"] = s["e_t_m"]
    df["e_t_rel"] = s["e_t_rel"]
    df["e_r_deg"] = np.degrees(s["e_q_rad"])
    df["score_orientation"] = s["score_q"]
    df["score_position"] = s["score_t"]
    df["score"] = s["score"]
    if truncated is not None:
        df["truncated"] = np.asarray(truncated, dtype=bool)
    if box_pred_xyxy is not None and box_true_xyxy is not None:
        df["loc_iou"] = box_iou(np.asarray(box_pred_xyxy, float), np.asarray(box_true_xyxy, float))
    if confidence is not None:
        df["confidence"] = np.asarray(confidence, dtype=float)
    return df


def summarise(df: pd.DataFrame) -> dict[str, float]:
    """Aggregates of a per-image table (:func:`speedpose.scoring.summarise_pose_errors`, the same rule as
    validation): ``count``, ``score`` (+ its orientation/position parts), E_T [m] and E_R [deg] means and medians,
    ``acc@2/5/10/30`` [fraction of images], mean ``loc_iou`` when present."""
    if len(df) == 0:
        return {"count": 0}
    iou = df["loc_iou"].to_numpy(np.float64) if "loc_iou" in df else None
    return summarise_pose_errors(df["score_orientation"].to_numpy(np.float64),
                                 df["score_position"].to_numpy(np.float64), df["e_t_m"].to_numpy(np.float64),
                                 df["e_r_deg"].to_numpy(np.float64), iou)


def distance_bin_labels(bins=DISTANCE_BINS_M) -> list[str]:
    """``["<4 m", "4-6 m", ...]`` for the bin edges."""
    labels = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        if lo <= 0:
            labels.append(f"<{hi:g} m")
        elif math.isinf(hi):
            labels.append(f">={lo:g} m")
        else:
            labels.append(f"{lo:g}-{hi:g} m")
    return labels


def breakdowns(df: pd.DataFrame, bins=DISTANCE_BINS_M) -> dict[str, dict[str, dict[str, float]]]:
    """:func:`summarise` per true-distance bin and per truncation (``truncated`` / ``whole``); empty groups are
    left out."""
    out: dict[str, dict[str, dict[str, float]]] = {"distance": {}, "truncation": {}}
    cut = pd.cut(df["distance_m"], list(bins), right=False, labels=distance_bin_labels(bins))
    for label in cut.cat.categories:
        part = df[cut == label]
        if len(part):
            out["distance"][str(label)] = summarise(part)
    if "truncated" in df:
        for name, flag in (("truncated", True), ("whole", False)):
            part = df[df["truncated"] == flag]
            if len(part):
                out["truncation"][name] = summarise(part)
    return out


#: the rotation-error thresholds [deg] of the reliability table; the confidence is the mass within
#: :data:`CONFIDENCE_RADIUS_DEG` of the mode, so its calibration is judged against that radius
RELIABILITY_THRESHOLDS_DEG = (2.0, 5.0, 10.0, 15.0)
CONFIDENCE_RADIUS_DEG = 15.0


def reliability(df: pd.DataFrame, n_bins: int = 5) -> dict:
    """How well the rotation confidence predicts accuracy: images sorted by ``confidence`` into ``n_bins`` bins of
    (nearly) equal count; per bin the confidence range and mean, the count, and the observed Acc@k for each k of
    :data:`RELIABILITY_THRESHOLDS_DEG` (inclusive rule, :func:`speedpose.scoring.fraction_within_deg`).

    Returns:
        ``{"radius_deg": 15, "bins": [{"lo", "hi", "mean_confidence", "count", "acc@2", ...}],
        "ece": expected calibration error of the confidence against Acc@15 (count-weighted mean of
        |mean confidence - Acc@15| over the bins)}``; ``{}`` when the table has no ``confidence`` or no row.
    """
    if "confidence" not in df or len(df) == 0:
        return {}
    conf = df["confidence"].to_numpy(np.float64)
    err = df["e_r_deg"].to_numpy(np.float64)
    order = np.argsort(conf, kind="stable")
    bins, ece = [], 0.0
    for part in np.array_split(order, min(n_bins, len(order))):
        c, e = conf[part], err[part]
        row = {"lo": float(c.min()), "hi": float(c.max()), "mean_confidence": float(c.mean()), "count": len(part)}
        row.update({f"acc@{t:g}": fraction_within_deg(e, t) for t in RELIABILITY_THRESHOLDS_DEG})
        ece += len(part) * abs(row["mean_confidence"] - row[f"acc@{CONFIDENCE_RADIUS_DEG:g}"])
        bins.append(row)
    return {"radius_deg": CONFIDENCE_RADIUS_DEG, "bins": bins, "ece": ece / len(order)}


def keypoint_errors(kp_uv: np.ndarray, kp_conf: np.ndarray, camera, q_wxyz: np.ndarray, r_cam_m: np.ndarray,
                    min_confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the median distance [px of ``camera``] between the predicted keypoints (N, 11, 2) with confidence
    (N, 11) at least ``min_confidence`` and the label's keypoints projected with ``camera`` (distortion applied);
    NaN where no keypoint is confident.  Returns (errors (N,), confident counts (N,))."""
    true_uv = project_keypoints(camera, np.asarray(q_wxyz, float), np.asarray(r_cam_m, float))
    d = np.linalg.norm(np.asarray(kp_uv, float) - true_uv, axis=-1)
    ok = np.asarray(kp_conf, float) >= min_confidence
    err = np.array([np.median(di[m]) if m.any() else np.nan for di, m in zip(d, ok)])
    return err, ok.sum(axis=1)
