"""Loading a trained SPEED+ run: its resolved config, its model kind and the model weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from speedpose.config import RESOLVED_NAME, config_hash, load_config
from speedpose.errors import InputError
from speedpose.pose.config import SpeedplusExperiment
from speedpose.pose.kinds import model_kind
from speedpose.pose.kinds.base import ModelKind
from speedpose.pose.model import PoseModel
from speedpose.training import load_checkpoint, select_checkpoint


@dataclass
class LoadedRun:
    """A run folder opened for inference.

    Attributes:
        run_dir: the folder.
        cfg: the resolved config saved with the run.
        kind: its model kind, with the settings inference needs (:func:`speedpose.pose.inference.predict_split`).
        model: the pose model in eval mode on CPU with the checkpoint's weights.
        checkpoint: the checkpoint file used.
        step: its global step (None when unknown).
        config_hash: hash of the resolved config.
    """

    run_dir: Path
    cfg: SpeedplusExperiment
    kind: ModelKind
    model: PoseModel
    checkpoint: Path
    step: int | None
    config_hash: str


def load_run(run_dir: str | Path, checkpoint: str = "best") -> LoadedRun:
    """Open ``run_dir`` (``config.yaml`` + ``best.pt``/``last.pt``/a file); ``best`` falls back to ``last`` when no
    validation has run yet."""
    run_dir = Path(run_dir)
    cfg_file = run_dir / RESOLVED_NAME
    if not cfg_file.is_file():
        raise InputError(f"not a run folder (expected {RESOLVED_NAME} written by `speedpose train`)", run_dir)
    cfg = load_config(cfg_file)
    if not isinstance(cfg, SpeedplusExperiment):
        raise InputError(f"run of task {cfg.task!r}, not a SPEED+ pose run", cfg_file)
    if checkpoint == "best" and not (run_dir / "best.pt").is_file() and (run_dir / "last.pt").is_file():
        checkpoint = "last"
    path = select_checkpoint(run_dir, checkpoint)
    kind = model_kind(cfg.model_copy(update={"model": cfg.model.model_copy(update={"pretrained": False})}))
    model = kind.build_model()
    ckpt = load_checkpoint(path, model)
    model.eval()
    step = ckpt.get("global_step")
    return LoadedRun(run_dir, cfg, kind, model, path, int(step) if step is not None else None, config_hash(cfg))
