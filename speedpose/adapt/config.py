"""The adaptation schema (``task: adapt``): settings of ``speedpose adapt`` (refinement, self-training, the
synthetic check).

Shipped as ``configs/adapt.yaml``; ``speedpose adapt ... --config FILE key.sub=value`` overrides any key.  The
inherited sections mean:

* ``train``: ``seed`` and ``device`` of both methods; for self-training, the fine-tuning run of each round
  (``batch_size``, ``workers``, ``max_steps`` = optimiser steps per round, ``checkpoint_every_steps``...;
  ``epochs`` is derived from ``max_steps`` and ignored);
* ``optim`` and ``schedule``: the optimiser of the self-training fine-tuning (refinement has its own in
  ``refine``).
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from speedpose.config import ConfigModel, ExperimentConfig, OptimConfig, ScheduleConfig, TrainConfig

METHODS = ("refine", "self-train")
TARGET_DOMAINS = ("lightbox", "sunlamp")


class RefineConfig(ConfigModel):
    """Test-time refinement of the normalisation layers (``refine:``)."""

    steps: int = Field(100, ge=1, description="optimiser steps (fixed; the synthetic check may stop earlier)")
    batch_size: int = Field(16, ge=2, description="target images per step (BatchNorm uses their statistics: >= 2)")
    lr: float = Field(1e-4, gt=0, description="learning rate of the BatchNorm weights and biases")
    optimizer: Literal["adam", "sgd"] = Field("adam", description="adam | sgd (momentum 0.9)")
    rotation_weight: float = Field(1.0, ge=0, description="weight of the SO(3) entropy (normalised by log N)")
    localisation_weight: float = Field(1.0, ge=0, description="weight of the heatmap entropy (normalised by "
                                       "log of the number of cells); crop models only")
    keypoint_weight: float = Field(1.0, ge=0, description="weight of the keypoint heatmap entropy "
                                   "(visibility-weighted mean over the keypoints, normalised by log of the number "
                                   "of cells); crop networks with the keypoint head only")
    localiser: bool = Field(True, description="also refine the localiser's BatchNorm layers (crop models)")
    encoder: bool = Field(True, description="refine the BatchNorm layers of the pose network's encoder (false: "
                          "the localiser's only, the crop network untouched)")
    confident_quantile: float = Field(0.5, gt=0, le=1, description="an image contributes to the gradient only "
                                      "when its entropy is at or below this quantile of the entropies before "
                                      "refinement (per term; 1 = every image, no threshold)")
    max_entropy: float = Field(1.0, gt=0, le=1, description="and at or below this normalised entropy (EATA's "
                               "fixed threshold; 1 = no cap)")
    calibration_images: int = Field(256, ge=2, description="target images (evenly spaced) whose entropies "
                                    "before refinement set the thresholds")
    stats_momentum: Optional[float] = Field(None, gt=0, le=1, description="BatchNorm running-statistics "
                                            "momentum during refinement; null = the layers' own (0.1)")
    stats_mix: Union[float, list[float]] = Field(0.5, description="share of the target in the deployed "
                                                 "BatchNorm statistics: the refined layers normalise with the "
                                                 "mixture of alpha x the statistics refinement measured on the "
                                                 "target and (1 - alpha) x the source's (mean and variance of the "
                                                 "mixed distribution, as alpha-BN); 1 = the target's alone, 0 = "
                                                 "the source's. A list, e.g. [1, 0.85, 0.7, 0.5]: at each check "
                                                 "the largest share whose synthetic check passes (one check "
                                                 "evaluation per share tried; the kept state's check score is then "
                                                 "the best of several tries, so read the synthetic domain on other "
                                                 "images); without a check, the smallest")

    @field_validator("stats_mix")
    @classmethod
    def _shares(cls, v: float | list[float]) -> float | list[float]:
        values = v if isinstance(v, list) else [v]
        if not values or any(not 0 <= a <= 1 for a in values):
            raise ValueError(f"expected a share in [0, 1] or a non-empty list of them, got {v!r}")
        shares = sorted(set(map(float, values)), reverse=True)  # one spelling per setting (the adapt key hashes it)
        return shares if len(shares) > 1 else shares[0]

    def stats_mixes(self) -> tuple[float, ...]:
        """The shares :attr:`stats_mix` allows, largest first."""
        return tuple(sorted(set(self.stats_mix if isinstance(self.stats_mix, list) else [self.stats_mix]),
                            reverse=True))


class SelfTrainConfig(ConfigModel):
    """Self-training on pseudo-labelled target images (``self_train:``)."""

    rounds: int = Field(4, ge=1, description="label -> fine-tune rounds (labels are made again each round)")
    min_confidence: float = Field(0.2, ge=0, le=1, description="pseudo-label only images whose rotation "
                                  "confidence (mass within 15 deg of the mode) is at least this")
    min_box_iou: float = Field(0.6, ge=0, le=1, description="and whose localiser box overlaps the box of the "
                               "keypoints reprojected with the predicted pose by at least this IoU")
    max_aug_deg: float = Field(20.0, ge=0, le=180, description="and whose rotation, predicted again on "
                               "augmented crops, stays within this angle [deg] on every copy")
    augmentations: int = Field(2, ge=0, description="augmented copies per image (photometric as in training + "
                               "in-plane rotation of the crop); 0 = no agreement check")
    keypoint_gate: bool = Field(True, description="models whose pose_solver uses the keypoint head "
                                "(kp_translation, fused): pseudo-label only images where the predicted keypoints "
                                "agreed with the I2S rotation (the solver's inlier gate passed); no effect with "
                                "the i2s solver")
    max_fraction: float = Field(0.5, gt=0, le=1, description="at most this fraction of the target images is "
                                "pseudo-labelled per round (the most confident ones)")
    min_selected: int = Field(1, ge=1, description="stop (keep the current model) when fewer images pass")
    target_share: float = Field(0.5, gt=0, lt=1, description="fraction of the fine-tuning samples drawn from "
                                "the pseudo-labelled target images (the rest: synthetic/train)")
    synthetic_images: Optional[int] = Field(None, ge=1, description="use at most this many synthetic/train "
                                            "images (a seeded subset); null = all")
    networks: Literal["all", "localiser"] = Field("all", description="what the fine-tuning changes: all = every "
                                                  "network; localiser = the localiser only (crop models only: the "
                                                  "crop network frozen and kept bit-identical, its statistics "
                                                  "included; every sample trains the localiser, data.loc_fraction "
                                                  "= 1)")
    labeller: Literal["model", "refined"] = Field("model", description="who predicts the pseudo-labels of a "
                                                  "round: model = the current model; refined = a copy of it first "
                                                  "refined on the target images (the refine: settings, no synthetic "
                                                  "check; the fine-tuned model itself is not refined)")


class CheckConfig(ConfigModel):
    """The held-out synthetic check (``check:``): a guard against collapse."""

    images: int = Field(256, ge=0, description="labelled synthetic/validation images scored before and after "
                        "(evenly spaced; all of them when the split has fewer); 0 = no check. The score is a mean "
                        "that moves by whole flips: 64 images let through refinements that all 100-200 put at "
                        "+11-19% (README)")
    tolerance: float = Field(0.05, ge=0, description="largest allowed relative increase of their SPEED+ score "
                             "(no thresholds); a worse state is discarded and the previous one kept")
    every_steps: int = Field(25, ge=1, description="refine: check (and save a resumable state) every this many "
                             "steps; self-training checks after every round")


def _default_optim() -> OptimConfig:
    return OptimConfig(name="adamw", lr=1e-4, weight_decay=1e-4)


def _default_schedule() -> ScheduleConfig:
    return ScheduleConfig(name="constant")


def _default_train() -> TrainConfig:
    return TrainConfig(epochs=1, batch_size=16, max_steps=100, workers=0, checkpoint_every_steps=25,
                       log_every_steps=10, device="auto", seed=0)


class AdaptExperiment(ExperimentConfig):
    """Settings of ``speedpose adapt`` (see the module docstring for the inherited sections)."""

    task: Literal["adapt"] = Field("adapt", description="experiment type")
    optim: OptimConfig = Field(default_factory=_default_optim, description="self-training fine-tuning optimiser")
    schedule: ScheduleConfig = Field(default_factory=_default_schedule, description="self-training lr schedule")
    train: TrainConfig = Field(default_factory=_default_train, description="seed, device; self-training rounds "
                               "(max_steps = steps per round)")
    refine: RefineConfig = Field(default_factory=RefineConfig, description="test-time refinement")
    self_train: SelfTrainConfig = Field(default_factory=SelfTrainConfig, description="self-training")
    check: CheckConfig = Field(default_factory=CheckConfig, description="held-out synthetic check")

    @model_validator(mode="after")
    def _consistent(self) -> "AdaptExperiment":
        if not (self.refine.encoder or self.refine.localiser):
            raise ValueError("refine.encoder and refine.localiser are both false: nothing to refine")
        if self.train.max_steps is None:
            raise ValueError("train.max_steps is the number of fine-tuning steps per self-training round: set it")
        return self
