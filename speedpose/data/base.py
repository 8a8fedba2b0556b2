"""The dataset adapter interface: one abstract method that turns a dataset on disk into one typed record container.

Every dataset speedpose reads (SPEED+ here; ModelNet10-SO(3) and PASCAL3D+ later) subclasses
:class:`DatasetAdapter` and implements :meth:`DatasetAdapter._generate_records`, which returns a
:class:`PoseRecords`.  The stages that follow (preprocessing, training) only see :class:`PoseRecords`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speedpose.camera import Camera
from speedpose.errors import ShapeError


@dataclass(frozen=True)
class Reject:
    """A record refused by validation (kept when bad records are skipped, listed in the rejects file).

    Attributes:
        domain, split: where the record comes from.
        index: position of the record in its label file (0-based).
        filename: its file name (``repr`` of the raw value when it was not a string).
        reason: what is wrong, e.g. ``"quaternion norm 1.5 is not 1"``.
    """

    domain: str
    split: str
    index: int
    filename: str
    reason: str

    def message(self, label_path: Path | str | None = None) -> str:
        where = f"{label_path}, " if label_path is not None else ""
        return f"{self.domain}/{self.split}: {where}index {self.index} ({self.filename}): {self.reason}"


@dataclass(frozen=True)
class PoseRecords:
    """The records of one split of a dataset: image files and their (optional) poses.

    Poses follow the SPEED+ convention ``p_cam = R(q_wxyz) p_body + r_cam_m`` (camera frame: x right, y down,
    z forward).  Unlabelled records carry NaN poses and ``labelled == False``.

    Attributes:
        domain: dataset domain, e.g. ``"lightbox"``.
        split: split name, e.g. ``"test"``.
        filenames: N plain file names (unique within the domain).
        image_paths: N image files.
        q_wxyz: (N, 4) float64 unit scalar-first quaternions, sign as given (NaN rows when unlabelled).
        r_cam_m: (N, 3) float64 body origin in the camera frame [m] (NaN rows when unlabelled).
        labelled: (N,) bool.
        source_index: (N,) int64 position of each record in its label file.
        camera: the full-resolution camera, when the dataset has one.
        mask_paths: N mask files (``None`` entries allowed) when the dataset has masks, else ``None``.
        label_path: the label file the records come from.
        rejects: records refused by validation (only when bad records are skipped).
    """

    domain: str
    split: str
    filenames: list[str]
    image_paths: list[Path]
    q_wxyz: np.ndarray
    r_cam_m: np.ndarray
    labelled: np.ndarray
    source_index: np.ndarray
    camera: Camera | None = None
    mask_paths: list[Path] | None = None
    label_path: Path | None = None
    rejects: list[Reject] = field(default_factory=list)

    def __post_init__(self):
        n = len(self.filenames)
        checks = {"image_paths": (len(self.image_paths),), "q_wxyz": np.shape(self.q_wxyz),
                  "r_cam_m": np.shape(self.r_cam_m), "labelled": np.shape(self.labelled),
                  "source_index": np.shape(self.source_index)}
        expected = {"image_paths": (n,), "q_wxyz": (n, 4), "r_cam_m": (n, 3), "labelled": (n,),
                    "source_index": (n,)}
        for key, shape in checks.items():
            if tuple(shape) != expected[key]:
                raise ShapeError(f"PoseRecords.{key}: expected shape {expected[key]}, got {tuple(shape)}")
        if self.mask_paths is not None and len(self.mask_paths) != n:
            raise ShapeError(f"PoseRecords.mask_paths: expected {n} entries, got {len(self.mask_paths)}")

    def __len__(self) -> int:
        return len(self.filenames)

    def subset(self, keep: np.ndarray | list[int]) -> "PoseRecords":
        """The records at positions ``keep`` (rejects kept as they are)."""
        idx = np.asarray(keep, dtype=np.int64)
        return PoseRecords(
            domain=self.domain, split=self.split,
            filenames=[self.filenames[i] for i in idx], image_paths=[self.image_paths[i] for i in idx],
            q_wxyz=self.q_wxyz[idx], r_cam_m=self.r_cam_m[idx], labelled=self.labelled[idx],
            source_index=self.source_index[idx], camera=self.camera,
            mask_paths=None if self.mask_paths is None else [self.mask_paths[i] for i in idx],
            label_path=self.label_path, rejects=list(self.rejects))


class DatasetAdapter(ABC):
    """Turns one dataset on disk into :class:`PoseRecords`, one split at a time.

    Subclasses implement :meth:`_generate_records` only; callers use :meth:`get_records`.
    """

    #: names of the splits this adapter can produce
    splits: tuple[str, ...] = ()

    @abstractmethod
    def _generate_records(self, split: str) -> PoseRecords:
        """Read and validate one split.  Raise :class:`speedpose.errors.InputError` on bad input."""

    def get_records(self, split: str) -> PoseRecords:
        """The validated records of ``split``."""
        return self._generate_records(split)
