"""The training engine: :func:`fit` runs any :class:`~speedpose.training.task.Task` with the generic config.

One optimiser step per batch, exactly one ``training_step`` (one forward pass) per step.  Deterministic given
``train.seed`` on CPU, resumable at the exact batch (bit-identical weights on CPU), DDP under ``torchrun``.
Files written by rank 0 into ``run_dir``: ``config.yaml`` (resolved config), ``metrics.csv``, ``last.pt``,
``best.pt`` and ``summary.json``.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from pydantic import ValidationError
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, default_collate
from tqdm.auto import tqdm

from speedpose.config.loading import config_hash, config_to_dict, diff_configs, save_resolved
from speedpose.config.sections import ExperimentConfig
from speedpose.devices import place_model
from speedpose.errors import ConfigError, InputError
from speedpose.io_utils import atomic_write_json
from speedpose.training.checkpoint import (
    BEST_NAME,
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    LAST_NAME,
    load_checkpoint,
    save_checkpoint,
)
from speedpose.training.distributed import (
    DistContext,
    any_rank,
    barrier,
    gather_objects,
    max_over_ranks,
    setup_distributed,
    teardown_distributed,
)
from speedpose.training.evaluation import eval_loader, move_to_device, run_validate
from speedpose.training.metrics_log import MetricsLog
from speedpose.training.optim import build_optimizer, build_scheduler
from speedpose.training.precision import resolve_precision
from speedpose.training.sampler import ResumableBatchSampler, SeededDataset, dataset_length
from speedpose.training.seeding import (
    capture_rng,
    mix_seed,
    restore_rng,
    seed_everything,
    seed_host_rngs,
)
from speedpose.training.task import check_task

SUMMARY_NAME = "summary.json"
# keys that may change between an interrupted run and its resumption (they do not change the trajectory beyond float
# rounding (train.channels_last: the same arithmetic in another memory order), or, for train.epochs, extend it on
# purpose)
RESUME_SAFE_KEYS = ("description", "train.epochs", "train.max_time_min", "train.max_train_time_min",
                    "train.max_steps", "train.workers",
                    "train.log_every_steps", "train.checkpoint_every_steps", "train.val_every_epochs",
                    "train.val_every_steps", "train.val_every_min",
                    "train.device", "train.dist_timeout_min", "train.channels_last")


@dataclass
class FitSummary:
    """What :func:`fit` did.

    Attributes:
        run_dir: the run folder.
        stopped: ``completed`` | ``max_steps`` | ``max_time`` | ``signal`` (SIGTERM).
        global_step: optimiser steps done in total.
        epochs_completed: whole epochs done.
        best_metric, best_mode, best_value, best_step: the validation criterion and its best value so far.
        last_val: metrics of the latest validation (None when none ran).
        resumed_from_step: global step of the checkpoint the run resumed from (None for a fresh start).
        wall_s: seconds spent in this call.
        config_hash: :func:`speedpose.config.config_hash` of the resolved config.
    """

    run_dir: str
    stopped: str
    global_step: int
    epochs_completed: int
    best_metric: str
    best_mode: str
    best_value: float | None
    best_step: int | None
    last_val: dict[str, float] | None
    resumed_from_step: int | None
    wall_s: float
    config_hash: str
    world_size: int = 1
    precision: str = "off"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _worker_init(worker_id: int) -> None:
    # SeededDataset reseeds per sample; this only covers code that draws randomness outside __getitem__
    seed_host_rngs(torch.initial_seed() & 0xFFFFFFFF)


def _with_current_defaults(schema: Any, cfg_ckpt: dict) -> dict:
    """A checkpoint's config read through today's schema: keys added since it was written take their defaults (a
    key that the schema no longer knows leaves it as it was, and the comparison names it)."""
    try:
        return config_to_dict(schema.model_validate(cfg_ckpt))
    except ValidationError:
        return cfg_ckpt


def _ckpt_compatible(cfg_now: dict, cfg_ckpt: dict, path: Path) -> None:
    if config_hash(cfg_now, RESUME_SAFE_KEYS) != config_hash(cfg_ckpt, RESUME_SAFE_KEYS):
        changed = [k for k in diff_configs(cfg_ckpt, cfg_now) if k not in RESUME_SAFE_KEYS]
        raise ConfigError(f"{path}: the checkpoint was written with a different config ({', '.join(changed)}); "
                          f"resume with the same config or start a new run folder")


class _Trainer:
    def __init__(self, task: Any, cfg: ExperimentConfig, run_dir: Path, ctx: DistContext, progress: bool | None):
        self.task, self.cfg, self.run_dir, self.ctx = task, cfg, run_dir, ctx
        self.tcfg = tcfg = cfg.train
        self.progress = progress
        self.device = ctx.device
        self.cuda = self.device.type == "cuda"
        self.precision = resolve_precision(tcfg.amp, self.device)
        self.best_metric = str(getattr(task, "best_metric", "loss"))
        self.best_mode = str(getattr(task, "best_mode", "min"))
        self.cfg_dict = config_to_dict(cfg)
        self.cfg_hash = config_hash(self.cfg_dict)

        seed_everything(tcfg.seed)
        self.model: nn.Module = place_model(task.build_model(), self.device, tcfg.channels_last)
        train_ds = task.train_dataset()
        self.sampler = ResumableBatchSampler(dataset_length(train_ds), tcfg.batch_size, tcfg.seed, ctx.rank,
                                             ctx.world_size)
        collate = getattr(task, "collate", None) or default_collate
        common = dict(num_workers=tcfg.workers, collate_fn=collate, pin_memory=self.cuda,
                      worker_init_fn=_worker_init if tcfg.workers > 0 else None)
        self.loader = DataLoader(SeededDataset(train_ds, tcfg.seed), batch_sampler=self.sampler,
                                 generator=torch.Generator().manual_seed(tcfg.seed),
                                 persistent_workers=tcfg.workers > 0, **common)
        self.val_loader = None
        if ctx.is_main:
            val_ds = task.val_dataset()
            if val_ds is not None:
                self.val_loader = eval_loader(val_ds, tcfg.batch_size, tcfg.workers, tcfg.seed, collate,
                                              pin_memory=self.cuda, worker_init_fn=common["worker_init_fn"])
        groups_fn = getattr(task, "param_groups", None)
        params = groups_fn(self.model) if callable(groups_fn) else self.model.parameters()
        self.optimizer = build_optimizer(params, cfg.optim)
        self.steps_per_epoch = self.sampler.steps_per_epoch
        # schedule.fit_time_budget: the cosine also follows the fraction of train.max_train_time_min spent
        self._time_fraction = 0.0
        self._time_budget_s = (60.0 * tcfg.max_train_time_min
                               if cfg.schedule.fit_time_budget and tcfg.max_train_time_min is not None else None)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, self.steps_per_epoch,
                                         self.steps_per_epoch * tcfg.epochs, lambda: self._time_fraction)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.scaler)

        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.last_val: dict[str, float] | None = None
        self.resumed_from: int | None = None
        self.train_time_s = 0.0  # wall time in training steps (data loading included, validation excluded)
        self._last_val_time_s = 0.0
        self.rng_to_restore: dict | None = None
        self._acc: dict[str, torch.Tensor] = {}
        self._acc_n = 0
        self._acc_t0 = time.perf_counter()
        self._data_wait = 0.0
        self._signal = False

    def on_sigterm(self, signum: int, frame: Any) -> None:
        """Signal handler: stop at the next step boundary (with a checkpoint)."""
        self._signal = True

    # ---------------------------------------------------------------------------------------------- messages
    def say(self, text: str) -> None:
        if self.ctx.is_main and self.progress is not False:
            tqdm.write(text)

    # ------------------------------------------------------------------------------------------ checkpoints
    def _state(self, rng: list[dict]) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": rng, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
            "best": {"metric": self.best_metric, "mode": self.best_mode, "value": self.best_value,
                     "step": self.best_step},
            "val_metrics": self.last_val, "train_time_s": self.train_time_s,
            "config": self.cfg_dict, "config_hash": self.cfg_hash,
            "world_size": self.ctx.world_size, "torch_version": str(torch.__version__),
        }

    def checkpoint(self, names: list[str]) -> None:
        """Collective: gather every rank's RNG state; rank 0 writes ``names`` atomically."""
        rng = gather_objects(capture_rng(self.device), self.ctx)
        if self.ctx.is_main:
            state = self._state(rng)
            for name in names:
                save_checkpoint(self.run_dir / name, state)

    def restore(self, path: Path) -> None:
        ckpt = load_checkpoint(path, map_location="cpu")
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise InputError("not a training checkpoint of the speedpose engine (cannot resume from it)", path)
        _ckpt_compatible(self.cfg_dict, _with_current_defaults(type(self.cfg), ckpt["config"]), path)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        _match_state_layout(self.optimizer)
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler") is not None and self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.step_in_epoch = int(ckpt["epoch"]), int(ckpt["step_in_epoch"])
        self.global_step = int(ckpt["global_step"])
        best = ckpt.get("best") or {}
        if best.get("metric") == self.best_metric and best.get("mode") == self.best_mode:
            self.best_value, self.best_step = best.get("value"), best.get("step")
        self.last_val = ckpt.get("val_metrics")
        self.train_time_s = self._last_val_time_s = float(ckpt.get("train_time_s") or 0.0)
        if self._time_budget_s is not None:
            self._time_fraction = max_over_ranks(self.train_time_s / self._time_budget_s, self.ctx)
        self.resumed_from = self.global_step
        rng = ckpt.get("rng") or []
        if len(rng) == self.ctx.world_size:
            self.rng_to_restore = rng[self.ctx.rank]
        else:
            self.say(f"warning: checkpoint written by {len(rng)} process(es), now {self.ctx.world_size}: "
                     f"the data order is kept but random streams restart from the seed")

    # -------------------------------------------------------------------------------------------- logging
    def _accumulate(self, out: Mapping[str, torch.Tensor], lr: float, grad_norm: torch.Tensor | None) -> None:
        for k, v in out.items():
            v = v.detach().float() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
            if v.numel() != 1:
                continue
            self._acc[k] = self._acc[k] + v.reshape(()) if k in self._acc else v.reshape(())
        if grad_norm is not None:
            g = grad_norm.detach().float().reshape(())
            self._acc["grad_norm"] = self._acc["grad_norm"] + g if "grad_norm" in self._acc else g
        self._acc_n += 1
        self._lr = lr

    def _flush(self, log: MetricsLog, epoch: int, bar: Any) -> None:
        if self._acc_n == 0:
            return
        values = {k: float(v.item()) / self._acc_n for k, v in self._acc.items()}
        if not math.isfinite(values.get("loss", 0.0)):
            raise FloatingPointError(f"non-finite training loss ({values['loss']}) around step {self.global_step};"
                                     f" lower optim.lr, set train.grad_clip or check the data")
        dt = max(time.perf_counter() - self._acc_t0, 1e-9)
        values["lr"] = self._lr
        values["samples_per_s"] = self._acc_n * self.tcfg.batch_size / dt
        values["data_wait_frac"] = min(self._data_wait / dt, 1.0)
        log.log(self.global_step, epoch, "train", values)
        if bar is not None:
            bar.set_postfix(loss=f"{values['loss']:.4g}", lr=f"{self._lr:.3g}", refresh=False)
        self._acc, self._acc_n, self._data_wait = {}, 0, 0.0
        self._acc_t0 = time.perf_counter()

    # -------------------------------------------------------------------------------------------- steps
    def _stop_reason(self, t0: float) -> str | None:
        reason = None
        if self.tcfg.max_steps is not None and self.global_step >= self.tcfg.max_steps:
            reason = "max_steps"
        if self.ctx.distributed and self.global_step % self.tcfg.log_every_steps:
            # under DDP the time/signal check is a collective (a device sync): only at logging steps
            return reason
        if self._time_budget_s is not None:  # every rank the same fraction, so the same learning rate
            self._time_fraction = max_over_ranks(self.train_time_s / self._time_budget_s, self.ctx)
        over_time = (self.tcfg.max_time_min is not None and time.monotonic() - t0 > 60.0 * self.tcfg.max_time_min) \
            or (self.tcfg.max_train_time_min is not None and self.train_time_s > 60.0 * self.tcfg.max_train_time_min)
        # every rank stops at the same step and for the same reason (a signal wins): the reason decides whether
        # the ranks then validate together (_final_validation)
        code = int(max_over_ranks(2 if self._signal else 1 if over_time else 0, self.ctx))
        if code:
            reason = reason or ("signal" if code == 2 else "max_time")
        return reason

    def _train_step(self, model: nn.Module, batch: Any) -> None:
        batch = move_to_device(batch, self.device, non_blocking=self.cuda)
        with self.precision.autocast():
            out = self.task.training_step(model, batch)
        if not isinstance(out, Mapping) or "loss" not in out:
            raise TypeError(f"{type(self.task).__name__}.training_step must return a dict with a 'loss' tensor")
        loss = out["loss"]
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise TypeError(f"training_step()['loss'] must be a scalar tensor, got {type(loss).__name__}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss.reshape(())).backward()
        grad_norm = None
        if self.tcfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tcfg.grad_clip)
        lr = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.global_step += 1
        self.step_in_epoch += 1
        self._accumulate(out, lr, grad_norm)

    def _validate(self) -> dict[str, float] | None:
        metrics = None
        if self.ctx.is_main and self.val_loader is not None:
            metrics = run_validate(self.task, self.model, self.val_loader, self.device)
            if self.best_metric not in metrics:
                raise KeyError(f"{type(self.task).__name__}.validate returned {sorted(metrics)}, without its "
                               f"best_metric {self.best_metric!r}")
        barrier(self.ctx)
        return metrics

    def _validate_and_log(self, log: MetricsLog, epoch: int, where: str) -> list[str]:
        """Validate (rank 0), log, track the best; returns the checkpoint names to write (collectively)."""
        names = [LAST_NAME]
        metrics = self._validate()
        if metrics is not None:
            self.last_val = metrics
            value = metrics[self.best_metric]
            better = self._is_better(value)
            if better:
                self.best_value, self.best_step = value, self.global_step
                names.append(BEST_NAME)
            log.log(self.global_step, epoch, "val", {**metrics, "train_time_s": self.train_time_s,
                                                     "samples_seen": self.global_step * self.tcfg.batch_size})
            shown = " ".join(f"{k}={v:.5g}" for k, v in metrics.items())
            self.say(f"{where} step {self.global_step}: val {shown}{' (best)' if better else ''}")
        self._last_val_time_s = self.train_time_s
        return names

    def _final_validation(self, log: MetricsLog, epoch: int, stopped: str) -> list[str]:
        """A run stopped mid-epoch by its budget (``max_steps``, ``max_time``) validates the model it stops with:
        with a schedule fitted to that budget it is the annealed model, and ``best.pt`` must be able to be it.
        Validation leaves the random streams as they were (:func:`run_validate`), so a resume continues exactly as
        without it.  A signal stops without one (the job is being killed).  Returns the checkpoint names."""
        if stopped not in ("max_steps", "max_time"):
            return [LAST_NAME]
        return self._validate_and_log(log, epoch, f"stopped ({stopped}), epoch {epoch + 1}/{self.tcfg.epochs}")

    def _mid_epoch_validation_due(self) -> bool:
        """``train.val_every_steps`` / ``train.val_every_min`` (the latter agreed between ranks at logging steps)."""
        tcfg = self.tcfg
        if tcfg.val_every_steps and self.global_step % tcfg.val_every_steps == 0:
            return True
        if not tcfg.val_every_min:
            return False
        if self.ctx.distributed and self.global_step % tcfg.log_every_steps:
            return False
        interval = 60.0 * tcfg.val_every_min
        return any_rank(math.floor(self.train_time_s / interval) > math.floor(self._last_val_time_s / interval),
                        self.ctx)

    def _is_better(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best_value is None:
            return True
        return value < self.best_value if self.best_mode == "min" else value > self.best_value

    # ---------------------------------------------------------------------------------------------- run
    def run(self, resume: bool, t0: float) -> FitSummary:
        ctx, tcfg = self.ctx, self.tcfg
        last_path = self.run_dir / LAST_NAME
        if last_path.exists():
            if not resume:
                raise InputError("the run folder already holds a checkpoint: resume it (resume=True / --resume)"
                                 " or choose a new run folder", last_path)
            self.restore(last_path)
        else:
            if (self.run_dir / BEST_NAME).exists():
                raise InputError("best.pt without last.pt: the folder holds another run's files; choose a new "
                                 "run folder", self.run_dir / BEST_NAME)
            if resume:
                self.say(f"no {last_path} yet: starting from scratch")
        log = MetricsLog(self.run_dir, enabled=ctx.is_main)
        if ctx.is_main:
            for name in (LAST_NAME, BEST_NAME):  # temporary files of a writer killed mid-save
                for stray in self.run_dir.glob(f".{name}.*.tmp"):
                    stray.unlink(missing_ok=True)
            save_resolved(self.cfg, self.run_dir)
            log.truncate_after(self.global_step)
        run_model: nn.Module = self.model
        if ctx.distributed:
            run_model = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.cuda else None)
        if self.rng_to_restore is not None:
            restore_rng(self.rng_to_restore, self.device)
        else:  # fresh start (or a resume with another world size): per-rank streams for dropout etc.
            seed_everything(mix_seed(tcfg.seed, -2, ctx.rank, self.global_step))
        if self.resumed_from is not None:
            self.say(f"resumed {self.run_dir} at epoch {self.epoch + 1}, step {self.global_step}")

        stopped = None
        bars = ctx.is_main and self.progress is not False
        try:
            while self.epoch < tcfg.epochs and stopped is None:
                epoch = self.epoch
                self.sampler.set_epoch(epoch, self.step_in_epoch)
                run_model.train()
                bar = tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch, leave=False,
                           desc=f"epoch {epoch + 1}/{tcfg.epochs}", disable=None if bars else True,
                           dynamic_ncols=True)
                self._acc, self._acc_n, self._acc_t0, self._data_wait = {}, 0, time.perf_counter(), 0.0
                it = iter(self.loader)
                while True:
                    t_wait = time.perf_counter()
                    try:
                        batch = next(it)
                    except StopIteration:
                        self.train_time_s += time.perf_counter() - t_wait
                        break
                    self._data_wait += time.perf_counter() - t_wait
                    self._train_step(run_model, batch)
                    self.train_time_s += time.perf_counter() - t_wait
                    bar.update(1)
                    if self.global_step % tcfg.log_every_steps == 0:
                        self._flush(log, epoch, bar)
                    stopped = self._stop_reason(t0)
                    if stopped is not None:
                        break
                    mid_epoch = self.step_in_epoch < self.steps_per_epoch
                    if mid_epoch and self._mid_epoch_validation_due():
                        self.checkpoint(self._validate_and_log(log, epoch, f"epoch {epoch + 1}/{tcfg.epochs}"))
                        run_model.train()
                        self._acc_t0 = time.perf_counter()  # the throughput of the next log excludes validation
                    elif self.global_step % tcfg.checkpoint_every_steps == 0 and mid_epoch:
                        self.checkpoint([LAST_NAME])
                bar.close()
                self._flush(log, epoch, None)
                if stopped is not None and self.step_in_epoch < self.steps_per_epoch:
                    self.checkpoint(self._final_validation(log, epoch, stopped))
                    break
                names = [LAST_NAME]
                if (epoch + 1) % tcfg.val_every_epochs == 0 or epoch + 1 == tcfg.epochs:
                    names = self._validate_and_log(log, epoch, f"epoch {epoch + 1}/{tcfg.epochs}")
                self.epoch, self.step_in_epoch = epoch + 1, 0
                self.checkpoint(names)
        finally:
            log.close()
            shutdown_workers(self.loader)
        summary = FitSummary(
            run_dir=str(self.run_dir), stopped=stopped or "completed", global_step=self.global_step,
            epochs_completed=self.epoch, best_metric=self.best_metric, best_mode=self.best_mode,
            best_value=self.best_value, best_step=self.best_step, last_val=self.last_val,
            resumed_from_step=self.resumed_from, wall_s=time.monotonic() - t0, config_hash=self.cfg_hash,
            world_size=ctx.world_size, precision=self.precision.name)
        if ctx.is_main:
            atomic_write_json(self.run_dir / SUMMARY_NAME, summary.to_dict())
            if summary.stopped != "completed":
                self.say(f"stopped ({summary.stopped}) at step {self.global_step}; resume to continue")
        return summary


def _match_state_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give the optimiser's per-parameter tensors (moments) their parameter's memory layout: a checkpoint written in
    another ``train.channels_last`` setting loads its moments in the old layout (correct, but every step would then
    mix layouts)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    optimizer.state[p][key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def shutdown_workers(loader: DataLoader) -> None:
    """Stop the worker processes of a ``persistent_workers`` loader now.

    Left to the garbage collector, the loader (held in reference cycles) is finalised at some later, arbitrary
    moment, and a shutdown from inside a collection waits out the join timeout (5 s per worker): another
    component of the process (a test, a notebook cell) stalls 10 s for nothing.  PyTorch has no public call for
    this; ``_iterator`` is the loader's own handle on its persistent iterator (the same one Lightning resets).
    """
    it = getattr(loader, "_iterator", None)
    if it is not None and hasattr(it, "_shutdown_workers"):
        it._shutdown_workers()
        loader._iterator = None


def fit(task: Any, cfg: ExperimentConfig, run_dir: str | Path, resume: bool = False,
        progress: bool | None = None) -> FitSummary:
    """Train ``task`` as configured by ``cfg`` (its ``optim``, ``schedule`` and ``train`` sections).

    Args:
        task: implements :class:`speedpose.training.Task`.
        cfg: the resolved experiment config (any :class:`ExperimentConfig` subclass).
        run_dir: run folder (created); rank 0 writes config.yaml, metrics.csv, last.pt, best.pt, summary.json.
        resume: continue from ``run_dir/last.pt`` (exactly where it stopped); a fresh start when absent.
            Without ``resume`` an existing ``last.pt`` is an error (nothing is overwritten by accident).
        progress: tqdm bars and messages on rank 0 (None: bars only on a terminal, messages on; False: silent).

    Returns:
        A :class:`FitSummary` (also written to ``run_dir/summary.json``).

    Launch under ``torchrun --nproc_per_node N`` for DistributedDataParallel: ``train.batch_size`` stays the
    global batch; rank 0 validates, logs and checkpoints.  SIGTERM and max_time stop at the next step boundary
    (under DDP: the next logging step, where ranks agree) with a checkpoint.
    """
    t0 = time.monotonic()
    check_task(task)
    tcfg = cfg.train
    run_dir = Path(run_dir)
    ctx = setup_distributed(tcfg.device, tcfg.dist_timeout_min)
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    old_handler: Any = None
    installed = False
    trainer: _Trainer | None = None
    finished = False
    try:
        if tcfg.deterministic:
            if ctx.device.type == "cuda":
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        run_dir.mkdir(parents=True, exist_ok=True)
        trainer = _Trainer(task, cfg, run_dir, ctx, progress)
        if threading.current_thread() is threading.main_thread():
            old_handler = signal.signal(signal.SIGTERM, trainer.on_sigterm)
            installed = True
        with warnings.catch_warnings():  # once per run: changing the filters resets every warning registry
            if trainer.scaler.is_enabled():
                # fp16: a step the loss scaler skips (inf gradients, typically the first ones while it finds its
                # scale) still advances the schedule, which follows the global step (resume, time-fitted cosine);
                # PyTorch warns about exactly that
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            summary = trainer.run(resume, t0)
        finished = True
        return summary
    finally:
        if installed:
            signal.signal(signal.SIGTERM, old_handler if old_handler is not None else signal.SIG_DFL)
        torch.use_deterministic_algorithms(prev_det)
        torch.backends.cudnn.benchmark = prev_bench
        del trainer  # shuts persistent DataLoader workers down before the process group goes
        teardown_distributed(ctx, synchronise=finished)  # no barrier after an error: the peers may never reach it
