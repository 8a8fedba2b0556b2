"""Inference of the SPEED+ pose pipeline on a preprocessed split: box -> crop -> rotation and translation.

The localiser runs on a batch of downscaled frames; each predicted box defines a virtual camera whose crop is warped
from the cheapest source image with enough resolution (:func:`speedpose.pose.crops.crop_source`); the crop network
predicts the rotation distribution (its mode found coarse-to-fine) and the encoded translation, both mapped back
to the real camera.  Used by validation during training, ``evaluate``, ``submit`` and ``predict``;
:func:`localise_and_crop` is the first half of the chain, shared with adaptation (which needs it with gradients, or
with an in-plane rotation of the crop).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from speedpose.camera import Camera
from speedpose.data.image_store import resize_gray
from speedpose.geometry.rotations import matrix_to_quat_wxyz
from speedpose.pose.config import SpeedplusExperiment
from speedpose.pose.crops import crop_camera, crop_source, decode_translation
from speedpose.pose.dataset import T_NORM_OFFSET, T_NORM_SCALE, TANGO_KP, crop_spec
from speedpose.pose.keypoints import decode_heatmaps, refine_pose, translation_from_keypoints
from speedpose.pose.localiser import boxes_to_full, decode_boxes
from speedpose.pose.model import PoseModel
from speedpose.pose.orientation import rotation_mode
from speedpose.virtual_camera import VirtualCamera


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


class LocalisedCrops(NamedTuple):
    """What :func:`localise_and_crop` returns for a batch of B records (crop models).

    Attributes:
        loc_out: the localiser's outputs (``heatmap_logits`` (B, 1, h, w), ``box_reg``), not detached; None when
            the boxes were given.
        box_xyxy: (B, 4) float64 boxes [full-resolution px, unclipped].
        loc_score: (B,) localiser peak scores (NaN when the boxes were given).
        cameras: the B crops' virtual cameras.
        crops_u8: (B, S, S) uint8 crops, S = ``crop_spec(cfg).size``.
    """

    loc_out: dict[str, torch.Tensor] | None
    box_xyxy: np.ndarray
    loc_score: np.ndarray
    cameras: list[VirtualCamera]
    crops_u8: np.ndarray


def localise_and_crop(model: PoseModel, split, indices, cfg: SpeedplusExperiment, device: torch.device,
                      in_plane_rad: float = 0.0, boxes_xyxy: np.ndarray | None = None,
                      source_cache: dict[int, tuple[np.ndarray, Camera]] | None = None) -> LocalisedCrops:
    """The first half of the inference chain of a crop model: the localiser on the downscaled frames of records
    ``indices`` of a :class:`~speedpose.data.loader.PreprocessedSplit`, boxes from its heatmap peaks, and a crop
    per box through a virtual camera (rotated in-plane by ``in_plane_rad``), warped from the cheapest source image
    with enough resolution.

    No ``torch.no_grad`` here: the caller decides (inference wraps it, refinement differentiates ``loc_out``); the
    boxes are always detached.

    Args:
        boxes_xyxy: (B, 4) boxes [full-resolution px] to crop instead of running the localiser.
        source_cache: filled with (and read for) each record's source image, to reuse it across calls that differ
            only in ``in_plane_rad`` (the angle does not change which source image a crop needs).
    """
    if model.kind != "crop":
        raise ValueError(f"localise_and_crop needs a crop model, got a {model.kind} model")
    indices = np.asarray(indices, dtype=np.int64)
    cam = split.camera
    loc_out = None
    if boxes_xyxy is None:
        loc_size = tuple(cfg.data.loc_size)
        loc = np.stack([resize_gray(split.image(int(i)), loc_size) for i in indices])[:, None]
        loc_out = model.localiser(torch.from_numpy(loc).to(device))
        boxes, _, score = decode_boxes(loc_out, model.localiser.stride)
        boxes_xyxy = boxes_to_full(boxes.detach().cpu().numpy().astype(np.float64), loc_size,
                                   (cam.width, cam.height))
        loc_score = score.detach().cpu().numpy()
    else:
        boxes_xyxy = np.asarray(boxes_xyxy, dtype=np.float64)
        loc_score = np.full(len(indices), np.nan)
    spec = crop_spec(cfg)
    cameras, crops = [], []
    for i, box in zip(indices.tolist(), boxes_xyxy):
        vc = crop_camera(cam, box, spec, in_plane_rad)
        if source_cache is not None and i in source_cache:
            source = source_cache[i]
        else:
            source = crop_source(split, i, vc)
            if source_cache is not None:
                source_cache[i] = source
        cameras.append(vc)
        crops.append(vc.warp(*source))
    return LocalisedCrops(loc_out, boxes_xyxy, loc_score, cameras, np.stack(crops))


def _solve_with_keypoints(net_out: dict[str, torch.Tensor], R_virt: np.ndarray, r_cam_m: np.ndarray,
                          cameras: list[VirtualCamera], cfg: SpeedplusExperiment
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``model.pose_solver`` kp_translation / fused for a batch: (R_virt (B, 3, 3), r_cam_m (B, 3), branch (B,)),
    the inputs kept (branch ``i2s``) where fewer than 3 keypoints are confident or the solution is degenerate."""
    uv, conf = decode_heatmaps(net_out)
    kc = cfg.model.keypoints
    R_out, r_out = R_virt.copy(), r_cam_m.copy()
    branch = np.full(len(R_virt), "i2s", dtype="<U14")
    for b, vc in enumerate(cameras):
        w = np.where(conf[b] >= kc.min_confidence, conf[b], 0.0)
        if (w > 0).sum() < 3:
            continue
        t_virt = translation_from_keypoints(R_virt[b], TANGO_KP, uv[b], w, vc.K)
        if t_virt is None:
            continue
        R_b, branch[b] = R_virt[b], "kp_translation"
        if cfg.model.pose_solver == "fused":
            refined = refine_pose(R_virt[b], t_virt, TANGO_KP, uv[b], w, vc.K)
            if refined is not None:
                (R_b, t_virt), branch[b] = refined, "fused"
        R_out[b], r_out[b] = R_b, vc.pose_from_virtual(R_b, t_virt)[1]
    return R_out, r_out, branch


def refined_boxes(camera: Camera, R_cam_body: np.ndarray, r_cam_m: np.ndarray, fallback_xyxy: np.ndarray
                  ) -> np.ndarray:
    """The keypoint boxes [full-resolution px, unclipped] of predicted poses (B, 3, 3), (B, 3) [m]: where to crop
    again.  A pose whose keypoints are not all at least 0.5 m in front of the camera, or whose box is degenerate,
    keeps its ``fallback_xyxy`` box (B, 4)."""
    kp_cam = np.einsum("bij,kj->bki", R_cam_body, TANGO_KP) + r_cam_m[:, None, :]
    ok = (kp_cam[..., 2] > 0.5).all(axis=1)
    uv = camera.project(np.where(ok[:, None, None], kp_cam, np.array([0.0, 0.0, 1.0])))
    boxes = np.concatenate([uv.min(axis=1), uv.max(axis=1)], axis=1)
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    ok &= np.isfinite(boxes).all(axis=1) & (side > 4) & (side < 20 * max(camera.width, camera.height))
    return np.where(ok[:, None], boxes, fallback_xyxy)


@torch.no_grad()
def predict_split(model: PoseModel, split, indices, cfg: SpeedplusExperiment, device: torch.device | str = "cpu",
                  batch_size: int = 16, keep_coeffs: bool = False, progress: bool = False,
                  boxes_xyxy: np.ndarray | None = None) -> PosePredictions:
    """Predict poses for ``indices`` of a :class:`~speedpose.data.loader.PreprocessedSplit` (labels unused).

    ``boxes_xyxy`` (len(indices), 4) [full-resolution px]: crop these boxes instead of the localiser's (crop models;
    e.g. the true keypoint boxes, to measure the crop network apart from the localiser).  Crop models then crop
    again ``cfg.model.refine_passes`` times around the keypoint box of the pose just predicted
    (:func:`refined_boxes`), which corrects a box the localiser got wrong; ``box_xyxy`` stays the first box."""
    model.eval()
    device = torch.device(device)
    indices = np.asarray(indices, dtype=np.int64)
    spec = crop_spec(cfg)
    out: dict[str, list] = {k: [] for k in ("R", "r", "conf", "box", "score", "Rvc", "coeffs", "branch")}
    bar = tqdm(total=len(indices), desc=f"predict {split.domain}", unit="img", disable=not progress)
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        if model.kind == "crop":
            lc = localise_and_crop(model, split, chunk, cfg, device, boxes_xyxy=None if boxes_xyxy is None
                                   else boxes_xyxy[start:start + batch_size])
            loc_box, loc_score = lc.box_xyxy, lc.loc_score
            for p in range(1 + cfg.model.refine_passes):
                if p:  # crop again around the keypoint box of the previous pass's pose
                    lc = localise_and_crop(model, split, chunk, cfg, device,
                                           boxes_xyxy=refined_boxes(split.camera, R, r, lc.box_xyxy))
                net_out = model.net(torch.from_numpy(lc.crops_u8[:, None]).to(device))
                R_virt, conf = rotation_mode(model.net.head, net_out["coeffs"], cfg.model.i2s.infer_level)
                R_virt = R_virt.double().cpu().numpy()
                t = net_out["t"].double().cpu().numpy()
                r = np.stack([decode_translation(vc, tk, spec) for vc, tk in zip(lc.cameras, t)])
                branch = np.full(len(chunk), "i2s", dtype="<U14")
                if cfg.model.pose_solver != "i2s" and "kp_logits" in net_out:
                    R_virt, r, branch = _solve_with_keypoints(net_out, R_virt, r, lc.cameras, cfg)
                Rvc = np.stack([vc.R_cam_virt for vc in lc.cameras])
                R = Rvc @ R_virt
            out["R"].append(R)
            out["r"].append(r)
            out["box"].append(loc_box)
            out["score"].append(loc_score)
            out["Rvc"].append(Rvc)
            out["branch"].append(branch)
        else:
            s = cfg.data.fullimage_size
            imgs = np.stack([resize_gray(split.image(int(i)), (s, s)) for i in chunk])[:, None]
            net_out = model.net(torch.from_numpy(imgs).to(device))
            R, conf = rotation_mode(model.net.head, net_out["coeffs"], cfg.model.i2s.infer_level)
            out["R"].append(R.double().cpu().numpy())
            out["r"].append(net_out["t"].double().cpu().numpy() * T_NORM_SCALE + T_NORM_OFFSET)
            out["box"].append(np.full((len(chunk), 4), np.nan))
            out["score"].append(np.full(len(chunk), np.nan))
            out["Rvc"].append(np.repeat(np.eye(3)[None], len(chunk), axis=0))
            out["branch"].append(np.full(len(chunk), "i2s", dtype="<U14"))
        out["conf"].append(conf.float().cpu().numpy())
        if keep_coeffs:
            out["coeffs"].append(net_out["coeffs"].float().cpu().numpy())
        bar.update(len(chunk))
    bar.close()
    if len(indices) == 0:
        z = np.zeros((0,))
        return PosePredictions(indices, np.zeros((0, 4)), np.zeros((0, 3)), z, np.zeros((0, 4)), z,
                               np.zeros((0, 3, 3)), branch=np.zeros(0, dtype="<U14"))
    return PosePredictions(
        indices=indices, q_wxyz=matrix_to_quat_wxyz(np.concatenate(out["R"])), r_cam_m=np.concatenate(out["r"]),
        confidence=np.concatenate(out["conf"]), box_xyxy=np.concatenate(out["box"]),
        loc_score=np.concatenate(out["score"]), R_cam_virt=np.concatenate(out["Rvc"]),
        coeffs=np.concatenate(out["coeffs"]) if keep_coeffs else None, branch=np.concatenate(out["branch"]))
