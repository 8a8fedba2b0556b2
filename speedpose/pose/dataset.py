"""Training samples of the crop pipeline (the ``crop`` model kind), and what every kind's samples share.

A crop sample holds, for one image:

* ``loc_image`` (1, H_l, W_l) uint8: the full frame at the localiser size, with its box targets
  ``loc_box_clipped`` / ``loc_box_unclipped`` (4,) [localiser px];
* ``crop`` (1, S, S) uint8: a perspective-correct crop of the spacecraft (virtual camera looking at the jittered
  keypoint box, rotated in-plane at random), photometrically augmented;
* ``R_virt`` (3, 3): the rotation label in that virtual camera (``R_cam_virt^T R``), and ``t_enc`` (3,): the
  translation encoded relative to the crop (:func:`speedpose.pose.crops.encode_translation`); ``kp_crop``
  (11, 2): the keypoints projected with that label into the crop [px], ``kp_visible`` (11,) which of them count.

The localiser fields are carried by a share ``loc_fraction`` of the training samples only (drawn per sample), so
that the localiser, which sees the whole frame, does not cost as much as the crop network at every step;
:func:`collate` stacks them over the samples that have them.  :class:`CropSamples` warps the crops from the frames
of a split; :class:`CropSetSamples` reads the crops of a rendered crop set (:mod:`speedpose.data.crop_set`) instead,
and takes its localiser samples from the frames.  Every sample also carries its record ``index``.

Images travel as uint8 (4x less inter-process traffic); the model normalises them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from speedpose.data.crop_set import CropSet
from speedpose.data.image_store import resize_gray
from speedpose.errors import InputError
from speedpose.geometry.rotations import quat_wxyz_to_matrix
from speedpose.pose.augment import Photometric, central_box_frac
from speedpose.pose.config import AugmentConfig
from speedpose.pose.crops import TANGO_KP, CropSpec, crop_camera, crop_source, encode_translation, jitter_box
from speedpose.pose.localiser import boxes_to_loc

#: the localiser's fields of a training sample (present on a share ``loc_fraction`` of them)
LOC_KEYS = ("loc_image", "loc_box_clipped", "loc_box_unclipped")


def localiser_fields(split, i: int, loc_size: tuple[int, int], box_clipped: np.ndarray,
                     box_unclipped: np.ndarray, augment=None) -> dict[str, torch.Tensor]:
    """The localiser's input and targets for record ``i``: the frame at ``loc_size`` (W, H) and the clipped and
    unclipped keypoint boxes (full-resolution px, (4,) each) mapped to localiser pixels.  ``augment``: a
    photometric change of the resized frame, (H, W) uint8 -> (H, W) uint8 (training), or None."""
    full = (split.camera.width, split.camera.height)
    image = resize_gray(split.image(i), loc_size)
    if augment is not None:
        image = augment(image)
    return {"loc_image": torch.from_numpy(np.ascontiguousarray(image))[None],
            "loc_box_clipped": torch.from_numpy(boxes_to_loc(box_clipped, loc_size, full)).float(),
            "loc_box_unclipped": torch.from_numpy(boxes_to_loc(box_unclipped, loc_size, full)).float()}


def crop_fields(vc, crop_u8: np.ndarray, R: np.ndarray, r_cam_m: np.ndarray, spec: CropSpec,
                visible: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """The crop network's input and targets: the crop, ``R_virt``, ``t_enc``, the keypoints in the crop ``kp_crop``
    (11, 2) [px] and ``kp_visible`` (11,): inside the crop and, when ``visible`` (11,) is given, visible in the
    rendering (in the real frame and not hidden by the spacecraft itself)."""
    R_virt, r_virt = vc.pose_to_virtual(R, r_cam_m)
    kp = vc.project(TANGO_KP @ R_virt.T + r_virt)
    inside = (kp > -0.5).all(axis=1) & (kp < spec.size - 0.5).all(axis=1)
    return {"crop": torch.from_numpy(np.ascontiguousarray(crop_u8))[None],
            "R_virt": torch.from_numpy(R_virt).float(),
            "t_enc": torch.from_numpy(encode_translation(vc, r_cam_m, spec)).float(),
            "kp_crop": torch.from_numpy(kp).float(),
            "kp_visible": torch.from_numpy(inside & (True if visible is None else np.asarray(visible, bool)))}


def collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    """Batch samples; the localiser fields are stacked over the samples that carry them (absent when none does)."""
    batch = default_collate([{k: v for k, v in s.items() if k not in LOC_KEYS} for s in samples])
    with_loc = [{k: s[k] for k in LOC_KEYS} for s in samples if LOC_KEYS[0] in s]
    if with_loc:
        batch.update(default_collate(with_loc))
    return batch


class StepAwareSamples(Dataset):
    """What every kind's training samples share.

    * The engine's curriculum hook: ``set_step`` tells the dataset which optimiser step its next samples are drawn
      for (``augment.start_step`` / ``ramp_steps``); None outside training.
    * :meth:`sample_seed`: the one seed a sample draws everything random from.
    """

    step: int | None = None
    train: bool = True
    photometric: Photometric | None = None

    def set_step(self, step: int) -> None:
        self.step = step

    def frame_augment(self, seed: int):
        """The photometric change of this sample's localiser frame in training (:meth:`Photometric.frame`, which
        leaves the frame alone unless ``augment.localiser``), or None outside training."""
        if not self.train or self.photometric is None:
            return None
        return partial(self.photometric.frame, seed=seed, step=self.step)

    def sample_seed(self, i: int) -> int:
        """In training, a seed drawn from numpy's global RNG (which the engine seeds per sample); the record index
        ``i`` otherwise (no augmentation, the same sample every time)."""
        return int(np.random.randint(2**31 - 1)) if self.train else int(i)


@dataclass(frozen=True)
class CropSampling:
    """How the crop kind makes training samples (from ``data:`` and ``augment:``).

    Attributes:
        spec: the crops' size and margin.
        loc_size: (W, H) of the localiser's input [px].
        loc_fraction: share of the samples that also carry the localiser fields.
        augment: the ``augment:`` section: photometric augmentation, and the geometry jitter of crops warped from
            frames (``box_scale``, ``box_shift``, ``in_plane_deg`` when ``enabled``).
    """

    spec: CropSpec
    loc_size: tuple[int, int]
    loc_fraction: float
    augment: AugmentConfig

    def photometric(self) -> Photometric:
        """The training's photometric augmentation of a crop (the spacecraft box at its centre)."""
        return Photometric(self.augment, central_box_frac(self.spec.margin))


class CropSamples(StepAwareSamples):
    """Crop samples of the records of a preprocessed split (see the module docstring).

    Args:
        split: :class:`speedpose.data.loader.PreprocessedSplit` (labelled).
        indices: which records (into ``split.records``).
        sampling: how samples are made.
        train: augment (box jitter, in-plane rotation, photometric) when True; exact boxes otherwise.
    """

    def __init__(self, split, indices: np.ndarray, sampling: CropSampling, train: bool):
        self.split = split
        self.indices = np.asarray(indices, dtype=np.int64)
        self.sampling = sampling
        self.train = train
        self.box_unclipped = split.kp_box(clipped=False)
        self.box_clipped = split.kp_box(clipped=True)
        self.q = split.q_wxyz
        self.r = split.r_cam_m
        self.photometric = sampling.photometric() if train else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict:
        i = int(self.indices[k])
        seed = self.sample_seed(i)
        rng = np.random.default_rng(seed)
        R = quat_wxyz_to_matrix(self.q[i])
        s, aug = self.sampling, self.sampling.augment
        sample: dict = {"index": torch.tensor(i)}
        box = self.box_unclipped[i]
        theta = 0.0
        if self.train:
            box = jitter_box(box, rng, s.spec, tuple(aug.box_scale), aug.box_shift)
            if aug.enabled:
                theta = float(np.radians(rng.uniform(-1, 1) * aug.in_plane_deg))
        vc = crop_camera(self.split.camera, box, s.spec, theta)
        src, src_cam = crop_source(self.split, i, vc)
        crop = vc.warp(src, src_cam)
        if self.train:
            crop = self.photometric(crop, seed, self.step)
        sample.update(crop_fields(vc, crop, R, self.r[i], s.spec))
        if not self.train or rng.random() < s.loc_fraction:
            sample.update(localiser_fields(self.split, i, tuple(s.loc_size), self.box_clipped[i],
                                           self.box_unclipped[i], self.frame_augment(seed)))
        return sample


class CropSetSamples(StepAwareSamples):
    """Training samples of the crop network from a crop set; localiser samples from the frames of a split.

    Sample ``k`` is crop ``crop_indices[k]`` of the set (photometrically augmented when ``train``; its box jitter and
    in-plane rotation were drawn when it was rendered), with the labels re-expressed in its virtual camera exactly as
    :class:`CropSamples` does; a share ``sampling.loc_fraction`` of the samples also carries the localiser fields of
    a random frame of ``frames`` (records ``frame_indices``).

    Args:
        crop_set: an opened :class:`~speedpose.data.crop_set.CropSet` rendered with the sampling's crop size and
            margin.
        crop_indices: which crops.
        frames: a labelled :class:`~speedpose.data.loader.PreprocessedSplit` (synthetic/train), or None (no localiser
            samples).
        frame_indices: which records of ``frames``.
        sampling: how samples are made.
        train: augment when True.
    """

    def __init__(self, crop_set: CropSet, crop_indices: np.ndarray, frames, frame_indices: np.ndarray,
                 sampling: CropSampling, train: bool = True):
        spec = sampling.spec
        if crop_set.size != spec.size or abs(crop_set.margin - spec.margin) > 1e-9:
            raise InputError(f"crop set of {crop_set.size} px with margin {crop_set.margin:g}, but the config asks "
                             f"for data.crop_size={spec.size}, data.crop_margin={spec.margin:g}: render a "
                             f"matching set (speedpose synth --crops N --crop-size {spec.size} --crop-margin "
                             f"{spec.margin:g}) or change the config", crop_set.directory)
        self.crop_set, self.frames, self.sampling, self.train = crop_set, frames, sampling, train
        self.crop_indices = np.asarray(crop_indices, dtype=np.int64)
        self.frame_indices = np.asarray(frame_indices, dtype=np.int64)
        self.R = quat_wxyz_to_matrix(crop_set.labels["q_wxyz"])
        self.photometric = sampling.photometric() if train else None
        if frames is not None:
            self.box_unclipped = frames.kp_box(clipped=False)
            self.box_clipped = frames.kp_box(clipped=True)

    def __len__(self) -> int:
        return len(self.crop_indices)

    def __getitem__(self, k: int) -> dict:
        k = int(self.crop_indices[k])
        seed = self.sample_seed(k)
        rng = np.random.default_rng(seed)
        crop = self.crop_set.image(k)
        if self.train:
            crop = self.photometric(crop, seed, self.step)
        sample = {"index": torch.tensor(k)}
        sample.update(crop_fields(self.crop_set.camera(k), crop, self.R[k], self.crop_set.labels["r_cam_m"][k],
                                  self.sampling.spec, self.crop_set.labels["kp_visible"][k]))
        if self.frames is not None and len(self.frame_indices) and rng.random() < self.sampling.loc_fraction:
            i = int(self.frame_indices[rng.integers(len(self.frame_indices))])
            sample.update(localiser_fields(self.frames, i, tuple(self.sampling.loc_size), self.box_clipped[i],
                                           self.box_unclipped[i], self.frame_augment(seed)))
        return sample
