"""Records of object-category benchmarks (ModelNet10-SO(3), PASCAL3D+): :class:`PoseRecords` plus classes.

Benchmarks are orientation-only: ``r_cam_m`` holds NaN (their translations are not in metres, or absent) and the
rotation is kept as a matrix too (``R_cam_obj``), as the datasets give it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from speedpose.data.base import PoseRecords
from speedpose.errors import ShapeError


@dataclass(frozen=True)
class CategoryRecords(PoseRecords):
    """:class:`PoseRecords` of a category benchmark.

    Attributes (in addition to :class:`PoseRecords`'):
        R_cam_obj: (N, 3, 3) float64 rotation of the object in the frame of the camera of the (warped) image:
            ``p_cam = R_cam_obj p_obj + t`` (camera x right, y down, z forward).  ``q_wxyz`` is the same rotation.
        category_ids: (N,) int64 class of each record, index into ``category_names``.
        category_names: names of every class of the dataset.
        extras: per-record arrays of the adapter (first axis N), e.g. boxes and intrinsics; documented there.
    """

    R_cam_obj: np.ndarray = field(default_factory=lambda: np.zeros((0, 3, 3)))
    category_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    category_names: tuple[str, ...] = ()
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        n = len(self.filenames)
        if np.shape(self.R_cam_obj) != (n, 3, 3):
            raise ShapeError(f"CategoryRecords.R_cam_obj: expected shape {(n, 3, 3)}, got {np.shape(self.R_cam_obj)}")
        if np.shape(self.category_ids) != (n,):
            raise ShapeError(f"CategoryRecords.category_ids: expected shape {(n,)}, got "
                             f"{np.shape(self.category_ids)}")
        for key, value in self.extras.items():
            if len(value) != n:
                raise ShapeError(f"CategoryRecords.extras[{key!r}]: expected {n} rows, got {len(value)}")

    def subset(self, keep: np.ndarray | list[int]) -> "CategoryRecords":
        """The records at positions ``keep``."""
        idx = np.asarray(keep, dtype=np.int64)
        base = PoseRecords.subset(self, idx)
        return CategoryRecords(
            **{f: getattr(base, f) for f in PoseRecords.__dataclass_fields__},
            R_cam_obj=self.R_cam_obj[idx], category_ids=self.category_ids[idx],
            category_names=self.category_names, extras={k: v[idx] for k, v in self.extras.items()})

    def class_counts(self) -> dict[str, int]:
        """Number of records per class name (classes without records included, with 0)."""
        counts = np.bincount(self.category_ids, minlength=len(self.category_names))
        return {name: int(c) for name, c in zip(self.category_names, counts)}


def check_rotations(R: np.ndarray, tol: float = 1e-3) -> np.ndarray:
    """Indices of the matrices of (N, 3, 3) ``R`` that are not rotations (``|R^T R - I| > tol`` or ``det < 0``)."""
    R = np.asarray(R, dtype=np.float64)
    err = np.abs(np.swapaxes(R, -1, -2) @ R - np.eye(3)).max(axis=(-2, -1))
    bad = ~np.isfinite(R).all(axis=(-2, -1)) | ~(err <= tol) | ~(np.linalg.det(R) > 0)
    return np.flatnonzero(bad)
