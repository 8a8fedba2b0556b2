"""Pseudo-labels for self-training: which target predictions to trust, from three label-free signals.

1. **Confidence** of the I2S distribution: the probability mass within 15 deg of its mode (what
   :func:`~speedpose.pose.inference.predict_split` returns).
2. **Box / pose consistency**: the IoU between the localiser's box and the box of the Tango keypoints reprojected
   with the predicted pose (both unclipped, full-resolution px): a pose whose translation or rotation disagrees with
   where the spacecraft was found gets a low IoU.
3. **Agreement across augmentations**: the rotation predicted again on crops of the same box with another in-plane
   rotation of the virtual camera and the training's photometric augmentation (mapped back to the camera frame),
   compared with the plain prediction; the largest angle over the copies.
4. **Keypoint / I2S agreement** (models whose ``model.pose_solver`` uses the keypoint head): the pose's ``branch``;
   with ``keypoint_gate``, only images where enough predicted keypoints agreed with the I2S rotation for the
   keypoint solver to run (branch ``kp_translation`` or ``fused``; the pseudo-label is then that solver's pose).

Images passing all thresholds are ranked by confidence and at most ``max_fraction`` of the target images are
kept.  Only images are read (the target split should be an :func:`~speedpose.adapt.targets.unlabelled_view`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from speedpose.adapt.config import SelfTrainConfig
from speedpose.camera import Camera
from speedpose.geometry.rotations import geodesic_angle_matrix, quat_wxyz_to_matrix
from speedpose.pose.inference import predict_split
from speedpose.pose.kinds.base import ModelKind
from speedpose.pose.model import PoseModel
from speedpose.pose.orientation import rotation_mode
from speedpose.scoring import box_iou
from speedpose.tango import keypoint_box, project_keypoints, tango_keypoints_body
from speedpose.training.seeding import mix_seed


@dataclass
class PseudoLabels:
    """Predictions on every target image with their trust signals.

    Attributes:
        q_wxyz: (N, 4) predicted rotations (scalar first, camera frame).
        r_cam_m: (N, 3) predicted translations [m, camera frame].
        confidence: (N,) rotation mass within 15 deg of the mode.
        box_iou: (N,) IoU of the localiser box and the reprojected keypoint box (NaN for fullimage models).
        aug_deg: (N,) largest rotation change over the augmented copies [deg] (0 without copies).
        selected: (N,) bool, the pseudo-labelled images.
        branch: (N,) how each pose was obtained (``i2s``, ``kp_translation``, ``fused``).
    """

    q_wxyz: np.ndarray
    r_cam_m: np.ndarray
    confidence: np.ndarray
    box_iou: np.ndarray
    aug_deg: np.ndarray
    selected: np.ndarray
    branch: np.ndarray

    COLUMNS = ("q_w", "q_x", "q_y", "q_z", "r_x_m", "r_y_m", "r_z_m", "confidence", "box_iou", "aug_deg",
               "selected", "branch")

    def to_frame(self, filenames: list[str]) -> pd.DataFrame:
        """One row per image: ``filename``, ``index``, the pose, the signals and ``selected``."""
        df = pd.DataFrame({"filename": filenames, "index": np.arange(len(filenames))})
        for j, c in enumerate(self.COLUMNS[:4]):
            df[c] = self.q_wxyz[:, j]
        for j, c in enumerate(self.COLUMNS[4:7]):
            df[c] = self.r_cam_m[:, j]
        df["confidence"], df["box_iou"], df["aug_deg"] = self.confidence, self.box_iou, self.aug_deg
        df["selected"], df["branch"] = self.selected, self.branch
        return df

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> "PseudoLabels":
        return cls(df[list(cls.COLUMNS[:4])].to_numpy(np.float64), df[list(cls.COLUMNS[4:7])].to_numpy(np.float64),
                   df["confidence"].to_numpy(np.float64), df["box_iou"].to_numpy(np.float64),
                   df["aug_deg"].to_numpy(np.float64), df["selected"].to_numpy(bool),
                   df["branch"].to_numpy(str))

    @property
    def indices(self) -> np.ndarray:
        """(K,) the selected records."""
        return np.flatnonzero(self.selected)


def reprojection_iou(camera: Camera, q_wxyz: np.ndarray, r_cam_m: np.ndarray, box_xyxy: np.ndarray) -> np.ndarray:
    """IoU of boxes (N, 4) [px] with the unclipped boxes of the keypoints projected with poses (N, 4), (N, 3);
    0 where a pose puts a keypoint behind the camera, NaN where the box is NaN."""
    q = np.asarray(q_wxyz, dtype=np.float64)
    r = np.asarray(r_cam_m, dtype=np.float64)
    box = np.asarray(box_xyxy, dtype=np.float64)
    out = np.full(len(q), np.nan)
    ok = np.isfinite(box).all(axis=1) & np.isfinite(q).all(axis=1) & np.isfinite(r).all(axis=1)
    if not ok.any():
        return out
    depth = (tango_keypoints_body() @ quat_wxyz_to_matrix(q[ok]).transpose(0, 2, 1))[..., 2] + r[ok, 2:3]
    kp = project_keypoints(camera, q[ok], r[ok])
    iou = box_iou(keypoint_box(kp, camera.width, camera.height).unclipped, box[ok])
    out[ok] = np.where((depth > 0).all(axis=1) & np.isfinite(iou), iou, 0.0)
    return out


def in_plane_angles_rad(n: int, max_deg: float) -> np.ndarray:
    """``n`` in-plane rotations evenly spread inside ``+-max_deg`` (endpoints excluded) [rad]."""
    k = np.arange(1, n + 1)
    return np.radians(max_deg) * (2.0 * k / (n + 1) - 1.0)


@torch.no_grad()
def augmented_rotations(model: PoseModel, split, indices: np.ndarray, boxes_xyxy: np.ndarray, kind: ModelKind,
                        n_aug: int, seed: int, device: torch.device, batch_size: int = 16, progress: bool = False
                        ) -> np.ndarray:
    """Rotations predicted on ``n_aug`` augmented copies of each image, in the real camera frame.

    The kind's network inputs of the given boxes (N, 4) [px] with the in-plane rotations of
    :func:`in_plane_angles_rad` (within the training's ``augment.in_plane_deg``; crop models: crops through rotated
    virtual cameras, fullimage models: the same resized frames, which neither boxes nor angles change), then the
    training's photometric augmentation seeded by ``(seed, copy, index)``.

    Returns:
        (n_aug, N, 3, 3) rotation matrices R_cam_body.
    """
    model.eval()
    indices = np.asarray(indices, dtype=np.int64)
    out = np.zeros((n_aug, len(indices), 3, 3))
    if n_aug == 0 or len(indices) == 0:
        return out
    photometric = kind.photometric()
    thetas = in_plane_angles_rad(n_aug, kind.augment.in_plane_deg if kind.augment.enabled else 0.0)
    bar = tqdm(total=len(indices), desc=f"augmented copies {split.domain}", unit="img", disable=not progress,
               leave=False)
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        cache: dict = {}  # per record: what every copy reuses (the source image of its crops, its resized frame)
        for k in range(n_aug):
            inp = kind.network_inputs(model, split, chunk, device, float(thetas[k]),
                                      boxes_xyxy[start:start + len(chunk)], cache)
            copies = np.stack([photometric(img, mix_seed(seed, k, int(i))) for img, i in zip(inp.images_u8, chunk)])
            coeffs = model.net_outputs(copies, device)["coeffs"]
            R_virt, _ = rotation_mode(model.net.head, coeffs, kind.infer_level)
            out[k, start:start + len(chunk)] = inp.R_cam_virt @ R_virt.double().cpu().numpy()
        bar.update(len(chunk))
    bar.close()
    return out


def select(confidence: np.ndarray, box_iou_: np.ndarray, aug_deg: np.ndarray, st: SelfTrainConfig,
           keypoints_agree: np.ndarray | None = None) -> np.ndarray:
    """(N,) bool: images passing every threshold of ``st``, at most ``max_fraction`` of N (highest confidence
    first; ties by index).  A NaN IoU (no box) is not filtered.  ``keypoints_agree``: (N,) bool, the keypoint
    gate (None: no gate)."""
    n = len(confidence)
    iou_ok = np.isnan(box_iou_) | (np.nan_to_num(box_iou_, nan=0.0) >= st.min_box_iou)
    ok = (confidence >= st.min_confidence) & iou_ok & (aug_deg <= st.max_aug_deg) & np.isfinite(confidence)
    if keypoints_agree is not None:
        ok &= np.asarray(keypoints_agree, dtype=bool)
    keep = int(np.floor(st.max_fraction * n + 1e-9))
    cand = np.flatnonzero(ok)
    order = cand[np.lexsort((cand, -confidence[cand]))][:keep]
    out = np.zeros(n, dtype=bool)
    out[order] = True
    return out


def make_pseudo_labels(model: PoseModel, split, kind: ModelKind, st: SelfTrainConfig,
                       device: torch.device, seed: int, batch_size: int = 16, progress: bool = False
                       ) -> PseudoLabels:
    """Predict every image of the unlabelled ``split`` with ``model`` of ``kind``, measure the signals and select
    (module docstring)."""
    idx = np.arange(len(split))
    pred = predict_split(model, split, idx, kind, device, batch_size=batch_size, progress=progress)
    iou = reprojection_iou(split.camera, pred.q_wxyz, pred.r_cam_m, pred.box_xyxy)
    R = quat_wxyz_to_matrix(pred.q_wxyz)
    R_aug = augmented_rotations(model, split, idx, pred.box_xyxy, kind, st.augmentations, seed, device, batch_size,
                                progress)
    aug = np.zeros(len(idx))
    if st.augmentations:
        aug = np.degrees(geodesic_angle_matrix(R_aug, np.broadcast_to(R, R_aug.shape))).max(axis=0)
    conf = pred.confidence.astype(np.float64)
    branch = pred.branch if pred.branch is not None else np.full(len(idx), "i2s")
    solver = getattr(getattr(kind, "inference", None), "pose_solver", "i2s")  # crop kinds only
    agree = branch != "i2s" if st.keypoint_gate and solver != "i2s" else None
    return PseudoLabels(pred.q_wxyz, pred.r_cam_m, conf, iou, aug, select(conf, iou, aug, st, agree), branch)
