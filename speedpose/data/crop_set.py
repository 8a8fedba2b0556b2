"""Crop sets: training crops rendered at the crop network's resolution, with their exact virtual cameras.

The crop network of the pose pipeline sees the spacecraft through a virtual camera (:mod:`speedpose.virtual_camera`).
A crop set stores such views directly (rendered by ``speedpose synth --crops N``), so that training does not render,
decode or resample 1920x1200 frames for every sample.  Layout of a crop-set folder::

    <dir>/manifest.json          written first with complete=false, rewritten with complete=true at the end
    <dir>/chunk_00000.npy        (n_k, S, S) uint8 crops of chunk k (memory-mapped when read)
    <dir>/chunk_00000.labels.npz labels of chunk k (written after the images: a chunk with labels is finished)

Labels per crop (real camera frame, SPEED+ conventions): ``q_wxyz`` (4,), ``r_cam_m`` (3,) [m], the virtual camera
``R_cam_virt`` (3, 3) (virtual -> real camera) and ``focal_px`` [px] (principal point at the crop centre), the
keypoint box ``box_xyxy`` (4,) [real px, unclipped] the crop was framed on (before jitter), ``earth`` (background)
and ``kp_visible`` (11,).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speedpose.errors import InputError
from speedpose.io_utils import atomic_path, read_json
from speedpose.virtual_camera import VirtualCamera

MANIFEST = "manifest.json"
#: version of the on-disk format; another version is refused (render the set again)
CROP_SET_FORMAT = 1
LABEL_KEYS = {"q_wxyz": (4,), "r_cam_m": (3,), "R_cam_virt": (3, 3), "focal_px": (), "box_xyxy": (4,),
              "earth": (), "kp_visible": (11,)}


def chunk_paths(directory: str | Path, k: int) -> tuple[Path, Path]:
    """(images .npy, labels .npz) of chunk ``k``."""
    d = Path(directory)
    return d / f"chunk_{k:05d}.npy", d / f"chunk_{k:05d}.labels.npz"


def chunk_done(directory: str | Path, k: int) -> bool:
    """Whether chunk ``k`` is finished (its labels, written last, exist)."""
    return all(p.is_file() for p in chunk_paths(directory, k))


def write_chunk(directory: str | Path, k: int, images: np.ndarray, labels: dict[str, np.ndarray]) -> None:
    """Write chunk ``k`` atomically (images first, labels last).

    Args:
        images: (n, S, S) uint8.
        labels: every key of :data:`LABEL_KEYS`, each (n, ...).
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.dtype != np.uint8 or images.shape[1] != images.shape[2]:
        raise ValueError(f"crop images: expected (n, S, S) uint8, got {images.shape} {images.dtype}")
    n = len(images)
    for key, shape in LABEL_KEYS.items():
        if key not in labels or np.shape(labels[key]) != (n, *shape):
            raise ValueError(f"crop labels[{key!r}]: expected shape {(n, *shape)}, got "
                             f"{np.shape(labels.get(key)) if key in labels else 'nothing'}")
    img_path, lab_path = chunk_paths(directory, k)
    with atomic_path(img_path) as tmp:
        with tmp.open("wb") as fh:
            np.save(fh, images)
    with atomic_path(lab_path) as tmp:
        with tmp.open("wb") as fh:
            np.savez(fh, **{key: np.asarray(labels[key]) for key in LABEL_KEYS})


@dataclass
class CropSet:
    """A finished crop set, opened for reading (see the module docstring).

    Attributes:
        directory: the folder.
        size: S, side of the crops [px].
        margin: the crop framing margin the set was rendered with (:class:`speedpose.pose.crops.CropSpec`).
        params: the generator's parameters (manifest).
        labels: every label array, concatenated over chunks (N, ...).
        chunk_size: crops per chunk (the last may hold fewer).
    """

    directory: Path
    size: int
    margin: float
    params: dict
    labels: dict[str, np.ndarray]
    chunk_size: int

    @classmethod
    def open(cls, directory: str | Path) -> "CropSet":
        """Open a finished crop set; a missing, unfinished or foreign folder is an :class:`InputError`."""
        d = Path(directory)
        manifest = d / MANIFEST
        if not manifest.is_file():
            raise InputError("not a crop set (no manifest.json): render one with `speedpose synth --out ROOT "
                             "--crops N --crop-size S`", d)
        data = read_json(manifest)
        if not isinstance(data, dict) or data.get("format") != CROP_SET_FORMAT:
            raise InputError(f"crop set of format {data.get('format') if isinstance(data, dict) else None}, "
                             f"expected {CROP_SET_FORMAT}: render it again", manifest)
        if not data.get("complete"):
            raise InputError("the crop set is not finished (an interrupted `speedpose synth --crops`): run the "
                             "same command again to complete it", manifest)
        params = data["params"]
        n, chunk = int(params["crops"]), int(data["chunk_size"])
        parts: dict[str, list[np.ndarray]] = {key: [] for key in LABEL_KEYS}
        for k in range(-(-n // chunk)):
            path = chunk_paths(d, k)[1]
            if not path.is_file():
                raise InputError(f"chunk {k} of {-(-n // chunk)} is missing", path)
            with np.load(path) as z:
                for key in LABEL_KEYS:
                    parts[key].append(z[key])
        labels = {key: np.concatenate(v) for key, v in parts.items()}
        if len(labels["q_wxyz"]) != n:
            raise InputError(f"expected {n} crops, the chunks hold {len(labels['q_wxyz'])}", d)
        return cls(d, int(params["size"]), float(params["margin"]), params, labels, chunk)

    def __post_init__(self):
        self._chunks: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.labels["q_wxyz"])

    def __getstate__(self) -> dict:  # DataLoader workers re-open the memory maps themselves
        state = self.__dict__.copy()
        state["_chunks"] = {}
        return state

    def image(self, i: int) -> np.ndarray:
        """(S, S) uint8 crop ``i``."""
        k, j = divmod(int(i), self.chunk_size)
        if k not in self._chunks:
            self._chunks[k] = np.load(chunk_paths(self.directory, k)[0], mmap_mode="r")
        return np.array(self._chunks[k][j])  # a copy: writable, and the memory map stays read-only

    def camera(self, i: int) -> VirtualCamera:
        """The virtual camera of crop ``i`` (principal point at the crop centre, as the pipeline's crops)."""
        f, s = float(self.labels["focal_px"][i]), self.size
        K = np.array([[f, 0.0, (s - 1) / 2], [0.0, f, (s - 1) / 2], [0.0, 0.0, 1.0]])
        return VirtualCamera(self.labels["R_cam_virt"][i].astype(np.float64), K, s, s)


__all__ = ["CROP_SET_FORMAT", "CropSet", "LABEL_KEYS", "chunk_done", "chunk_paths", "write_chunk"]
