"""Datasets: the adapter interface, the SPEED+ reader and validation, and the preprocessed-split loader.

Public API::

    DatasetAdapter, PoseRecords, Reject          # speedpose.data.base
    SpeedplusAdapter, read_split, SPLITS          # speedpose.data.speedplus
    open_split, PreprocessedSplit                 # speedpose.data.loader
"""

from speedpose.data.base import DatasetAdapter, PoseRecords, Reject
from speedpose.data.loader import PreprocessedSplit, open_split
from speedpose.data.speedplus import SPLITS, SpeedplusAdapter, available_splits, read_split

__all__ = ["DatasetAdapter", "PoseRecords", "Reject", "SpeedplusAdapter", "read_split", "available_splits", "SPLITS",
           "open_split", "PreprocessedSplit"]
