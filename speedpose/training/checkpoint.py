"""Checkpoints: atomic writing, ``weights_only`` loading, and picking ``best|last|FILE`` in a run folder.

A training checkpoint is a dict of tensors and plain containers (loadable with ``weights_only=True``)::

    format         "speedpose-checkpoint"          version   CHECKPOINT_VERSION
    model          state_dict of the bare model (no DDP "module." prefix)
    optimizer      optimizer.state_dict()          scheduler  scheduler.state_dict()
    scaler         GradScaler.state_dict() or None
    rng            [per-rank RNG states]  (see speedpose.training.seeding.capture_rng)
    epoch          epoch of the next batch (0-based)    step_in_epoch  its index in that epoch
    global_step    optimiser steps done
    best           {"metric", "mode", "value", "step"}  val_metrics  last validation metrics or None
    config         resolved config (plain dict)    config_hash  its hash   world_size, torch_version
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from speedpose.errors import InputError
from speedpose.io_utils import atomic_path

CHECKPOINT_FORMAT = "speedpose-checkpoint"
CHECKPOINT_VERSION = 1
LAST_NAME = "last.pt"
BEST_NAME = "best.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` atomically (temporary file, then rename); returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: str | Path, model: nn.Module | None = None, map_location: Any = "cpu",
                    strict: bool = True) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; when ``model`` is given, load its weights into it.

    Args:
        path: a ``.pt`` file written by the engine (or any dict with a ``"model"`` state_dict).
        model: optional bare model (not DDP-wrapped) to receive ``checkpoint["model"]``.
        map_location: where tensors go (``"cpu"`` by default).
        strict: passed to ``load_state_dict``.

    Returns:
        The checkpoint dict.

    Raises:
        InputError: missing file, unreadable file, or no ``"model"`` entry / mismatching weights.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("checkpoint not found", path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise InputError(f"not a loadable checkpoint (torch.load weights_only=True failed: {first})",
                         path) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise InputError("not a speedpose checkpoint (expected a dict with a 'model' state_dict)", path)
    if model is not None:
        try:
            model.load_state_dict(ckpt["model"], strict=strict)
        except RuntimeError as exc:
            raise InputError(f"checkpoint weights do not fit the model: {str(exc).splitlines()[0]}",
                             path) from None
    return ckpt


def select_checkpoint(run_dir: str | Path, which: str = "best") -> Path:
    """Resolve ``best``, ``last`` or a file name/path to an existing checkpoint file.

    Args:
        run_dir: run folder holding ``best.pt`` / ``last.pt``.
        which: ``"best"``, ``"last"``, or a path (absolute, relative to the working directory, or relative to
            ``run_dir``).

    Raises:
        InputError: the requested checkpoint does not exist (the message lists the ones that do).
    """
    run_dir = Path(run_dir)
    if which in ("best", "last"):
        candidates = [run_dir / (BEST_NAME if which == "best" else LAST_NAME)]
    else:
        candidates = [Path(which), run_dir / which]
    for c in candidates:
        if c.is_file():
            return c
    present = sorted(p.name for p in run_dir.glob("*.pt")) if run_dir.is_dir() else []
    hint = f"; present: {', '.join(present)}" if present else "; the folder holds no .pt file"
    if which == "best" and present:
        hint += " (best.pt appears after the first validation)"
    raise InputError(f"no {which!r} checkpoint{hint}", candidates[-1] if which not in ("best", "last")
                     else candidates[0])
