"""Datasets: the adapter interface, the SPEED+ reader and validation, and the preprocessed-split loader.

Public API (imported lazily, so that preprocessing workers importing :mod:`speedpose.data.image_store` stay light)::

    DatasetAdapter, PoseRecords, Reject                        # speedpose.data.base
    SpeedplusAdapter, read_split, available_splits, SPLITS      # speedpose.data.speedplus
    open_split, PreprocessedSplit                               # speedpose.data.loader
"""

from __future__ import annotations

from speedpose.lazy_exports import lazy_exports

_EXPORTS = {
    "DatasetAdapter": "base", "PoseRecords": "base", "Reject": "base",
    "SpeedplusAdapter": "speedplus", "read_split": "speedplus", "available_splits": "speedplus", "SPLITS": "speedplus",
    "open_split": "loader", "PreprocessedSplit": "loader",
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
