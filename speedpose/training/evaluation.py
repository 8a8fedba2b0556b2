"""Deterministic evaluation of a model with a task's ``validate`` (used by the engine and by evaluation stages)."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from speedpose.training.sampler import SeededDataset
from speedpose.training.seeding import preserved_rng


def move_to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """``batch`` with every tensor moved to ``device`` (through dicts, lists and tuples, named ones included)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        moved = {k: move_to_device(v, device, non_blocking) for k, v in batch.items()}
        return moved if type(batch) is dict else type(batch)(moved)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(move_to_device(v, device, non_blocking) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device, non_blocking) for v in batch)
    return batch


class DeviceLoader:
    """Iterable over a DataLoader's batches moved to ``device`` (what ``Task.validate`` receives)."""

    def __init__(self, loader: Iterable[Any], device: torch.device, non_blocking: bool = False):
        self.loader = loader
        self.device = device
        self.non_blocking = non_blocking

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            yield move_to_device(batch, self.device, self.non_blocking)


def eval_loader(dataset: Dataset, batch_size: int, workers: int = 0, seed: int = 0,
                collate: Callable[[list], Any] | None = None, pin_memory: bool = False,
                worker_init_fn: Callable[[int], None] | None = None) -> DataLoader:
    """The engine's validation DataLoader: natural order, no sample dropped, samples seeded by ``(seed, -1, i)``."""
    return DataLoader(SeededDataset(dataset, seed), batch_size=batch_size, shuffle=False, drop_last=False,
                      num_workers=workers, collate_fn=collate or default_collate, pin_memory=pin_memory,
                      worker_init_fn=worker_init_fn, generator=torch.Generator().manual_seed(seed))


def run_validate(task: Any, model: nn.Module, loader: Iterable[Any], device: torch.device) -> dict[str, float]:
    """``task.validate(model, batches on device)`` in eval mode, under ``no_grad``, RNG states left untouched.

    The model's train/eval mode is restored afterwards.  Returns the metrics as plain floats.
    """
    was_training = model.training
    model.eval()
    try:
        with preserved_rng(device), torch.no_grad():
            raw = task.validate(model, DeviceLoader(loader, device, non_blocking=device.type == "cuda"))
    finally:
        model.train(was_training)
    return {str(k): float(v) for k, v in raw.items()}


def evaluate(task: Any, model: nn.Module, dataset: Dataset, batch_size: int, workers: int = 0, seed: int = 0,
             device: str | torch.device = "cpu") -> dict[str, float]:
    """Evaluate ``model`` on ``dataset`` exactly as the engine validates (same loader, seeding and mode).

    With the run's ``train.seed`` and ``train.batch_size``, evaluating ``best.pt`` on the validation set reproduces
    the metrics logged when it was saved (to float rounding when ``model`` is not in the run's memory layout,
    ``train.channels_last``: :func:`speedpose.devices.place_model`).
    """
    device = torch.device(device)
    model.to(device)
    loader = eval_loader(dataset, batch_size, workers, seed, getattr(task, "collate", None),
                         pin_memory=device.type == "cuda")
    return run_validate(task, model, loader, device)
