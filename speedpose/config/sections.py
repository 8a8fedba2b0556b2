"""The generic, task-independent config sections and the base experiment schema.

Every section is a pydantic v2 model with ``extra="forbid"``: an unknown key is an error (answered with the
closest valid names by :func:`speedpose.config.load_config`).  Each field's ``description`` is its documentation;
:func:`speedpose.config.describe_config` renders them as a commented YAML file.

A task composes its own sections by subclassing :class:`ExperimentConfig`, and is named in the experiment
table of :mod:`speedpose.config.registry` (or registered at run time with ``register_experiment``)::

    class ToyModelConfig(ConfigModel):
        hidden: int = Field(16, ge=1, description="hidden units")

    class MyExperiment(ExperimentConfig):
        task: Literal["my_task"] = "my_task"
        model: ToyModelConfig = ToyModelConfig()

    register_experiment("my_task", MyExperiment, task_factory=MyTask)
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ConfigModel(BaseModel):
    """Base of every config section: unknown keys forbidden, values re-validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


class OptimConfig(ConfigModel):
    """Optimiser (``optim:`` section)."""

    name: Literal["sgd", "adamw"] = Field("sgd", description="optimiser: sgd | adamw")
    lr: float = Field(1e-3, gt=0, description="base learning rate (before warm-up and schedule)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (sgd only)")
    nesterov: bool = Field(True, description="Nesterov momentum (sgd only; needs momentum > 0)")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty (sgd) or decoupled weight decay (adamw)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam betas (adamw only)")

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> "OptimConfig":
        if self.name == "sgd" and self.nesterov and self.momentum <= 0:
            raise ValueError("nesterov=true needs momentum > 0 (set optim.nesterov=false or a momentum)")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1), got {list(self.betas)}")
        return self


class ScheduleConfig(ConfigModel):
    """Learning-rate schedule (``schedule:`` section), applied per optimiser step."""

    name: Literal["step", "cosine", "constant"] = Field(
        "step", description="step: x gamma every step_size_epochs | cosine: to 0 at the last step | constant")
    step_size_epochs: int = Field(15, ge=1, description="epochs between two decays (step only)")
    gamma: float = Field(0.1, gt=0, le=1, description="decay factor (step only)")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up from lr/warmup_steps to lr over this many steps")
    fit_time_budget: bool = Field(False, description="cosine only: with train.max_train_time_min set, the schedule's "
                                  "progress is the larger of step / last step and training time / budget, so the "
                                  "learning rate reaches 0 when the budget ends on a machine of any speed (the "
                                  "step at which it stops then depends on the machine)")

    @model_validator(mode="after")
    def _time_fit_needs_cosine(self) -> "ScheduleConfig":
        if self.fit_time_budget and self.name != "cosine":
            raise ValueError(f"fit_time_budget=true needs name=cosine (got name={self.name})")
        return self


class TrainConfig(ConfigModel):
    """Training loop (``train:`` section)."""

    epochs: int = Field(40, ge=1, description="number of epochs (passes over the training set)")
    batch_size: int = Field(64, ge=1, description="GLOBAL batch size (split evenly over DDP processes)")
    seed: int = Field(0, ge=0, description="seed of every random choice (data order, augmentation, init)")
    max_time_min: Optional[float] = Field(None, gt=0, description="stop cleanly (with a checkpoint) after this "
                                          "many minutes of wall time; null = no limit (under DDP checked at "
                                          "logging steps; a stop mid-epoch then validates once more: leave a "
                                          "validation's time before a scheduler's hard limit)")
    max_train_time_min: Optional[float] = Field(None, gt=0, description="stop cleanly after this many minutes "
                                                "spent in training steps (data loading included, validation and "
                                                "set-up excluded): equal training budgets for learning curves; "
                                                "null = no limit")
    max_steps: Optional[int] = Field(None, ge=1, description="stop cleanly after this many optimiser steps in "
                                     "total; null = no limit (smoke tests)")
    amp: Literal["auto", "bf16", "fp16", "off"] = Field(
        "auto", description="mixed precision: auto (bf16 on CUDA when supported, else off) | bf16 | fp16 (CUDA "
        "only, with loss scaling) | off")
    channels_last: bool = Field(True, description="convolution weights and activations in channels-last (NHWC) "
                                "memory, for training and inference: the same arithmetic in another order, 1.5x "
                                "faster training steps of the crop network on CPU (oneDNN; tools/bench_pose_pipeline"
                                ".py); false = PyTorch's default NCHW")
    grad_clip: Optional[float] = Field(None, gt=0, description="clip the global gradient L2 norm to this; "
                                       "null = no clipping")
    workers: int = Field(2, ge=0, description="DataLoader worker processes (0 = load in the main process)")
    checkpoint_every_steps: int = Field(500, ge=1, description="write last.pt every this many steps (and at "
                                        "every epoch end)")
    val_every_epochs: int = Field(1, ge=1, description="validate every this many epochs (and after the last)")
    val_every_steps: Optional[int] = Field(None, ge=1, description="also validate every this many optimiser steps "
                                           "within an epoch (learning curves of long epochs); null = at epoch "
                                           "ends only")
    val_every_min: Optional[float] = Field(None, gt=0, description="also validate each time this many more minutes "
                                           "have been spent in training steps (learning curves against time; "
                                           "under DDP checked at logging steps); null = off")
    log_every_steps: int = Field(50, ge=1, description="append the mean training scalars to metrics.csv every "
                                 "this many steps")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto (cuda when available) | cpu | cuda")
    deterministic: bool = Field(False, description="torch deterministic algorithms and no cuDNN benchmark "
                                "(CPU runs are deterministic anyway)")
    dist_timeout_min: float = Field(60.0, gt=0, description="DDP collective timeout in minutes (other ranks "
                                    "wait this long while rank 0 validates)")


class ExperimentConfig(ConfigModel):
    """Top-level schema of an experiment; tasks subclass it, narrowing ``task`` and adding their sections."""

    task: str = Field(..., description="registered experiment name that selects the schema (and the Task)")
    description: str = Field("", description="free text shown in logs")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="optimiser")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="learning-rate schedule")
    train: TrainConfig = Field(default_factory=TrainConfig, description="training loop")
