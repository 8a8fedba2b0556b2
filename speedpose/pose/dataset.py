"""Training and inference samples of the SPEED+ pose pipeline.

A training sample holds, for one image:

* ``loc_image`` (1, H_l, W_l) uint8: the full frame at the localiser size, with its box targets
  ``loc_box_clipped`` / ``loc_box_unclipped`` (4,) [localiser px];
* ``crop`` (1, S, S) uint8: a perspective-correct crop of the spacecraft (virtual camera looking at the jittered
  keypoint box, rotated in-plane at random), photometrically augmented;
* ``R_virt`` (3, 3): the rotation label in that virtual camera (``R_cam_virt^T R``), and ``t_enc`` (3,): the
  translation encoded relative to the crop (:func:`speedpose.pose.crops.encode_translation`); ``kp_crop``
  (11, 2): the keypoints projected with that label into the crop [px] (previews and tests);
* for the ``fullimage`` baseline instead: ``image`` (1, S, S) the whole frame resized, ``R`` (3, 3) and
  ``t_norm`` (3,) the normalised translation.

Images travel as uint8 (4x less inter-process traffic); the model normalises them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from speedpose.data.image_store import resize_gray
from speedpose.geometry.rotations import quat_wxyz_to_matrix
from speedpose.pose.augment import Photometric, central_box_frac
from speedpose.pose.config import SpeedplusExperiment
from speedpose.pose.crops import CropSpec, crop_camera, crop_source, encode_translation, jitter_box
from speedpose.pose.localiser import boxes_to_loc
from speedpose.tango import tango_keypoints_body

TANGO_KP = tango_keypoints_body()

#: normalisation of the fullimage baseline's translation: (x / 1 m, y / 1 m, (z - 6 m) / 3 m)
T_NORM_OFFSET = np.array([0.0, 0.0, 6.0])
T_NORM_SCALE = np.array([1.0, 1.0, 3.0])


def crop_spec(cfg: SpeedplusExperiment) -> CropSpec:
    return CropSpec(cfg.data.crop_size, cfg.data.crop_margin)


class PoseSamples(Dataset):
    """Samples of a preprocessed split (see the module docstring).

    Args:
        split: :class:`speedpose.data.loader.PreprocessedSplit` (labelled).
        indices: which records (into ``split.records``).
        cfg: the experiment.
        train: augment (box jitter, in-plane rotation, photometric) when True; exact boxes otherwise.
    """

    def __init__(self, split, indices: np.ndarray, cfg: SpeedplusExperiment, train: bool):
        self.split = split
        self.indices = np.asarray(indices, dtype=np.int64)
        self.cfg = cfg
        self.train = train
        self.spec = crop_spec(cfg)
        self.box_unclipped = split.kp_box(clipped=False)
        self.box_clipped = split.kp_box(clipped=True)
        self.q = split.q_wxyz
        self.r = split.r_cam_m
        self.photometric = Photometric(cfg.augment, central_box_frac(cfg.data.crop_margin)) if train else None
        self._full_size = (split.camera.width, split.camera.height)

    def __len__(self) -> int:
        return len(self.indices)

    def loc_image(self, i: int) -> np.ndarray:
        """(H_l, W_l) uint8 full frame at the localiser size."""
        return resize_gray(self.split.image(i), tuple(self.cfg.data.loc_size))

    def __getitem__(self, k: int) -> dict:
        i = int(self.indices[k])
        # the engine seeds numpy's global RNG per sample: draw one seed from it for everything random here
        seed = int(np.random.randint(2**31 - 1)) if self.train else i
        rng = np.random.default_rng(seed)
        R = quat_wxyz_to_matrix(self.q[i])
        sample: dict = {"index": torch.tensor(i)}
        if self.cfg.model.kind == "fullimage":
            s = self.cfg.data.fullimage_size
            img = resize_gray(self.split.image(i), (s, s))
            if self.train:
                img = self.photometric(img, seed)
            sample.update(image=torch.from_numpy(img)[None], R=torch.from_numpy(R).float(),
                          t_norm=torch.from_numpy((self.r[i] - T_NORM_OFFSET) / T_NORM_SCALE).float())
            return sample
        loc = self.loc_image(i)
        box = self.box_unclipped[i]
        theta = 0.0
        if self.train:
            box = jitter_box(box, rng, self.spec, tuple(self.cfg.augment.box_scale), self.cfg.augment.box_shift)
            if self.cfg.augment.enabled:
                theta = float(np.radians(rng.uniform(-1, 1) * self.cfg.augment.in_plane_deg))
        vc = crop_camera(self.split.camera, box, self.spec, theta)
        src, src_cam = crop_source(self.split, i, vc)
        crop = vc.warp(src, src_cam)
        if self.train:
            crop = self.photometric(crop, seed)
        R_virt, r_virt = vc.pose_to_virtual(R, self.r[i])
        loc_size = tuple(self.cfg.data.loc_size)
        sample.update(
            loc_image=torch.from_numpy(loc)[None],
            loc_box_clipped=torch.from_numpy(boxes_to_loc(self.box_clipped[i], loc_size, self._full_size)).float(),
            loc_box_unclipped=torch.from_numpy(boxes_to_loc(self.box_unclipped[i], loc_size,
                                                            self._full_size)).float(),
            crop=torch.from_numpy(crop)[None],
            R_virt=torch.from_numpy(R_virt).float(),
            t_enc=torch.from_numpy(encode_translation(vc, self.r[i], self.spec)).float(),
            kp_crop=torch.from_numpy(vc.project(TANGO_KP @ R_virt.T + r_virt)).float(),
        )
        return sample
