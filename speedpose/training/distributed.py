"""Process-group set-up for DistributedDataParallel when launched by ``torchrun`` (or by hand with the env).

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; without them
(``WORLD_SIZE`` unset or 1) everything runs in one process.  The backend is NCCL on CUDA and gloo on CPU; the device
follows :func:`speedpose.devices.resolve_device` (one GPU per process: ``cuda:<LOCAL_RANK>``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from speedpose.devices import resolve_device
from speedpose.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands.

    Attributes:
        rank: global rank (0 in a single process).
        world_size: number of processes.
        local_rank: rank on this machine (selects the CUDA device).
        device: the torch device this process trains on.
        owns_group: True when :func:`setup_distributed` created the process group (and must destroy it).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that logs and writes files."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r}: expected an integer") from None


def setup_distributed(device_preference: str = "auto", timeout_min: float = 60.0) -> DistContext:
    """Read the torchrun environment, pick the device and, for several processes, join the process group."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    device = resolve_device(device_preference, option="train.device", local_rank=local_rank)
    if world_size <= 1:
        return DistContext(0, 1, 0, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timedelta(minutes=timeout_min)}
        if device.type == "cuda":
            kwargs["device_id"] = device
        dist.init_process_group(**kwargs)
        owns = True
    if dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise ConfigError(f"process group (rank {dist.get_rank()} of {dist.get_world_size()}) disagrees with the "
                          f"environment (RANK={rank}, WORLD_SIZE={world_size})")
    return DistContext(rank, world_size, local_rank, device, owns)


def teardown_distributed(ctx: DistContext, synchronise: bool = False) -> None:
    """Destroy the process group when :func:`setup_distributed` created it; with ``synchronise`` (a run that ended
    normally on every rank), after a barrier: a rank that destroys its gloo group while its peer is still in a
    collective can abort the peer ("terminate called without an active exception", seen once in CI)."""
    if ctx.owns_group and dist.is_initialized():
        if synchronise:
            barrier(ctx)
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op in a single process)."""
    if ctx.distributed:
        if ctx.device.type == "cuda":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True when ``flag`` is True on at least one rank (a collective: every rank must call it)."""
    if not ctx.distributed:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def max_over_ranks(value: float, ctx: DistContext) -> float:
    """The largest ``value`` over the ranks (a collective: every rank must call it)."""
    if not ctx.distributed:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (picklable objects; a collective)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out
