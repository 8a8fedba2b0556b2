"""A resumable, rank-sharded, epoch-seeded batch sampler and the per-sample seeding dataset wrapper.

Together they make data loading a pure function of ``(seed, epoch, index)``: the batch order of an epoch is a
permutation seeded by ``(seed, epoch)``, and each sample's random augmentation is seeded by
``(seed, epoch, index)``.  Therefore a run resumed at step k of an epoch sees exactly the batches and augmented
samples it would have seen, whatever the number of DataLoader workers.
"""

from __future__ import annotations

import random
from typing import Any, Iterator, Sized

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from speedpose.errors import ConfigError
from speedpose.training.seeding import mix_seed, seed_host_rngs

VALIDATION_EPOCH = -1  # epoch used to seed samples fetched by plain integer index (validation)


class ResumableBatchSampler:
    """Yields the batches of one epoch, for one rank, starting at a given step.

    The epoch's order is ``randperm(num_samples)`` drawn from a generator seeded with ``mix_seed(seed, epoch)``;
    global batch ``s`` is ``perm[s*B:(s+1)*B]`` (``B`` = global batch size; an incomplete last batch is dropped)
    and rank ``r`` takes its ``r``-th contiguous slice of ``B / world_size`` indices.  Each yielded item is a list
    of ``(epoch, index, step)`` keys, which :class:`SeededDataset` understands; ``step`` is the global optimiser
    step of the batch (``epoch * steps_per_epoch + s``), for curricula.

    Args:
        num_samples: dataset length.
        global_batch_size: samples per optimiser step over all ranks.
        seed: run seed.
        rank, world_size: this process's shard.
        shuffle: ``False`` keeps the natural order (still sharded and resumable).
    """

    def __init__(self, num_samples: int, global_batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True):
        if global_batch_size % world_size:
            raise ConfigError(f"train.batch_size={global_batch_size} is the global batch: it must be divisible "
                              f"by the number of processes ({world_size})")
        if num_samples < global_batch_size:
            raise ConfigError(f"the training set holds {num_samples} samples, fewer than one batch "
                              f"(train.batch_size={global_batch_size})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, {world_size})")
        self.num_samples = num_samples
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // world_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.epoch = 0
        self.start_step = 0

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps per epoch (complete global batches)."""
        return self.num_samples // self.global_batch_size

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch and the first step (batch) of the next iteration."""
        if not 0 <= start_step <= self.steps_per_epoch:
            raise ValueError(f"start_step {start_step} outside [0, {self.steps_per_epoch}]")
        self.epoch = int(epoch)
        self.start_step = int(start_step)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The sample order of ``epoch``, shape (num_samples,), int64."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        gen = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        return torch.randperm(self.num_samples, generator=gen)

    def __len__(self) -> int:
        return self.steps_per_epoch - self.start_step

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        perm = self.permutation(self.epoch).tolist()
        B, b = self.global_batch_size, self.local_batch_size
        for step in range(self.start_step, self.steps_per_epoch):
            first = step * B + self.rank * b
            global_step = self.epoch * self.steps_per_epoch + step
            yield [(self.epoch, i, global_step) for i in perm[first:first + b]]


class SeededDataset(Dataset):
    """Wraps a map-style dataset so that every sample's randomness is seeded by ``(seed, epoch, index)``.

    ``ds[(epoch, index, step)]`` (what :class:`ResumableBatchSampler` yields), ``ds[(epoch, index)]`` or ``ds[index]``
    (epoch :data:`VALIDATION_EPOCH`) seeds python ``random``, numpy's global RNG and the torch CPU generator, calls the
    inner dataset's optional ``reseed(sample_seed: int)`` hook (for transforms with their own generator, e.g.
    ``albumentations.Compose.set_random_seed``) and, when the key has a step, its optional ``set_step(step: int)``
    hook (curricula: the global optimiser step the sample is drawn for), then returns ``inner[index]``.  The seed
    depends on ``(seed, epoch, index)`` only.  In the main process (no
    DataLoader workers) the RNG states are restored afterwards (once per batch, through ``__getitems__``), so
    that loading never disturbs the training RNGs.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def sample_seed(self, epoch: int, index: int) -> int:
        """The seed of sample ``index`` in ``epoch``."""
        return mix_seed(self.seed, epoch, index)

    @staticmethod
    def _split(key: Any) -> tuple[int, int, int | None]:
        if isinstance(key, (tuple, list)):
            return int(key[0]), int(key[1]), (int(key[2]) if len(key) > 2 else None)
        return VALIDATION_EPOCH, int(key), None

    def _fetch(self, key: Any) -> Any:
        epoch, index, step = self._split(key)
        seed = self.sample_seed(epoch, index)
        seed_host_rngs(seed)
        reseed = getattr(self.dataset, "reseed", None)
        if callable(reseed):
            reseed(seed)
        set_step = getattr(self.dataset, "set_step", None)
        if step is not None and callable(set_step):
            set_step(step)
        return self.dataset[index]

    def __getitem__(self, key: Any) -> Any:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[Any]) -> list[Any]:
        """A whole batch (the DataLoader calls this once per batch): RNGs saved/restored once, seeded per sample."""
        # raw (not checkpoint-friendly) states, saved only in the main process (workers own their RNGs)
        saved = (random.getstate(), np.random.get_state(), torch.get_rng_state()) \
            if get_worker_info() is None else None
        try:
            return [self._fetch(k) for k in keys]
        finally:
            if saved is not None:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.set_rng_state(saved[2])


def dataset_length(dataset: Sized) -> int:
    """``len(dataset)`` with a clear error for datasets without a length (iterable datasets are unsupported)."""
    try:
        return len(dataset)
    except TypeError:
        raise TypeError(f"{type(dataset).__name__} has no len(): the engine needs a map-style dataset") from None
