"""Training/evaluation samples of the benchmarks (map-style torch datasets over :class:`CategoryRecords`).

Every sample is a dict: ``image`` (3, S, S) uint8 RGB, ``class_id`` () int64, ``R`` (3, 3) float32 rotation of the
object in the frame of the camera of ``image`` (x right, y down, z forward), ``index`` () int64 record index.
Random choices (PASCAL3D+ training augmentation, synthetic mixing) use the global numpy RNG, which the training
engine seeds per sample: the same seed gives the same samples.
"""

from __future__ import annotations

import math
import os

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from speedpose.camera import Camera
from speedpose.data.category_records import CategoryRecords
from speedpose.data.pascal3d import object_view, read_rgb, resolve_camera_and_box, viewpoint_to_R_cam_obj
from speedpose.errors import InputError
from speedpose.virtual_camera import VirtualCamera


def _sample(image_hwc: np.ndarray, class_id: int, R: np.ndarray, index: int) -> dict[str, torch.Tensor]:
    return {"image": torch.from_numpy(np.ascontiguousarray(image_hwc.transpose(2, 0, 1))),
            "class_id": torch.tensor(int(class_id), dtype=torch.int64),
            "R": torch.from_numpy(np.asarray(R, dtype=np.float32)),
            "index": torch.tensor(int(index), dtype=torch.int64)}


def warp_pinhole(image: np.ndarray, camera: Camera, vc: VirtualCamera) -> np.ndarray:
    """``vc.warp(image, camera)`` for a distortion-free camera, through its homography (``cv2.warpPerspective``:
    the same pixels, about 9x faster than the per-pixel map of the general warp); same anti-aliasing (a pyramid
    level when the view shrinks the image more than 2x).  Cameras with distortion use ``vc.warp``."""
    if camera.has_distortion:
        return vc.warp(image, camera)
    scale = vc.focal_px / camera.fx
    while scale < 0.5 and min(image.shape[:2]) > 32:
        image = cv2.pyrDown(image)
        camera = camera.resized(image.shape[1], image.shape[0])
        scale *= 2
    return cv2.warpPerspective(image, vc.homography(camera), (vc.width, vc.height),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=0)


class ModelNet10Samples(Dataset):
    """ModelNet10-SO(3) records ``indices`` as samples (grey repeated to RGB, resized to ``image_size``).

    The npz image array is memory-mapped on first use in each process (nothing large is pickled to workers).
    """

    def __init__(self, records: CategoryRecords, indices: np.ndarray, image_size: int = 224):
        self.records, self.indices, self.image_size = records, np.asarray(indices, np.int64), image_size
        self._arrays: dict[tuple[int, str], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.indices)

    def _images(self, ref) -> np.ndarray:
        key = (os.getpid(), str(ref.path))
        if key not in self._arrays:
            self._arrays[key] = ref.open()
        return self._arrays[key]

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        i = int(self.indices[k])
        r = self.records
        img = np.asarray(self._images(r.extras["images"][i])[r.source_index[i]])
        if img.shape[2] == 1:
            img = np.repeat(img, 3, axis=2)
        if img.shape[:2] != (self.image_size, self.image_size):
            img = cv2.resize(img, (self.image_size, self.image_size), interpolation=cv2.INTER_AREA)
        return _sample(img, r.category_ids[i], r.R_cam_obj[i], i)


class Pascal3DSamples(Dataset):
    """PASCAL3D+ (or RenderForCNN) records ``indices`` viewed by each object's 224x224 virtual camera.

    Args:
        records: the adapter's records (rotation in the annotation camera, boxes, intrinsics).
        indices: records used.
        image_size: side of the view [px].
        margin: box half-extent x margin = half the view.
        train: apply the training augmentation below.
        mirror: (train) left-right mirror with probability 0.5, viewpoint azimuth and theta negated.
        roll_std_deg: (train) std of a random roll of the virtual camera [deg].
        box_jitter: (train) each box edge moves by U(-j, j) times the box side.
    """

    def __init__(self, records: CategoryRecords, indices: np.ndarray, image_size: int = 224, margin: float = 1.0,
                 train: bool = False, mirror: bool = False, roll_std_deg: float = 0.0, box_jitter: float = 0.0):
        self.records, self.indices = records, np.asarray(indices, np.int64)
        self.image_size, self.margin, self.train = image_size, margin, train
        self.mirror, self.roll_std_deg, self.box_jitter = mirror, roll_std_deg, box_jitter

    def __len__(self) -> int:
        return len(self.indices)

    def view(self, i: int, rng: np.random.RandomState | None = None
             ) -> tuple[np.ndarray, np.ndarray, VirtualCamera]:
        """(image (S, S, 3) uint8, R_virt_obj (3, 3), the virtual camera) of record ``i``; augmented when ``rng``
        (an object with numpy's ``rand``/``uniform``/``randn``) is given."""
        r = self.records
        image = read_rgb(r.image_paths[i])
        h, w = image.shape[:2]
        expected = tuple(int(v) for v in r.extras["image_size"][i])
        if expected != (0, 0) and expected != (w, h):
            raise InputError(f"image is {w}x{h} but its annotation says {expected[0]}x{expected[1]}",
                             r.image_paths[i])
        camera, box = resolve_camera_and_box(r.extras["K"][i], r.extras["box_xyxy"][i], w, h)
        R = r.R_cam_obj[i]
        roll = 0.0
        if rng is not None:
            if self.mirror and rng.rand() < 0.5:
                image = np.ascontiguousarray(image[:, ::-1])
                K = camera.K.copy()
                K[0, 2] = w - 1 - K[0, 2]
                camera = type(camera)(K, camera.dist, w, h)
                box = np.array([w - 1 - box[2], box[1], w - 1 - box[0], box[3]])
                a, e, t = r.extras["viewpoint_deg"][i]
                R = viewpoint_to_R_cam_obj(-a, e, -t)
            if self.box_jitter:
                bw, bh = box[2] - box[0], box[3] - box[1]
                # edges move by < half the side (box_jitter <= 0.5), so the box never turns inside out
                box = box + rng.uniform(-self.box_jitter, self.box_jitter, 4) * np.array([bw, bh, bw, bh])
            if self.roll_std_deg:
                roll = math.radians(self.roll_std_deg) * rng.randn()
        vc = object_view(camera, box, self.image_size, self.margin, roll)
        return warp_pinhole(image, camera, vc), vc.R_cam_virt.T @ R, vc

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        i = int(self.indices[k])
        image, R, _ = self.view(i, np.random if self.train else None)
        return _sample(image, self.records.category_ids[i], R, i)


class MixedSamples(Dataset):
    """Real samples followed by ``n_synthetic`` draws from a synthetic dataset (a fresh random one per sample).

    With a synthetic share ``f`` of each epoch, ``n_synthetic = round(len(real) * f / (1 - f))``.
    """

    def __init__(self, real: Dataset, synthetic: Dataset, fraction: float):
        self.real, self.synthetic = real, synthetic
        self.n_real = len(real)
        self.n_synthetic = int(round(self.n_real * fraction / (1 - fraction))) if len(synthetic) else 0

    def __len__(self) -> int:
        return self.n_real + self.n_synthetic

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        if k < self.n_real:
            return self.real[k]
        sample = self.synthetic[int(np.random.randint(len(self.synthetic)))]
        sample["index"] = torch.tensor(-1, dtype=torch.int64)  # not a record of the real split
        return sample
