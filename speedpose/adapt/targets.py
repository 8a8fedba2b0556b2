"""Views of a target-domain split that make "never read the target labels" hold by construction.

:func:`unlabelled_view` keeps only what identifies an image (``filename``, ``source_index``, ``image_row``) from a
:class:`~speedpose.data.loader.PreprocessedSplit`'s index table and rebuilds every other column as unlabelled
(NaN poses, keypoints and boxes, no mask boxes).  Everything downstream of adaptation sees the target through it,
so a target file with poses and one without give the same view.  :func:`pseudo_labelled_view` then writes pseudo
poses into such a view, with keypoints and keypoint boxes reprojected from them exactly as preprocessing does for
true labels, so that a model kind's training samples (:meth:`~speedpose.pose.kinds.base.ModelKind.samples`) use them
unchanged.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from speedpose.data.base import PoseRecords
from speedpose.data.index import build_index
from speedpose.data.loader import PreprocessedSplit
from speedpose.errors import ShapeError

#: the only columns of a target index table that adaptation reads
IDENTITY_COLUMNS = ("filename", "source_index", "image_row")


def _records(split: PreprocessedSplit, identity: pd.DataFrame, q_wxyz: np.ndarray, r_cam_m: np.ndarray
             ) -> pd.DataFrame:
    n = len(identity)
    names = identity["filename"].astype(str).tolist()
    labelled = np.isfinite(q_wxyz).all(axis=1) & np.isfinite(r_cam_m).all(axis=1)
    recs = PoseRecords(domain=split.domain, split=split.split, filenames=names,
                       image_paths=[Path(f) for f in names], q_wxyz=q_wxyz, r_cam_m=r_cam_m, labelled=labelled,
                       source_index=identity["source_index"].to_numpy(dtype=np.int64), camera=split.camera)
    return build_index(recs, split.camera, identity["image_row"].to_numpy(dtype=np.int64).reshape(n))


def unlabelled_view(split: PreprocessedSplit) -> PreprocessedSplit:
    """``split`` with every label-derived column rebuilt as unlabelled (see the module docstring)."""
    identity = split.records.loc[:, list(IDENTITY_COLUMNS)].reset_index(drop=True)
    n = len(identity)
    records = _records(split, identity, np.full((n, 4), np.nan), np.full((n, 3), np.nan))
    return dataclasses.replace(split, records=records, _images=None)


def pseudo_labelled_view(view: PreprocessedSplit, q_wxyz: np.ndarray, r_cam_m: np.ndarray) -> PreprocessedSplit:
    """An unlabelled view with pseudo poses: rows with finite ``q_wxyz`` (N, 4) and ``r_cam_m`` (N, 3) [m, camera
    frame] become labelled, with their keypoints and boxes reprojected [full-resolution px]; NaN rows stay
    unlabelled."""
    n = len(view)
    q = np.asarray(q_wxyz, dtype=np.float64)
    r = np.asarray(r_cam_m, dtype=np.float64)
    if q.shape != (n, 4) or r.shape != (n, 3):
        raise ShapeError(f"pseudo poses: expected ({n}, 4) and ({n}, 3), got {q.shape} and {r.shape}")
    identity = view.records.loc[:, list(IDENTITY_COLUMNS)].reset_index(drop=True)
    return dataclasses.replace(view, records=_records(view, identity, q, r), _images=None)
