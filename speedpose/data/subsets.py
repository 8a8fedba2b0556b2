"""Deterministic subsets of record indices (validation limits, check and calibration images)."""

from __future__ import annotations

import numpy as np


def evenly_spaced(n: int, k: int | None) -> np.ndarray:
    """``min(k, n)`` evenly spaced indices of ``range(n)``, sorted and unique, as int64 (all of them when ``k`` is
    None or >= n; none when ``k`` is 0)."""
    if k is None or k >= n:
        return np.arange(n, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))
