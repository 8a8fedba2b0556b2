"""Inference over a whole split as the stages run it: resumable chunked predictions with the key of what they
depend on, and the predicted SO(3) distributions in the camera frame.

Used by ``evaluate``, ``submit`` and ``predict``; the model, split and model kind are those of
:func:`speedpose.pose.inference.predict_split`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from speedpose.models.i2s import so3_distribution
from speedpose.pose.inference import PosePredictions, predict_split
from speedpose.pose.kinds.base import ModelKind
from speedpose.resumable import compute_chunks, resumable_chunks

#: images per resumable inference chunk
CHUNK = 256
#: the chunk files in the cache folder, named by their first position in ``indices``
CHUNK_PATTERN = "chunk_{start:08d}.npz"
#: the arrays of :class:`PosePredictions` a chunk file holds
FIELDS = ("indices", "q_wxyz", "r_cam_m", "confidence", "box_xyxy", "loc_score", "R_cam_virt", "branch")
#: the arrays a chunk holds when the model predicts them (a keypoint head)
OPTIONAL_FIELDS = ("kp_uv", "kp_conf")
#: SO(3) grid level of the distribution plots (36,864 rotations)
PLOT_LEVEL = 3


def inference_key(loaded, split, batch_size: int) -> dict:
    """What a cached prediction of ``loaded`` (a :class:`speedpose.runs.LoadedRun`) on the preprocessed ``split``
    depends on: run, checkpoint file (path, size, modification time), config hash, dataset fingerprint, domain,
    split and batch size."""
    st = loaded.checkpoint.stat()
    return {"run": str(Path(loaded.run_dir).resolve()), "checkpoint": str(loaded.checkpoint.resolve()),
            "checkpoint_stat": [st.st_size, st.st_mtime_ns], "config_hash": loaded.config_hash,
            "dataset": split.manifest["fingerprints"]["inputs"], "domain": split.domain, "split": split.split,
            "batch_size": batch_size}


def predict_cached(model, split, indices: np.ndarray, kind: ModelKind, device: torch.device, batch_size: int,
                   cache_dir: Path | None, key: dict, progress: bool = True, desc: str = "predict"
                   ) -> PosePredictions:
    """:func:`predict_split` over ``indices`` in chunks of :data:`CHUNK` images, each chunk saved to ``cache_dir``
    as it finishes (:mod:`speedpose.resumable`), so that an interrupted run resumes; a cache made under another
    ``key`` (e.g. :func:`inference_key`) is discarded.  ``cache_dir=None``: no cache."""
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        return predict_split(model, split, indices, kind, device, batch_size=batch_size)
    files = None if cache_dir is None else resumable_chunks(cache_dir, key, pattern=CHUNK_PATTERN, chunk_size=CHUNK)

    def compute(start: int, stop: int) -> dict[str, np.ndarray]:
        pred = predict_split(model, split, indices[start:stop], kind, device, batch_size=batch_size)
        return {name: getattr(pred, name) for name in FIELDS + OPTIONAL_FIELDS if getattr(pred, name) is not None}

    def fits(start: int, stop: int, arrays: dict[str, np.ndarray]) -> bool:
        return set(FIELDS) <= set(arrays) and np.array_equal(arrays["indices"], indices[start:stop])

    with tqdm(total=len(indices), desc=desc, unit="img", disable=not progress) as bar:
        parts = compute_chunks(len(indices), CHUNK, compute, files, accept=fits,
                               on_chunk=lambda start, stop, reused: bar.update(stop - start))
    optional = [name for name in OPTIONAL_FIELDS if all(name in p for p in parts)]
    return PosePredictions(**{name: np.concatenate([p[name] for p in parts]) for name in FIELDS + tuple(optional)})


def distributions_in_camera(model, split, indices: Sequence[int], kind: ModelKind, device: torch.device,
                            level: int = PLOT_LEVEL) -> tuple[PosePredictions, np.ndarray, np.ndarray]:
    """Predictions for a few images with their distributions on the level-``level`` SO(3) grid, expressed in the
    real camera frame (the head's coefficients live in each crop's virtual-camera frame: ``R_cam = R_cam_virt @
    R_virt``).

    Returns:
        (predictions, R_grid_cam (B, N, 3, 3) float64, probs (B, N) float64 summing to 1 per image).
    """
    pred = predict_split(model, split, np.asarray(indices, dtype=np.int64), kind, device, batch_size=len(indices),
                         keep_coeffs=True)
    R_grid, probs = so3_distribution(torch.from_numpy(pred.coeffs).to(device), level=level)
    R_grid = R_grid.double().cpu().numpy()
    R_cam = np.einsum("bij,njk->bnik", pred.R_cam_virt, R_grid)
    return pred, R_cam, probs.double().cpu().numpy()
