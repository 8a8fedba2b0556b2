"""The ``fullimage`` model kind (the seed's baseline): the whole frame resized to a square, the rotation from I2S in
the real camera and the translation regressed in a fixed normalisation.

* Network: a :class:`~speedpose.pose.model.PoseNet` on the resized frame (``data.fullimage_size``); no localiser.
* Training samples (:class:`FullImageSamples`): ``image`` (1, S, S) uint8 the whole frame resized (photometrically
  augmented in training), ``R`` (3, 3) the rotation label, ``t_norm`` (3,) the normalised translation
  (:func:`normalise_translation`).
* Loss: rotation + translation, weighted by ``loss:``.
* Inference: the same resized frame, the rotation mode and :func:`denormalise_translation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from speedpose.data.image_store import resize_gray
from speedpose.geometry.rotations import quat_wxyz_to_matrix
from speedpose.pose.augment import Photometric, central_box_frac
from speedpose.pose.config import AugmentConfig, LossConfig, ModelConfig, SpeedplusExperiment
from speedpose.pose.dataset import StepAwareSamples
from speedpose.pose.kinds.base import BatchPoses, ModelKind, NetworkInputs
from speedpose.pose.model import PoseModel, build_pose_net, rotation_loss, unwrap
from speedpose.pose.orientation import rotation_mode

#: the normalisation of the translation: (x / 1 m, y / 1 m, (z - 6 m) / 3 m)
T_NORM_OFFSET = np.array([0.0, 0.0, 6.0])
T_NORM_SCALE = np.array([1.0, 1.0, 3.0])


def normalise_translation(r_cam_m: np.ndarray) -> np.ndarray:
    """``r`` [m] in the camera frame (..., 3) -> the network's target ``t_norm`` (..., 3)."""
    return (r_cam_m - T_NORM_OFFSET) / T_NORM_SCALE


def denormalise_translation(t_norm: np.ndarray) -> np.ndarray:
    """Inverse of :func:`normalise_translation`: (..., 3) -> ``r`` [m] in the camera frame."""
    return t_norm * T_NORM_SCALE + T_NORM_OFFSET


def resized_frames(split, indices: np.ndarray, size: int, cache: dict | None = None) -> np.ndarray:
    """(B, size, size) uint8: the frames of records ``indices`` resized to a square (``cache``: filled with and read
    for each record's resized frame)."""
    out = []
    for i in np.asarray(indices, dtype=np.int64).tolist():
        if cache is not None and i in cache:
            img = cache[i]
        else:
            img = resize_gray(split.image(i), (size, size))
            if cache is not None:
                cache[i] = img
        out.append(img)
    return np.stack(out)


class FullImageSamples(StepAwareSamples):
    """Whole-frame samples of the records of a preprocessed split (module docstring).

    Args:
        split: :class:`speedpose.data.loader.PreprocessedSplit` (labelled).
        indices: which records.
        size: side of the resized square frame [px].
        photometric: the training's photometric augmentation (needed when ``train``).
        train: augment when True.
    """

    def __init__(self, split, indices: np.ndarray, size: int, photometric: Photometric | None, train: bool):
        self.split = split
        self.indices = np.asarray(indices, dtype=np.int64)
        self.size = size
        self.train = train
        self.q = split.q_wxyz
        self.r = split.r_cam_m
        self.photometric = photometric if train else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict:
        i = int(self.indices[k])
        seed = self.sample_seed(i)
        img = resize_gray(self.split.image(i), (self.size, self.size))
        if self.train:
            img = self.photometric(img, seed, self.step)
        return {"index": torch.tensor(i), "image": torch.from_numpy(img)[None],
                "R": torch.from_numpy(quat_wxyz_to_matrix(self.q[i])).float(),
                "t_norm": torch.from_numpy(normalise_translation(self.r[i])).float()}


@dataclass(frozen=True)
class FullImageKind(ModelKind):
    """The fullimage kind (module docstring) with its settings.

    Attributes:
        networks: the ``model:`` section (encoder and heads; its localiser is not used).
        size: side of the resized square frame [px] (``data.fullimage_size``).
        infer_level: finest HEALPix level of the rotation mode search (``model.i2s.infer_level``).
        augment: the ``augment:`` section (photometric augmentation only: no geometry jitter here).
        photometric_margin: the photometric augmentation's spacecraft box is the central box of a crop of this
            margin (``data.crop_margin``, as the crop kind's).
        weights: the ``loss:`` weights.
    """

    name: ClassVar[str] = "fullimage"

    networks: ModelConfig
    size: int
    infer_level: int
    augment: AugmentConfig
    photometric_margin: float
    weights: LossConfig

    @classmethod
    def from_experiment(cls, cfg: SpeedplusExperiment) -> FullImageKind:
        return cls(networks=cfg.model, size=cfg.data.fullimage_size, infer_level=cfg.model.i2s.infer_level,
                   augment=cfg.augment, photometric_margin=cfg.data.crop_margin, weights=cfg.loss)

    def photometric(self) -> Photometric:
        return Photometric(self.augment, central_box_frac(self.photometric_margin))

    # ------------------------------------------------------------------------------------------- training
    def build_model(self) -> PoseModel:
        return PoseModel(build_pose_net(self.networks, self.size), None, input_key="image")

    def samples(self, split, indices: np.ndarray, train: bool) -> FullImageSamples:
        return FullImageSamples(split, indices, self.size, self.photometric() if train else None, train)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rotation (in the real camera) + normalised translation."""
        out = model(batch)
        core = unwrap(model)
        w = self.weights
        l_rot = rotation_loss(core.net.head.grid, out["coeffs"], batch["R"], w.rotation_target)
        l_t = F.smooth_l1_loss(out["t"].float(), batch["t_norm"], beta=0.05)
        return {"loss": w.rotation * l_rot + w.translation * l_t, "rot": l_rot.detach(), "trans": l_t.detach()}

    # ------------------------------------------------------------------------------------------- inference
    def network_inputs(self, model: PoseModel, split, indices: np.ndarray, device: torch.device,
                       in_plane_rad: float = 0.0, boxes_xyxy: np.ndarray | None = None,
                       cache: dict | None = None) -> NetworkInputs:
        """The resized frames (``in_plane_rad`` and ``boxes_xyxy`` do not apply; ``cache``: the resized frames)."""
        n = len(indices)
        return NetworkInputs(resized_frames(split, indices, self.size, cache), np.repeat(np.eye(3)[None], n, axis=0),
                             np.full((n, 4), np.nan), np.full(n, np.nan), None, [])

    @torch.no_grad()
    def predict_batch(self, model: PoseModel, split, indices: np.ndarray, device: torch.device,
                      boxes_xyxy: np.ndarray | None = None) -> BatchPoses:
        """The chain of the module docstring (``boxes_xyxy`` does not apply)."""
        inp = self.network_inputs(model, split, indices, device)
        net_out = model.net_outputs(inp.images_u8, device)
        R, conf = rotation_mode(model.net.head, net_out["coeffs"], self.infer_level)
        r = denormalise_translation(net_out["t"].double().cpu().numpy())
        return BatchPoses(R.double().cpu().numpy(), r, conf.float().cpu().numpy(), inp.box_xyxy, inp.loc_score,
                          inp.R_cam_virt, np.full(len(indices), "i2s", dtype="<U14"), net_out["coeffs"])
