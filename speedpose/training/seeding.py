"""Seeding and RNG state capture/restore for exact, resumable runs.

RNG states are stored as tensors and plain containers only, so that checkpoints load with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch

_MASK64 = (1 << 64) - 1


def mix_seed(*parts: int) -> int:
    """A well-mixed 32-bit seed from integers (SplitMix64 chain); the same parts always give the same seed.

    Used for per-sample and per-rank seeds: ``mix_seed(seed, epoch, index)``.  Negative parts are allowed.
    """
    z = 0x9E3779B97F4A7C15
    for p in parts:
        z = (z + (int(p) & _MASK64) + 0x9E3779B97F4A7C15) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        z ^= z >> 31
    return z & 0xFFFFFFFF


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global RNG and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)


def seed_host_rngs(seed: int) -> None:
    """Seed python, numpy and the torch CPU generator only (no CUDA call: safe in data-loading code)."""
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.default_generator.manual_seed(seed)


def capture_host_rng() -> dict[str, Any]:
    """The python, numpy (legacy global) and torch CPU RNG states as tensors and plain values."""
    version, py_state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": None if gauss is None else float(gauss)},
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }


def restore_host_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_host_rng`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])


def capture_rng(device: torch.device | None = None) -> dict[str, Any]:
    """Host RNG states plus, on a CUDA ``device``, that device's generator state."""
    state = capture_host_rng()
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Inverse of :func:`capture_rng` (the CUDA part only when both the state and ``device`` have one)."""
    restore_host_rng(state)
    if device is not None and device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


@contextmanager
def preserved_rng(device: torch.device | None = None) -> Iterator[None]:
    """Run a block without disturbing any RNG: states are captured before and restored after."""
    state = capture_rng(device)
    try:
        yield
    finally:
        restore_rng(state, device)
