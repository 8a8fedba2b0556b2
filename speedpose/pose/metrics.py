"""Scores of pose predictions against a labelled split: what validation, the synthetic check and the tools report."""

from __future__ import annotations

import numpy as np

from speedpose.pose.inference import PosePredictions
from speedpose.scoring import box_iou, per_image_scores, summarise_pose_errors


def pose_metrics(pred: PosePredictions, split, thresholds: bool) -> dict[str, float]:
    """SPEED+ score and errors of predictions against a labelled split, plus the localisation IoU against the true
    keypoint boxes: the keys of :func:`speedpose.scoring.summarise_pose_errors`."""
    idx = pred.indices
    s = per_image_scores(pred.q_wxyz, pred.r_cam_m, split.q_wxyz[idx], split.r_cam_m[idx], thresholds)
    iou = box_iou(pred.box_xyxy, split.kp_box(clipped=False)[idx])
    return summarise_pose_errors(s["score_q"], s["score_t"], s["e_t_m"], np.degrees(s["e_q_rad"]), iou)
