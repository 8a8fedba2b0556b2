"""Reading what ``speedpose preprocess`` wrote: records and images of one split.

Layout of a preprocessed folder (``--out``; default :func:`default_prep_dir`, a per-root folder in the user's cache:
``${SPEEDPOSE_CACHE:-${XDG_CACHE_HOME:-~/.cache}/speedpose}/preprocessed/<root name>-<hash of its absolute path>``,
so that preprocessing never writes into the dataset)::

    <out>/<domain>/<split>/manifest.json   written last: a split without it is not finished and is refused
    <out>/<domain>/<split>/index.parquet   the records (columns: speedpose.data.index)
    <out>/<domain>/<split>/images.npy      (N_rows, H, W) uint8 grayscale at the preprocessed size, memory-mapped
    <out>/<domain>/<split>/scan.parquet    per image-store row: decoded fine or why not, mask box
    <out>/<domain>/<split>/rejects.csv     records left out by --skip-bad, with the reason

Example::

    split = open_split("/data/speedplusv2", "lightbox", "test")
    img = split.image(0)                     # uint8 (512, 768), no JPEG decoding
    K_small = split.camera_small.K           # intrinsics of that image
    full = split.full_image(0)               # uint8 (1200, 1920) decoded from the original JPEG
    kp = split.kp_uv[0]                      # (11, 2) keypoints [full-resolution px]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import hashlib
import os

import numpy as np
import pandas as pd

from speedpose.camera import Camera
from speedpose.data import index as idx
from speedpose.data.image_store import open_store, read_gray
from speedpose.errors import InputError
from speedpose.io_utils import read_json

#: version of the preprocessed format; a manifest of another version is refused (re-run preprocess)
PREP_FORMAT = 1
MANIFEST = "manifest.json"
INDEX = "index.parquet"
IMAGES = "images.npy"
SCAN = "scan.parquet"
REJECTS = "rejects.csv"


def split_dir(out: str | Path, domain: str, split: str) -> Path:
    """Folder of one preprocessed split."""
    return Path(out) / domain / split


def default_prep_dir(root: str | Path) -> Path:
    """Default output folder of ``speedpose preprocess --root ROOT``: one folder per dataset root in the cache,
    ``${SPEEDPOSE_CACHE:-${XDG_CACHE_HOME:-~/.cache}/speedpose}/preprocessed/<name>-<sha1(abs path)[:10]>``."""
    root = Path(root).resolve()
    cache = os.environ.get("SPEEDPOSE_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "speedpose")
    tag = hashlib.sha1(str(root).encode()).hexdigest()[:10]
    return Path(cache) / "preprocessed" / f"{root.name or 'root'}-{tag}"


def resolve_prep_dir(prep_dir_or_root: str | Path, domain: str, split: str) -> Path:
    """The preprocessed folder holding ``domain/split``: the path itself, or the default folder of a root."""
    base = Path(prep_dir_or_root)
    for cand in (base, default_prep_dir(base)):
        if (split_dir(cand, domain, split) / MANIFEST).is_file():
            return cand
    raise InputError(f"no preprocessed {domain}/{split} here nor in its default folder {default_prep_dir(base)} "
                     f"(expected {domain}/{split}/{MANIFEST}): run `speedpose preprocess --root ...` first", base)


def camera_from_manifest(cam: dict) -> Camera:
    """The full-resolution camera stored in a manifest (``{"K", "dist", "width", "height"}``)."""
    return Camera(np.asarray(cam["K"], dtype=np.float64), np.asarray(cam["dist"], dtype=np.float64),
                  int(cam["width"]), int(cam["height"]))


@dataclass
class PreprocessedSplit:
    """Records and images of one preprocessed split (see :func:`open_split`).

    Attributes:
        domain, split: which split.
        directory: its folder.
        root: the SPEED+ root the originals are read from (for :meth:`full_image`).
        manifest: the parsed manifest.json.
        records: the index table (pandas DataFrame, one row per usable image; columns in
            :mod:`speedpose.data.index`); row ``i`` is image ``i``.
        camera: the full-resolution camera (camera.json of the dataset).
    """

    domain: str
    split: str
    directory: Path
    root: Path
    manifest: dict
    records: pd.DataFrame
    camera: Camera
    _images: np.ndarray | None = field(default=None, repr=False)

    def __getstate__(self) -> dict:
        # pickled into DataLoader workers: never ship the memory map (it would be copied whole), reopen it there
        state = dict(self.__dict__)
        state["_images"] = None
        return state

    # ------------------------------------------------------------------------------------------------ sizes
    @property
    def size(self) -> tuple[int, int]:
        """(W, H) of the stored images [px]."""
        w, h = self.manifest["params"]["size"]
        return int(w), int(h)

    @property
    def camera_small(self) -> Camera:
        """The camera of the stored (resized) images."""
        return self.camera.resized(*self.size)

    def __len__(self) -> int:
        return len(self.records)

    # ------------------------------------------------------------------------------------------------ arrays
    @property
    def filenames(self) -> list[str]:
        return self.records["filename"].tolist()

    @property
    def labelled(self) -> np.ndarray:
        """(N,) bool."""
        return self.records["labelled"].to_numpy(dtype=bool)

    @property
    def q_wxyz(self) -> np.ndarray:
        """(N, 4) scalar-first quaternions, sign as in the label file (NaN when unlabelled)."""
        return idx.q_wxyz(self.records)

    @property
    def q_wxyz_canonical(self) -> np.ndarray:
        """(N, 4) the same rotations with w >= 0."""
        return idx.q_wxyz(self.records, canonical=True)

    @property
    def r_cam_m(self) -> np.ndarray:
        """(N, 3) body origin in the camera frame [m]."""
        return idx.r_cam_m(self.records)

    @property
    def kp_uv(self) -> np.ndarray:
        """(N, 11, 2) keypoints [full-resolution px]."""
        return idx.kp_uv(self.records)

    def kp_box(self, clipped: bool = True) -> np.ndarray:
        """(N, 4) keypoint box (x0, y0, x1, y1) [full-resolution px]."""
        return idx.kp_box(self.records, clipped)

    # ------------------------------------------------------------------------------------------------ images
    @property
    def images(self) -> np.ndarray:
        """The whole image store (N_rows, H, W) uint8, memory-mapped; index it with ``records.image_row``."""
        if self._images is None:
            self._images = open_store(self.directory / IMAGES)
        return self._images

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` at the preprocessed size: uint8 (H, W), read from the memory map (a copy)."""
        return np.array(self.images[int(self.records["image_row"].iat[i])])

    def image_path(self, i: int) -> Path:
        """The original JPEG of record ``i``."""
        return self.root / self.domain / "images" / self.records["filename"].iat[i]

    def full_image(self, i: int) -> np.ndarray:
        """Image ``i`` decoded from the original JPEG: uint8 (camera.height, camera.width), grayscale."""
        path = self.image_path(i)
        img = read_gray(path) if path.is_file() else None
        if img is None or img.shape != (self.camera.height, self.camera.width):
            raise InputError(f"original image missing, unreadable or resized since preprocessing (expected a "
                             f"{self.camera.width}x{self.camera.height} JPEG)", path)
        return img

    def full_crop(self, i: int, box_xyxy: np.ndarray | tuple[int, int, int, int]) -> tuple[np.ndarray, Camera]:
        """A crop of the full-resolution original and its camera.

        Args:
            box_xyxy: (x0, y0, x1, y1) integer pixel bounds, x1/y1 exclusive; may extend beyond the image
                (zero padding there).
        Returns:
            (uint8 (y1-y0, x1-x0) crop, the camera of the crop (:meth:`Camera.cropped`)).
        """
        x0, y0, x1, y1 = (int(round(float(v))) for v in box_xyxy)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"empty crop box {box_xyxy}")
        full = self.full_image(i)
        out = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        sx0, sy0 = max(x0, 0), max(y0, 0)
        sx1, sy1 = min(x1, full.shape[1]), min(y1, full.shape[0])
        if sx1 > sx0 and sy1 > sy0:
            out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = full[sy0:sy1, sx0:sx1]
        return out, self.camera.cropped(x0, y0, x1 - x0, y1 - y0)


def open_split(prep_dir_or_root: str | Path, domain: str, split: str, root: str | Path | None = None
               ) -> PreprocessedSplit:
    """Open a preprocessed split.

    Args:
        prep_dir_or_root: the ``--out`` folder of ``speedpose preprocess`` or the SPEED+ root (then its
            :func:`default_prep_dir` is used).
        domain: ``synthetic``, ``lightbox`` or ``sunlamp``.
        split: ``train``/``validation`` (synthetic) or ``test``.
        root: where the original JPEGs are (default: the root recorded in the manifest).
    Raises:
        InputError: no finished preprocessing of that split, or one of another format version.
    """
    base = resolve_prep_dir(prep_dir_or_root, domain, split)
    sdir = split_dir(base, domain, split)
    manifest = read_json(sdir / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != PREP_FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise InputError(f"preprocessed format {got!r}, this speedpose reads {PREP_FORMAT}: re-run preprocess",
                         sdir / MANIFEST)
    records = idx.read_index(sdir / INDEX)
    camera = camera_from_manifest(manifest["camera"])
    return PreprocessedSplit(domain, split, sdir, Path(root) if root is not None else Path(manifest["root"]),
                             manifest, records, camera)
