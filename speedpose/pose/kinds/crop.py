"""The ``crop`` model kind (the pipeline): find the spacecraft, crop it through a virtual camera, then the rotation
from I2S and the translation from geometry.

* Networks: a :class:`~speedpose.pose.localiser.Localiser` on the downscaled full frame and a
  :class:`~speedpose.pose.model.PoseNet` on the crops (the rotation in the virtual camera, the translation encoded
  as ``(du, dv, log(z / z0))`` by :mod:`speedpose.pose.crops`, and optionally the keypoint heatmaps).
* Training samples: :class:`~speedpose.pose.dataset.CropSamples` warped from the frames, or
  :class:`~speedpose.pose.dataset.CropSetSamples` of a rendered crop set (``data.crop_set``).
* Loss: rotation + translation + localisation (+ keypoints), weighted by ``loss:``.
* Inference: :func:`localise_and_crop`, the crop network, the rotation mode and the decoded translation mapped back
  to the real camera; ``model.pose_solver`` may take the translation (and the pose) from the keypoints, and
  ``model.refine_passes`` crops again around the keypoint box of the pose just predicted, and
  ``model.in_plane_views`` combines crops rolled about the optical axis: the mean of their log-densities, of their
  translations, and per keypoint the medoid of their keypoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from speedpose.data.crop_set import CropSet
from speedpose.data.image_store import resize_gray
from speedpose.errors import InputError
from speedpose.pose.augment import Photometric
from speedpose.pose.config import AugmentConfig, LossConfig, ModelConfig, SpeedplusExperiment
from speedpose.pose.crops import (CropSpec, crop_camera, crop_source, decode_translation, mean_jitter_scale,
                                  refined_boxes, scale_boxes, source_reduction)
from speedpose.pose.dataset import CropSampling, CropSamples, CropSetSamples
from speedpose.pose.inference import predict_split
from speedpose.pose.keypoints import decode_heatmaps, keypoint_loss, keypoint_medoids, solve_pose_from_keypoints
from speedpose.pose.kinds.base import BatchPoses, ModelKind, NetworkInputs
from speedpose.pose.localiser import Localiser, boxes_to_full, decode_boxes, localisation_loss, make_targets
from speedpose.pose.metrics import pose_metrics
from speedpose.pose.model import PoseModel, build_pose_net, rotation_loss, unwrap
from speedpose.pose.orientation import mean_over_views, rotation_alternatives, rotation_mode


@dataclass(frozen=True)
class CropInference:
    """What inference of the crop kind needs besides the weights.

    Attributes:
        spec: the crops' size and margin (``data.crop_size``, ``data.crop_margin``).
        loc_size: (W, H) of the localiser's input [px] (``data.loc_size``).
        infer_level: finest HEALPix level of the rotation mode search (``model.i2s.infer_level``).
        refine_passes: crops again around the keypoint box of the pose just predicted (``model.refine_passes``).
        pose_solver: ``i2s``, ``kp_translation`` or ``fused`` (``model.pose_solver``; the keypoint solvers need the
            keypoint head).
        kp_min_confidence: keypoints below this confidence are not used (``model.keypoints.min_confidence``).
        kp_inlier_px, kp_min_inliers: the inlier gate [crop px] and the fewest inliers of the keypoint solvers
            (``model.keypoints.inlier_px``, ``model.keypoints.min_inliers``).
        kp_hypotheses: rotations the keypoint solvers try, the I2S mode first (``model.keypoints.hypotheses``).
        in_plane_views: crops of each box, their virtual cameras rolled 360 / n deg apart about the optical axis,
            combined as :class:`_Views` says (``model.in_plane_views``; 1 = one crop).
        box_scale: each box is scaled by this before it is cropped (``data.infer_box_scale``, by default the centre
            of the training box jitter ``augment.box_scale``): the crops are then framed as the average training
            crop; a network trained on jittered boxes is most accurate there (measured: on crops framed at the
            jitter's lower end its keypoints shrink towards the crop centre and the depth comes out long).
    """

    spec: CropSpec
    loc_size: tuple[int, int]
    infer_level: int
    refine_passes: int = 0
    pose_solver: Literal["i2s", "kp_translation", "fused"] = "i2s"
    kp_min_confidence: float = 0.3
    kp_inlier_px: float = 6.0
    kp_min_inliers: int = 4
    kp_hypotheses: int = 3
    box_scale: float = 1.0
    in_plane_views: int = 1


def localise_and_crop(model: PoseModel, split, indices, spec: CropSpec, loc_size: tuple[int, int],
                      device: torch.device, in_plane_rad: float = 0.0, boxes_xyxy: np.ndarray | None = None,
                      source_cache: dict | None = None, box_scale: float = 1.0) -> NetworkInputs:
    """The first half of the inference chain of a crop model: the localiser on the frames of records ``indices`` of
    a :class:`~speedpose.data.loader.PreprocessedSplit` resized to ``loc_size`` (W, H), boxes from its heatmap
    peaks, and a crop of ``spec`` per box through a virtual camera (rotated in-plane by ``in_plane_rad``), warped
    from the cheapest source image with enough resolution.

    No ``torch.no_grad`` here: the caller decides (inference wraps it, refinement differentiates ``loc_out``); the
    boxes are always detached.

    Args:
        boxes_xyxy: (B, 4) boxes [full-resolution px] to crop instead of running the localiser.
        source_cache: filled with (and read for) the records' source images, keyed by record and
            :func:`~speedpose.pose.crops.source_reduction`, to reuse them across calls that differ only in
            ``in_plane_rad`` (a rolled crop covers the box with another focal length, which may need another source).
        box_scale: crop each box scaled by this about its centre (:attr:`CropInference.box_scale`); the returned
            ``box_xyxy`` are the boxes before scaling.
    """
    if model.localiser is None:
        raise ValueError("localise_and_crop needs a crop model (with a localiser), got a model without one")
    indices = np.asarray(indices, dtype=np.int64)
    cam = split.camera
    loc_out = None
    if boxes_xyxy is None:
        loc = np.stack([resize_gray(split.image(int(i)), loc_size) for i in indices])[:, None]
        loc_out = model.localiser(torch.from_numpy(loc).to(device))
        boxes, _, score = decode_boxes(loc_out, model.localiser.stride)
        boxes_xyxy = boxes_to_full(boxes.detach().cpu().numpy().astype(np.float64), loc_size,
                                   (cam.width, cam.height))
        loc_score = score.detach().cpu().numpy()
    else:
        boxes_xyxy = np.asarray(boxes_xyxy, dtype=np.float64)
        loc_score = np.full(len(indices), np.nan)
    cameras, crops = [], []
    for i, box in zip(indices.tolist(), scale_boxes(boxes_xyxy, box_scale)):
        vc = crop_camera(cam, box, spec, in_plane_rad)
        if source_cache is None:
            source = crop_source(split, i, vc)
        else:
            key = (i, source_reduction(split, vc))
            if key not in source_cache:
                source_cache[key] = crop_source(split, i, vc)
            source = source_cache[key]
        cameras.append(vc)
        crops.append(vc.warp(*source))
    R_cam_virt = np.stack([vc.R_cam_virt for vc in cameras])
    return NetworkInputs(np.stack(crops), R_cam_virt, boxes_xyxy, loc_score, loc_out, cameras)


class _Views(NamedTuple):
    """The in-plane views of a batch of B boxes, combined in the first view's virtual camera.

    Attributes:
        inputs: the first view's network inputs (its cameras, crops and the localiser's boxes).
        coeffs: (B, n_coeffs) the views' rotation distributions combined (:func:`mean_over_views`: the mean of
            their log-densities).
        r_cam_m: (B, 3) the mean of the views' decoded translations [m, real camera].
        kp_uv: (B, 11, 2) per keypoint, the medoid of the views' keypoints in the first view's pixels
            (:func:`~speedpose.pose.keypoints.keypoint_medoids`), or None without a keypoint head.
        kp_conf: (B, 11) the medoids' confidences, or None.
    """

    inputs: NetworkInputs
    coeffs: torch.Tensor
    r_cam_m: np.ndarray
    kp_uv: np.ndarray | None
    kp_conf: np.ndarray | None


@dataclass(frozen=True)
class CropKind(ModelKind):
    """The crop kind (module docstring) with its settings.

    Attributes:
        networks: the ``model:`` section (encoder, heads, localiser).
        sampling: how training samples are made.
        inference: what inference needs.
        weights: the ``loss:`` weights.
        crop_set: ``data.crop_set`` (a path, relative ones resolved by :func:`speedpose.pose.task.resolve_crop_set`)
            or None.
    """

    name: ClassVar[str] = "crop"

    networks: ModelConfig
    sampling: CropSampling
    inference: CropInference
    weights: LossConfig
    crop_set: str | None = None

    @classmethod
    def from_experiment(cls, cfg: SpeedplusExperiment) -> CropKind:
        d, m = cfg.data, cfg.model
        spec = CropSpec(d.crop_size, d.crop_margin)
        loc_size = (int(d.loc_size[0]), int(d.loc_size[1]))
        return cls(networks=m, sampling=CropSampling(spec, loc_size, d.loc_fraction, cfg.augment),
                   inference=CropInference(spec, loc_size, m.i2s.infer_level, m.refine_passes, m.pose_solver,
                                           m.keypoints.min_confidence, m.keypoints.inlier_px,
                                           m.keypoints.min_inliers, m.keypoints.hypotheses,
                                           d.infer_box_scale or mean_jitter_scale(cfg.augment.box_scale, spec),
                                           m.in_plane_views),
                   weights=cfg.loss, crop_set=d.crop_set or None)

    @property
    def infer_level(self) -> int:
        return self.inference.infer_level

    @property
    def augment(self) -> AugmentConfig:
        return self.sampling.augment

    def photometric(self) -> Photometric:
        return self.sampling.photometric()

    # ------------------------------------------------------------------------------------------- training
    def build_model(self) -> PoseModel:
        lc = self.networks.localiser
        localiser = Localiser(lc.width, lc.stride, lc.backbone, lc.pretrained)  # first: the seeded initialisation
        return PoseModel(build_pose_net(self.networks, self.inference.spec.size), localiser, input_key="crop")

    def samples(self, split, indices: np.ndarray, train: bool) -> CropSamples:
        return CropSamples(split, indices, self.sampling, train)

    def training_set(self, frames, frame_indices: np.ndarray, crop_set: CropSet | None = None,
                     crop_indices: np.ndarray | None = None) -> Dataset:
        """Crops of the crop set (when given; the localiser's samples from ``frames``), or crops of ``frames``."""
        if crop_set is not None:
            rendered = tuple(float(x) for x in crop_set.params.get("box_scale", (1.0, 1.0)))
            centre = mean_jitter_scale(rendered, self.inference.spec)
            if abs(centre - self.inference.box_scale) > 1e-6:
                raise InputError(f"crop set rendered with box jitter scale {list(rendered)} (mean {centre:.4f}), "
                                 f"but inference would frame its crops at {self.inference.box_scale:.4f} "
                                 f"(data.infer_box_scale, or the mean of augment.box_scale="
                                 f"{list(self.sampling.augment.box_scale)}): set augment.box_scale to "
                                 f"{list(rendered)} or data.infer_box_scale={centre:.4f}", crop_set.directory)
            return CropSetSamples(crop_set, crop_indices, frames, frame_indices, self.sampling)
        return self.samples(frames, frame_indices, train=True)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rotation (in the crop's virtual camera) + encoded translation + localisation (+ keypoints)."""
        out = model(batch)
        core = unwrap(model)
        w = self.weights
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
            kc = self.networks.keypoints
            l_kp, l_vis = keypoint_loss(out, batch["kp_crop"], batch["kp_visible"], kc.sigma_px, kc.stride)
            loss = loss + w.keypoints * (l_kp + 0.1 * l_vis)
            logs.update(kp=l_kp.detach(), kp_vis=l_vis.detach())
        return {"loss": loss, **logs}

    # ------------------------------------------------------------------------------------------- inference
    def network_inputs(self, model: PoseModel, split, indices: np.ndarray, device: torch.device,
                       in_plane_rad: float = 0.0, boxes_xyxy: np.ndarray | None = None,
                       cache: dict | None = None) -> NetworkInputs:
        """:func:`localise_and_crop` (``cache``: the records' source images)."""
        return localise_and_crop(model, split, indices, self.inference.spec, self.inference.loc_size, device,
                                 in_plane_rad, boxes_xyxy, cache, self.inference.box_scale)

    def _views(self, model: PoseModel, split, indices: np.ndarray, device: torch.device,
                boxes_xyxy: np.ndarray | None) -> _Views:
        """The crop network on :attr:`CropInference.in_plane_views` crops of each box (the localiser's, or
        ``boxes_xyxy``), rolled evenly about the optical axis; the views combined as :class:`_Views` says."""
        n = self.inference.in_plane_views
        cache: dict = {}
        first = None
        coeffs, R_cam_virt, r, kp = [], [], [], []
        for v in range(n):
            inp = self.network_inputs(model, split, indices, device, in_plane_rad=2 * math.pi * v / n,
                                      boxes_xyxy=boxes_xyxy if first is None else first.box_xyxy, cache=cache)
            if first is None:
                first = inp
            out = model.net_outputs(inp.images_u8, device)
            coeffs.append(out["coeffs"])
            R_cam_virt.append(inp.R_cam_virt)
            t = out["t"].double().cpu().numpy()
            r.append(np.stack([decode_translation(vc, tk, self.inference.spec) for vc, tk in zip(inp.cameras, t)]))
            if "kp_logits" in out:
                uv, conf = decode_heatmaps(out, self.networks.keypoints.stride)
                if inp is not first:  # into the first view's pixels
                    uv = np.stack([vc.pixels_in(vc0, k) for vc, vc0, k in zip(inp.cameras, first.cameras, uv)])
                kp.append((uv, conf))
        combined = coeffs[0] if n == 1 else mean_over_views(torch.stack(coeffs), np.stack(R_cam_virt))
        kp_uv, kp_conf = keypoint_medoids(*map(np.stack, zip(*kp))) if kp else (None, None)
        return _Views(first, combined, np.mean(r, axis=0), kp_uv, kp_conf)

    @torch.no_grad()
    def predict_batch(self, model: PoseModel, split, indices: np.ndarray, device: torch.device,
                      boxes_xyxy: np.ndarray | None = None) -> BatchPoses:
        """The chain of the module docstring; ``box_xyxy`` and ``loc_score`` stay those of the first crop."""
        inf = self.inference
        boxes = boxes_xyxy
        for p in range(1 + inf.refine_passes):
            if p:  # crop again around the keypoint box of the previous pass's pose
                boxes = refined_boxes(split.camera, R, r, inp.box_xyxy)
            views = self._views(model, split, indices, device, boxes)
            inp, r, kp_virt, kp_conf = views.inputs, views.r_cam_m, views.kp_uv, views.kp_conf
            if p == 0:
                loc_box, loc_score = inp.box_xyxy, inp.loc_score
            R_virt, conf = rotation_mode(model.net.head, views.coeffs, inf.infer_level)
            R_alt = alt_gap = None
            if kp_virt is not None and inf.pose_solver != "i2s" and inf.kp_hypotheses > 1:
                R_alt, alt_gap = rotation_alternatives(model.net.head, views.coeffs, R_virt, inf.kp_hypotheses - 1)
            R_virt = R_virt.double().cpu().numpy()
            branch = np.full(len(indices), "i2s", dtype="<U14")
            kp_uv = None
            if kp_virt is not None:
                if inf.pose_solver != "i2s":
                    R_virt, r, branch = solve_pose_from_keypoints(
                        kp_virt, kp_conf, R_virt, r, inp.cameras, inf.pose_solver, inf.kp_min_confidence,
                        inf.kp_inlier_px, inf.kp_min_inliers, R_alt, alt_gap)
                kp_uv = np.stack([vc.virtual_to_real_pixels(split.camera, k) for vc, k in zip(inp.cameras, kp_virt)])
            R = inp.R_cam_virt @ R_virt
        return BatchPoses(R, r, conf.float().cpu().numpy(), loc_box, loc_score, inp.R_cam_virt, branch,
                          views.coeffs, kp_uv, kp_conf)

    def validation_metrics(self, model: PoseModel, split, indices: np.ndarray, device: torch.device,
                           batch_size: int) -> dict[str, float]:
        """The crop network alone, on crops of the true keypoint boxes (framed as inference frames any box, scaled by
        :attr:`CropInference.box_scale`): ``e_r_median_deg_truebox``, ``acc@10_truebox``, ``e_t_median_m_truebox``."""
        true_box = predict_split(model, split, indices, self, device, batch_size=batch_size,
                                 boxes_xyxy=split.kp_box(clipped=False)[indices])
        m = pose_metrics(true_box, split, thresholds=False)
        return {f"{k}_truebox": m[k] for k in ("e_r_median_deg", "acc@10", "e_t_median_m")}
