"""SPEED+ label files: ``[{"filename", "q_vbs2tango_true": [w,x,y,z], "r_Vo2To_vbs_true": [x,y,z]}, ...]``.

Test files may carry only file names (unlabelled).  Key order differs between the released files; nothing here
relies on it.  Readers validate every record and name the file, index and file name of what is wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from speedpose.errors import InputError
from speedpose.io_utils import atomic_write_json, read_json

Q_KEY = "q_vbs2tango_true"
R_KEY = "r_Vo2To_vbs_true"
#: largest accepted deviation of a quaternion's norm from 1; smaller deviations are renormalised
QUAT_NORM_TOLERANCE = 1e-3
DOMAINS = ("synthetic", "lightbox", "sunlamp")


@dataclass(frozen=True)
class PoseLabel:
    """One image's pose: ``p_cam = R(q_wxyz) p_body + r_cam_m``.

    Attributes:
        filename: plain file name, e.g. ``img000001.jpg``.
        q_wxyz: (4,) unit scalar-first quaternion (sign as given), or None when unlabelled.
        r_cam_m: (3,) body origin in the camera frame [m], or None when unlabelled.
    """

    filename: str
    q_wxyz: np.ndarray | None = None
    r_cam_m: np.ndarray | None = None

    @property
    def labelled(self) -> bool:
        return self.q_wxyz is not None

    def to_json(self) -> dict:
        d: dict = {"filename": self.filename}
        if self.q_wxyz is not None:
            d[Q_KEY] = [float(x) for x in self.q_wxyz]
            d[R_KEY] = [float(x) for x in self.r_cam_m]
        return d


def check_plain_filename(name: object, where: str, path: str | Path | None = None) -> str:
    """Refuse anything but a plain file name (no directory part, no ``..``, not empty, no NUL)."""
    if not isinstance(name, str) or not name:
        raise InputError(f"expected a non-empty file name string, got {name!r}", path, where)
    if "/" in name or "\\" in name or name in (".", "..") or "\x00" in name or name.startswith(".."):
        raise InputError(f"file name {name!r} is not a plain name (no directories or '..' allowed)", path, where)
    return name


def validate_quat(q: object, where: str, path: str | Path | None = None) -> np.ndarray:
    """A finite 4-vector whose norm is within :data:`QUAT_NORM_TOLERANCE` of 1, returned renormalised."""
    arr = _finite_vector(q, 4, "quaternion", where, path)
    norm = float(np.linalg.norm(arr))
    if abs(norm - 1) > QUAT_NORM_TOLERANCE:
        raise InputError(f"quaternion norm {norm:.6f} is not 1 (tolerance {QUAT_NORM_TOLERANCE})", path, where)
    return arr / norm


def validate_translation(r: object, where: str, path: str | Path | None = None,
                         require_positive_z: bool = True) -> np.ndarray:
    """A finite 3-vector [m], with z > 0 (the spacecraft in front of the camera) unless told otherwise."""
    arr = _finite_vector(r, 3, "translation", where, path)
    if require_positive_z and arr[2] <= 0:
        raise InputError(f"translation z = {arr[2]} m must be > 0 (object in front of the camera)", path, where)
    return arr


def _finite_vector(x: object, n: int, what: str, where: str, path) -> np.ndarray:
    if not isinstance(x, (list, tuple)) or len(x) != n or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in x):
        raise InputError(f"{what}: expected a list of {n} numbers, got {x!r}", path, where)
    if not all(math.isfinite(v) for v in x):
        raise InputError(f"{what}: non-finite value in {x!r}", path, where)
    return np.asarray(x, dtype=np.float64)


def parse_labels(data: object, path: str | Path | None = None, require_poses: bool = False,
                 require_positive_z: bool = True) -> list[PoseLabel]:
    """Validate a parsed label file (see module docstring); file names must be unique.

    ``require_positive_z=False`` accepts predictions behind the camera (a bad prediction is still a prediction).
    """
    if not isinstance(data, list):
        raise InputError(f"expected a JSON list of label records, got {type(data).__name__}", path)
    out: list[PoseLabel] = []
    seen: dict[str, int] = {}
    for i, rec in enumerate(data):
        where = f"index {i}"
        if not isinstance(rec, dict):
            raise InputError(f"expected an object with 'filename', got {type(rec).__name__}", path, where)
        name = check_plain_filename(rec.get("filename"), where, path)
        where = f"index {i} ({name})"
        if name in seen:
            raise InputError(f"duplicate file name (first at index {seen[name]})", path, where)
        seen[name] = i
        has_q, has_r = Q_KEY in rec, R_KEY in rec
        if has_q != has_r:
            raise InputError(f"record has {'only ' + Q_KEY if has_q else 'only ' + R_KEY}; need both or neither",
                             path, where)
        if not has_q:
            if require_poses:
                raise InputError(f"missing pose ({Q_KEY}, {R_KEY})", path, where)
            out.append(PoseLabel(name))
            continue
        out.append(PoseLabel(name, validate_quat(rec[Q_KEY], where, path), validate_translation(rec[R_KEY], where, path,
                                                                                    require_positive_z)))
    return out


def read_labels(path: str | Path, require_poses: bool = False, require_positive_z: bool = True) -> list[PoseLabel]:
    """Read and validate a SPEED+ label file (labelled or file-names-only)."""
    return parse_labels(read_json(path), path, require_poses, require_positive_z)


def write_labels(path: str | Path, labels: Iterable[PoseLabel]) -> None:
    """Write a label file in the SPEED+ schema, atomically."""
    atomic_write_json(path, [lab.to_json() for lab in labels])


def stack_poses(labels: Sequence[PoseLabel]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) quaternions and (N, 3) translations of labelled records."""
    if any(not lab.labelled for lab in labels):
        raise ValueError("stack_poses needs labelled records")
    if not labels:
        return np.zeros((0, 4)), np.zeros((0, 3))
    return np.stack([lab.q_wxyz for lab in labels]), np.stack([lab.r_cam_m for lab in labels])


def label_file(root: str | Path, domain: str, split: str | None = None) -> Path:
    """Path of a domain's label file under a SPEED+ root: ``synthetic/{train,validation}.json`` or
    ``{lightbox,sunlamp}/test.json``."""
    if domain not in DOMAINS:
        raise InputError(f"unknown domain {domain!r}; expected one of {', '.join(DOMAINS)}")
    if domain == "synthetic":
        split = split or "validation"
        if split not in ("train", "validation"):
            raise InputError(f"unknown synthetic split {split!r}; expected train or validation")
        return Path(root) / domain / f"{split}.json"
    if split not in (None, "test"):
        raise InputError(f"domain {domain} has only the split 'test', got {split!r}")
    return Path(root) / domain / "test.json"
