"""ModelNet10-SO(3) in Image2Sphere's npz format (SPEEDPLUS.md section 10).

Layout: ``<root>/modelnet10_{train,limited_train,test}.npz`` (or the same files under ``<root>/modelnet10/``), each
with ``imgs`` uint8 (N, 224, 224, 1) grey renderings, ``rots`` (N, 3, 3) rotations and ``cat_ids`` (N,) integer
classes in [0, 10).  The rotation is used as stored: the object's rotation in the frame of the rendering camera
(the labels are only compared with predictions of the same convention, and the geodesic error does not depend on a
fixed change of frame).

The images stay on disk: an uncompressed npz member (``np.savez``) is memory-mapped where it lies inside the zip
(the training set is about 20 GB of pixels); a compressed one (``np.savez_compressed``) is decompressed into memory
once, with a warning.
"""

from __future__ import annotations

import struct
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speedpose.data.base import DatasetAdapter
from speedpose.data.category_records import CategoryRecords, check_rotations
from speedpose.errors import InputError
from speedpose.geometry.rotations import matrix_to_quat_wxyz

#: class names in the order of ``cat_ids``
MODELNET10_CLASSES = ("bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table",
                      "toilet")
#: split name -> file name
MODELNET10_FILES = {"train": "modelnet10_train.npz", "limited_train": "modelnet10_limited_train.npz",
                    "test": "modelnet10_test.npz"}
REQUIRED_KEYS = ("imgs", "rots", "cat_ids")


@dataclass(frozen=True)
class NpzArrayRef:
    """Where an array of an npz file lies, so that each (worker) process maps it on its own.

    Attributes:
        path: the npz file.
        key: the member name without ``.npy``.
        shape, dtype: of the array.
        offset: byte offset of the raw data inside ``path`` (None when the member is compressed).
    """

    path: Path
    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int | None

    def open(self) -> np.ndarray:
        """A read-only memory map of the array (or the array read into memory for a compressed member)."""
        if self.offset is not None:
            return np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape)
        with np.load(self.path, allow_pickle=False) as z:
            return z[self.key]


def npz_array_ref(path: Path, key: str) -> NpzArrayRef:
    """Locate member ``key`` of ``path`` (InputError naming the file and key when missing or unreadable)."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"not an npz (zip) file: {exc}", path) from None
    with zf:
        name = f"{key}.npy"
        try:
            info = zf.getinfo(name)
        except KeyError:
            present = sorted(n[:-4] for n in zf.namelist() if n.endswith(".npy"))
            raise InputError(f"missing key {key!r} (expected keys {', '.join(REQUIRED_KEYS)}; present: "
                             f"{', '.join(present) or 'none'})", path, f"key {key!r}") from None
        with zf.open(info) as member:
            try:
                version = np.lib.format.read_magic(member)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read_header is None:
                    raise ValueError(f"npy format version {version}")
                shape, fortran, dtype = read_header(member)
            except ValueError as exc:
                raise InputError(f"not a .npy array: {exc}", path, f"key {key!r}") from None
            header_len = member.tell()
    if dtype.hasobject:
        raise InputError("object arrays are not accepted (expected numbers)", path, f"key {key!r}")
    offset = None
    if info.compress_type == zipfile.ZIP_STORED and not fortran:
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)
            name_len, extra_len = struct.unpack("<HH", local[26:30])
        offset = info.header_offset + 30 + name_len + extra_len + header_len
    elif info.compress_type != zipfile.ZIP_STORED:
        warnings.warn(f"{path}: {key} is compressed and is read into memory (save with np.savez to memory-map it)",
                      stacklevel=2)
    return NpzArrayRef(Path(path), key, tuple(shape), dtype, offset)


def find_modelnet10_file(root: str | Path, split: str) -> Path:
    """The npz of ``split`` under ``root`` or ``root/modelnet10``."""
    if split not in MODELNET10_FILES:
        raise InputError(f"unknown ModelNet10-SO(3) split {split!r}; expected one of {', '.join(MODELNET10_FILES)}")
    root = Path(root)
    for cand in (root / MODELNET10_FILES[split], root / "modelnet10" / MODELNET10_FILES[split]):
        if cand.is_file():
            return cand
    raise InputError(f"ModelNet10-SO(3) {split} split not found (expected {MODELNET10_FILES[split]} in the root "
                     f"or in its modelnet10/ folder)", root)


class ModelNet10Adapter(DatasetAdapter):
    """ModelNet10-SO(3) npz files -> :class:`CategoryRecords`.

    Records: ``filenames`` are ``"<npz stem>/<index>"``, ``image_paths`` the npz file, ``source_index`` the row in
    it; ``extras["images"]`` holds one :class:`NpzArrayRef` per record pointing to ``imgs`` (object array of the
    same reference), opened by the training dataset.

    Args:
        root: folder holding the npz files (or their ``modelnet10/`` folder).
    """

    splits = tuple(MODELNET10_FILES)

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _generate_records(self, split: str) -> CategoryRecords:
        path = find_modelnet10_file(self.root, split)
        refs = {k: npz_array_ref(path, k) for k in REQUIRED_KEYS}
        imgs = refs["imgs"]
        if imgs.dtype != np.uint8 or len(imgs.shape) != 4 or imgs.shape[3] not in (1, 3) or imgs.shape[1] < 32:
            raise InputError(f"expected uint8 images of shape (N, H, W, 1), got {imgs.dtype} {imgs.shape}", path,
                             "key 'imgs'")
        n = imgs.shape[0]
        with np.load(path, allow_pickle=False) as z:
            rots, cat_ids = z["rots"], z["cat_ids"]
        if rots.shape != (n, 3, 3) or not np.issubdtype(rots.dtype, np.floating):
            raise InputError(f"expected float rotations of shape ({n}, 3, 3), got {rots.dtype} {rots.shape}", path,
                             "key 'rots'")
        if cat_ids.shape != (n,) or not np.issubdtype(cat_ids.dtype, np.integer):
            raise InputError(f"expected integer class ids of shape ({n},), got {cat_ids.dtype} {cat_ids.shape}",
                             path, "key 'cat_ids'")
        bad = np.flatnonzero((cat_ids < 0) | (cat_ids >= len(MODELNET10_CLASSES)))
        if len(bad):
            raise InputError(f"class id {cat_ids[bad[0]]} outside [0, {len(MODELNET10_CLASSES)})", path,
                             f"key 'cat_ids', index {bad[0]}")
        bad = check_rotations(rots)
        if len(bad):
            raise InputError("not a rotation matrix (expected R^T R = I within 1e-3 and det(R) = +1)", path,
                             f"key 'rots', index {bad[0]}")
        R = rots.astype(np.float64)
        U, _, Vt = np.linalg.svd(R)  # float32 labels: snap to the nearest exact rotation
        R = U @ Vt
        ref_column = np.empty(n, dtype=object)
        ref_column[:] = [imgs] * n
        return CategoryRecords(
            domain="modelnet10", split=split, filenames=[f"{path.stem}/{i}" for i in range(n)],
            image_paths=[path] * n, q_wxyz=np.asarray(matrix_to_quat_wxyz(R)), r_cam_m=np.full((n, 3), np.nan),
            labelled=np.ones(n, bool), source_index=np.arange(n, dtype=np.int64), label_path=path,
            R_cam_obj=R, category_ids=cat_ids.astype(np.int64), category_names=MODELNET10_CLASSES,
            extras={"images": ref_column})
