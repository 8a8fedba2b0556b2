"""The task-independent training engine shared by SPEED+ and the benchmark adapters.

Public API::

    Task                                     # protocol a pipeline implements (see speedpose.training.task)
    fit(task, cfg, run_dir, resume=False, progress=None) -> FitSummary
    load_checkpoint(path, model=None, map_location="cpu") -> dict      # weights_only=True
    select_checkpoint(run_dir, which="best") -> Path                   # best | last | FILE
    evaluate(task, model, dataset, batch_size, workers=0, seed=0, device="cpu") -> dict[str, float]
    ResumableBatchSampler, SeededDataset, move_to_device, DeviceLoader, MetricsLog, read_metrics
    build_optimizer, build_scheduler, lr_factor, resolve_precision, setup_distributed, DistContext
"""

from speedpose.training.checkpoint import BEST_NAME, LAST_NAME, load_checkpoint, save_checkpoint, select_checkpoint
from speedpose.training.distributed import DistContext, setup_distributed, teardown_distributed
from speedpose.training.evaluation import DeviceLoader, eval_loader, evaluate, move_to_device, run_validate
from speedpose.training.loop import RESUME_SAFE_KEYS, FitSummary, fit
from speedpose.training.metrics_log import MetricsLog, read_metrics
from speedpose.training.optim import build_optimizer, build_scheduler, lr_factor
from speedpose.training.precision import Precision, resolve_precision
from speedpose.training.sampler import ResumableBatchSampler, SeededDataset
from speedpose.training.seeding import mix_seed, seed_everything
from speedpose.training.task import Task, check_task

__all__ = [
    "BEST_NAME", "LAST_NAME", "RESUME_SAFE_KEYS", "DeviceLoader", "DistContext", "FitSummary", "MetricsLog",
    "Precision", "ResumableBatchSampler", "SeededDataset", "Task", "build_optimizer", "build_scheduler",
    "check_task", "eval_loader", "evaluate", "fit", "run_validate", "load_checkpoint", "lr_factor", "mix_seed", "move_to_device", "read_metrics",
    "resolve_precision", "save_checkpoint", "seed_everything", "select_checkpoint", "setup_distributed",
    "teardown_distributed",
]
