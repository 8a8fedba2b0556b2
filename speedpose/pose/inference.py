"""Inference of a SPEED+ pose model on a preprocessed split: poses of its records, batch by batch.

How a batch of records becomes poses is the model kind's (:meth:`speedpose.pose.kinds.base.ModelKind.predict_batch`:
for the ``crop`` kind, localiser -> box -> virtual-camera crop -> rotation mode and decoded translation; for the
``fullimage`` kind, the resized frame -> rotation mode and translation); this module batches, concatenates and
converts.  Used by validation during training, ``evaluate``, ``submit``, ``predict`` and adaptation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from speedpose.geometry.rotations import matrix_to_quat_wxyz
from speedpose.pose.model import PoseModel

if TYPE_CHECKING:
    from speedpose.pose.kinds.base import ModelKind


@dataclass
class PosePredictions:
    """Predictions for records ``indices`` of a split.

    Attributes:
        indices: (N,) record indices.
        q_wxyz: (N, 4) scalar-first quaternions (w >= 0), real camera frame.
        r_cam_m: (N, 3) translations [m].
        confidence: (N,) probability mass of the rotation distribution near its mode.
        box_xyxy: (N, 4) predicted keypoint box [full-resolution px] (NaN for the fullimage model).
        loc_score: (N,) localiser peak score (NaN for the fullimage model).
        coeffs: (N, n_coeffs) Fourier coefficients in the crop's frame, when asked for (plots).
        R_cam_virt: (N, 3, 3) the crops' virtual-camera rotations (identity for fullimage).
        branch: (N,) how each pose was obtained (``model.pose_solver``): ``i2s``, ``kp_translation`` or ``fused``.
        kp_uv: (N, 11, 2) predicted Tango keypoints [full-resolution px, real distorted image], or None without a
            keypoint head.
        kp_conf: (N, 11) their confidences in [0, 1], or None.
    """

    indices: np.ndarray
    q_wxyz: np.ndarray
    r_cam_m: np.ndarray
    confidence: np.ndarray
    box_xyxy: np.ndarray
    loc_score: np.ndarray
    R_cam_virt: np.ndarray
    coeffs: np.ndarray | None = field(default=None, repr=False)
    branch: np.ndarray | None = None
    kp_uv: np.ndarray | None = None
    kp_conf: np.ndarray | None = None


@torch.no_grad()
def predict_split(model: PoseModel, split, indices, kind: ModelKind, device: torch.device | str = "cpu",
                  batch_size: int = 16, keep_coeffs: bool = False, progress: bool = False,
                  boxes_xyxy: np.ndarray | None = None) -> PosePredictions:
    """Predict poses for ``indices`` of a :class:`~speedpose.data.loader.PreprocessedSplit` (labels unused) with
    ``model``, whose kind (and inference settings) is ``kind``.

    ``boxes_xyxy`` (len(indices), 4) [full-resolution px]: crop these boxes instead of the localiser's (kinds that
    crop; e.g. the true keypoint boxes, to measure the crop network apart from the localiser)."""
    model.eval()
    device = torch.device(device)
    indices = np.asarray(indices, dtype=np.int64)
    parts = []
    bar = tqdm(total=len(indices), desc=f"predict {split.domain}", unit="img", disable=not progress)
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        boxes = None if boxes_xyxy is None else boxes_xyxy[start:start + batch_size]
        parts.append(kind.predict_batch(model, split, chunk, device, boxes))
        bar.update(len(chunk))
    bar.close()
    if len(indices) == 0:
        z = np.zeros((0,))
        return PosePredictions(indices, np.zeros((0, 4)), np.zeros((0, 3)), z, np.zeros((0, 4)), z,
                               np.zeros((0, 3, 3)), branch=np.zeros(0, dtype="<U14"))

    def cat(name: str) -> np.ndarray | None:
        arrays = [getattr(p, name) for p in parts]
        return None if any(a is None for a in arrays) else np.concatenate(arrays)

    return PosePredictions(
        indices=indices, q_wxyz=matrix_to_quat_wxyz(cat("R_cam_body")), r_cam_m=cat("r_cam_m"),
        confidence=cat("confidence"), box_xyxy=cat("box_xyxy"), loc_score=cat("loc_score"),
        R_cam_virt=cat("R_cam_virt"), branch=cat("branch"),
        coeffs=np.concatenate([p.coeffs.float().cpu().numpy() for p in parts]) if keep_coeffs else None,
        kp_uv=cat("kp_uv"), kp_conf=cat("kp_conf"))
