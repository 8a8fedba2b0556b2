"""What a model kind is: one way of turning SPEED+ frames into poses, behind one small interface.

A kind (``model.kind``; :func:`speedpose.pose.kinds.model_kind` builds it from an experiment) knows

* which networks it trains: :meth:`ModelKind.build_model` (a :class:`~speedpose.pose.model.PoseModel`);
* how a training sample is made from a record of a split: :meth:`ModelKind.samples` (and
  :meth:`ModelKind.training_set`, which may read a rendered crop set instead);
* its loss terms: :meth:`ModelKind.loss`;
* what its network sees for a batch of records (:meth:`ModelKind.network_inputs`, also what adaptation
  differentiates through) and how that batch becomes poses (:meth:`ModelKind.predict_batch`).

Its settings are explicit values that :meth:`ModelKind.from_experiment` picks from the experiment once; nothing
downstream of it reads the experiment.  A new kind is a module with a :class:`ModelKind` subclass and one line in
the registry (:mod:`speedpose.pose.kinds`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from speedpose.pose.augment import Photometric
from speedpose.pose.config import AugmentConfig
from speedpose.pose.model import PoseModel
from speedpose.virtual_camera import VirtualCamera

if TYPE_CHECKING:
    from speedpose.data.crop_set import CropSet
    from speedpose.pose.config import SpeedplusExperiment


class NetworkInputs(NamedTuple):
    """What a kind's network sees for a batch of B records, and where it came from.

    Attributes:
        images_u8: (B, S, S) uint8 square network inputs (crops, or whole frames resized).
        R_cam_virt: (B, 3, 3) rotation of each input's camera frame in the real camera frame (``R_cam_body =
            R_cam_virt @ R_input_body``; the identity for a whole frame).
        box_xyxy: (B, 4) float64 boxes the inputs were cropped from [full-resolution px, unclipped]; NaN without.
        loc_score: (B,) localiser peak scores; NaN without a localiser or when the boxes were given.
        loc_out: the localiser's outputs (``heatmap_logits`` (B, 1, h, w), ``box_reg``), not detached; None without
            a localiser or when the boxes were given.
        cameras: the B crops' virtual cameras (empty for whole frames).
    """

    images_u8: np.ndarray
    R_cam_virt: np.ndarray
    box_xyxy: np.ndarray
    loc_score: np.ndarray
    loc_out: dict[str, torch.Tensor] | None
    cameras: list[VirtualCamera]


class BatchPoses(NamedTuple):
    """The poses a kind predicts for a batch of B records (the real camera frame).

    Attributes:
        R_cam_body: (B, 3, 3) float64 rotations.
        r_cam_m: (B, 3) float64 translations [m].
        confidence: (B,) float32 probability mass of the rotation distribution near its mode.
        box_xyxy: (B, 4) the box found by the localiser [full-resolution px] (NaN without a localiser).
        loc_score: (B,) the localiser's peak score (NaN without).
        R_cam_virt: (B, 3, 3) the inputs' camera rotations (:class:`NetworkInputs`).
        branch: (B,) how each pose was obtained: ``i2s``, ``kp_translation`` or ``fused``.
        coeffs: (B, n_coeffs) the rotation distribution's Fourier coefficients in the input's frame.
        kp_uv: (B, 11, 2) float64 predicted keypoints [full-resolution px of the real, distorted image], or None
            without a keypoint head.
        kp_conf: (B, 11) their confidences in [0, 1] (None without a keypoint head).
    """

    R_cam_body: np.ndarray
    r_cam_m: np.ndarray
    confidence: np.ndarray
    box_xyxy: np.ndarray
    loc_score: np.ndarray
    R_cam_virt: np.ndarray
    branch: np.ndarray
    coeffs: torch.Tensor
    kp_uv: np.ndarray | None = None
    kp_conf: np.ndarray | None = None


class ModelKind(ABC):
    """A model kind (module docstring).  Subclasses set ``name`` (the value of ``model.kind``).

    Attributes every kind has (fields or properties):
        infer_level: finest HEALPix level of the rotation mode search (``model.i2s.infer_level``).
        augment: the training's augmentation (``augment:``); its in-plane range also spreads adaptation's copies.
        crop_set: a rendered crop set (``data.crop_set``) the kind trains its network on instead of the frames;
            None when it trains on the frames (a kind whose input is no crop ignores ``data.crop_set``).
    """

    name: ClassVar[str]
    infer_level: int
    augment: AugmentConfig
    crop_set: str | None = None

    # ------------------------------------------------------------------------------------------- settings
    @classmethod
    @abstractmethod
    def from_experiment(cls, cfg: SpeedplusExperiment) -> ModelKind:
        """The kind with the settings of experiment ``cfg`` (the only place a kind reads the experiment)."""

    @abstractmethod
    def photometric(self) -> Photometric:
        """The training's photometric augmentation of a network input."""

    # ------------------------------------------------------------------------------------------- training
    @abstractmethod
    def build_model(self) -> PoseModel:
        """The kind's networks, initialised (ImageNet weights where the settings ask for them)."""

    @abstractmethod
    def samples(self, split, indices: np.ndarray, train: bool) -> Dataset:
        """Samples of records ``indices`` of a labelled :class:`~speedpose.data.loader.PreprocessedSplit`:
        augmented when ``train``, exact otherwise.  Items are dicts for :func:`speedpose.pose.dataset.collate`."""

    def training_set(self, frames, frame_indices: np.ndarray, crop_set: CropSet | None = None,
                     crop_indices: np.ndarray | None = None) -> Dataset:
        """The training samples: of the records ``frame_indices`` of ``frames`` (the default), or of the crops
        ``crop_indices`` of the opened :attr:`crop_set` for a kind that trains on one."""
        return self.samples(frames, frame_indices, train=True)

    @abstractmethod
    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """ONE forward pass of ``model`` (as the engine runs it, maybe DDP-wrapped) on a training batch and the
        weighted loss: ``loss`` (scalar) and its detached terms."""

    # ------------------------------------------------------------------------------------------- inference
    @abstractmethod
    def network_inputs(self, model: PoseModel, split, indices: np.ndarray, device: torch.device,
                       in_plane_rad: float = 0.0, boxes_xyxy: np.ndarray | None = None,
                       cache: dict | None = None) -> NetworkInputs:
        """What ``model.net`` sees for records ``indices`` of a split (labels unused).

        No ``torch.no_grad`` here: the caller decides (inference wraps it, adaptation differentiates the
        localiser's outputs).

        Args:
            in_plane_rad: rotate the input's camera about its optical axis by this angle (kinds that crop; the
                others ignore it).
            boxes_xyxy: (B, 4) boxes [full-resolution px] to crop instead of the localiser's (kinds that crop;
                the others ignore them).
            cache: per-record data the kind fills and reads again, for calls on the same records that differ only
                in ``in_plane_rad``.
        """

    @abstractmethod
    def predict_batch(self, model: PoseModel, split, indices: np.ndarray, device: torch.device,
                      boxes_xyxy: np.ndarray | None = None) -> BatchPoses:
        """Poses of records ``indices`` of a split, under ``torch.no_grad`` (``boxes_xyxy``: as
        :meth:`network_inputs`)."""

    def validation_metrics(self, model: PoseModel, split, indices: np.ndarray, device: torch.device,
                           batch_size: int) -> dict[str, float]:
        """Metrics this kind adds to a validation of ``model`` on records ``indices`` of a labelled split (none by
        default)."""
        return {}
