"""The SPEED+ training task for :func:`speedpose.training.fit` (``task: speedplus``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from speedpose.data.loader import open_split
from speedpose.data.subsets import evenly_spaced
from speedpose.errors import InputError
from speedpose.pose.config import SpeedplusExperiment
from speedpose.data.crop_set import CropSet
from speedpose.pose.dataset import CropSetSamples, PoseSamples, collate
from speedpose.pose.inference import predict_split
from speedpose.pose.keypoints import keypoint_loss
from speedpose.pose.localiser import localisation_loss, make_targets
from speedpose.pose.model import PoseModel, rotation_loss
from speedpose.scoring import box_iou, per_image_scores, summarise_pose_errors


def train_subset(n: int, fraction: float, seed: int) -> np.ndarray:
    """The seeded random subset of ``round(fraction * n)`` training records (sorted), at least one."""
    if fraction >= 1.0:
        return np.arange(n)
    k = max(1, int(round(fraction * n)))
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def core_kind(model) -> str:
    """``model.kind`` of a model or of a DDP-wrapped one."""
    return (model.module if hasattr(model, "module") else model).kind


def resolve_crop_set(path: str, root: str | None) -> Path:
    """``data.crop_set``: an absolute path, or a path relative to the working folder or to ``data.root``."""
    p = Path(path)
    if p.is_absolute() or p.exists() or not root:
        return p
    return Path(root) / p


class _IndexOnly(Dataset):
    """Validation batches carry only record indices: inference crops from predicted boxes itself."""

    def __init__(self, indices: np.ndarray):
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict:
        return {"index": torch.tensor(int(self.indices[k]))}


class SpeedplusTask:
    """Trains :class:`PoseModel` on stand-in or real SPEED+ (synthetic/train; validation on synthetic/validation).

    Validation runs the whole inference chain (localiser -> crop from the PREDICTED box -> mode search) and reports
    the SPEED+ score without thresholds (as on synthetic), E_T, E_R, Acc@k and the localisation IoU.
    """

    best_metric = "score"
    best_mode = "min"

    def __init__(self, cfg: SpeedplusExperiment):
        if not cfg.data.root and not cfg.data.prep_dir:
            raise InputError("no dataset: pass --root DIR (or set data.root / data.prep_dir in the config)")
        self.cfg = cfg
        where = cfg.data.prep_dir or cfg.data.root
        root = cfg.data.root
        self.train_split = open_split(where, "synthetic", "train", root=root)
        self.val_split = open_split(where, "synthetic", "validation", root=root)
        for s in (self.train_split, self.val_split):
            if not s.labelled.all():
                raise InputError(f"synthetic/{s.split} has unlabelled records: training needs poses", s.directory)
        self.train_indices = train_subset(len(self.train_split), cfg.data.split, cfg.train.seed)
        self.val_indices = evenly_spaced(len(self.val_split), cfg.data.val_limit)
        self.crop_set = None
        if cfg.data.crop_set and cfg.model.kind == "crop":
            self.crop_set = CropSet.open(resolve_crop_set(cfg.data.crop_set, root))
            self.crop_indices = train_subset(len(self.crop_set), cfg.data.split, cfg.train.seed)

    # ------------------------------------------------------------------------------------------- Task protocol
    def build_model(self) -> PoseModel:
        return PoseModel(self.cfg)

    collate = staticmethod(collate)

    def train_dataset(self) -> Dataset:
        if self.crop_set is not None:
            return CropSetSamples(self.crop_set, self.crop_indices, self.train_split, self.train_indices, self.cfg)
        return PoseSamples(self.train_split, self.train_indices, self.cfg, train=True)

    def val_dataset(self) -> Dataset:
        return _IndexOnly(self.val_indices)

    def training_step(self, model, batch: dict) -> dict[str, torch.Tensor]:
        out = model(batch)
        core = model.module if hasattr(model, "module") else model
        w = self.cfg.loss
        if core.kind == "crop":
            l_rot = rotation_loss(core.net.head.grid, out["coeffs"], batch["R_virt"], w.rotation_target)
            l_t = F.smooth_l1_loss(out["t"].float(), batch["t_enc"], beta=0.05)
            if "heatmap_logits" in out:
                grid = out["heatmap_logits"].shape[-2:]
                targets = make_targets(batch["loc_box_clipped"], batch["loc_box_unclipped"], tuple(grid),
                                       core.localiser.stride)
                l_loc = localisation_loss(out, targets)
            else:  # no localiser sample in this batch: a zero that still reaches every parameter (DDP)
                l_loc = sum(p.sum() for p in core.localiser.parameters()) * 0.0
            loss = w.rotation * l_rot + w.translation * l_t + w.localisation * l_loc
            logs = {"rot": l_rot.detach(), "trans": l_t.detach(), "loc": l_loc.detach()}
            if "kp_logits" in out:
                l_kp, l_vis = keypoint_loss(out, batch["kp_crop"], batch["kp_visible"],
                                            self.cfg.model.keypoints.sigma_px)
                loss = loss + w.keypoints * (l_kp + 0.1 * l_vis)
                logs.update(kp=l_kp.detach(), kp_vis=l_vis.detach())
            return {"loss": loss, **logs}
        l_rot = rotation_loss(core.net.head.grid, out["coeffs"], batch["R"], w.rotation_target)
        l_t = F.smooth_l1_loss(out["t"].float(), batch["t_norm"], beta=0.05)
        return {"loss": w.rotation * l_rot + w.translation * l_t, "rot": l_rot.detach(), "trans": l_t.detach()}

    def validate(self, model: PoseModel, loader) -> dict[str, float]:
        indices = np.concatenate([b["index"].cpu().numpy() for b in loader])
        device = next(model.parameters()).device
        bs = self.cfg.train.batch_size
        pred = predict_split(model, self.val_split, indices, self.cfg, device, batch_size=bs)
        metrics = pose_metrics(pred, self.val_split, thresholds=False)
        if core_kind(model) == "crop":  # the crop network alone: crops of the true keypoint boxes
            true_box = predict_split(model, self.val_split, indices, self.cfg, device, batch_size=bs,
                                     boxes_xyxy=self.val_split.kp_box(clipped=False)[indices])
            m = pose_metrics(true_box, self.val_split, thresholds=False)
            metrics.update({f"{k}_truebox": m[k] for k in ("e_r_median_deg", "acc@10", "e_t_median_m")})
        return metrics


def pose_metrics(pred, split, thresholds: bool) -> dict[str, float]:
    """SPEED+ score and errors of predictions against a labelled split, plus the localisation IoU against the true
    keypoint boxes: the keys of :func:`speedpose.scoring.summarise_pose_errors`."""
    idx = pred.indices
    s = per_image_scores(pred.q_wxyz, pred.r_cam_m, split.q_wxyz[idx], split.r_cam_m[idx], thresholds)
    iou = box_iou(pred.box_xyxy, split.kp_box(clipped=False)[idx])
    return summarise_pose_errors(s["score_q"], s["score_t"], s["e_t_m"], np.degrees(s["e_q_rad"]), iou)
