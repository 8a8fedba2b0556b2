"""Experiment schemas of the orientation benchmarks: ``task: modelnet10`` and ``task: pascal3d``.

The shipped recipes are ``configs/modelnet10.yaml`` (I2S on ModelNet10-SO(3): ResNet-50) and
``configs/pascal3d.yaml`` (ResNet-101); both: lmax 6, 40 epochs, SGD Nesterov lr 1e-3 x0.1 every 15 epochs,
batch 64 (SPEEDPLUS.md section 9).  ``speedpose train --dataset modelnet10|pascal3d --root DIR key=value``.
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field

from speedpose.config import ConfigModel, ExperimentConfig
from speedpose.pose.config import I2SConfig


class BenchmarkModelConfig(ConfigModel):
    """The benchmark model (``model:``): ResNet encoder + Image2Sphere head, optionally class-conditioned."""

    encoder: Literal["resnet18", "resnet34", "resnet50", "resnet101"] = Field(
        "resnet50", description="torchvision ResNet (without classifier)")
    pretrained: Union[bool, str] = Field(False, description="ImageNet weights: true = from the torch hub cache "
                                         "(torch.hub.get_dir()/checkpoints), a path = that file, false = random init")
    class_conditioned: bool = Field(True, description="append the one-hot class to the feature map before the "
                                    "projection onto the sphere (as the I2S reference)")
    i2s: I2SConfig = Field(default_factory=I2SConfig, description="Image2Sphere head")


class EvalConfig(ConfigModel):
    """What validation and `speedpose evaluate --dataset` compute (``eval:``)."""

    log_likelihood: bool = Field(False, description="also report the log-likelihood of the true rotation "
                                 "(SYMSOL-style; normaliser on the training grid)")
    batch_size: int = Field(32, ge=1, description="images per forward pass of `speedpose evaluate "
                            "--dataset` (validation during training uses train.batch_size)")


class ModelNet10DataConfig(ConfigModel):
    """ModelNet10-SO(3) data (``data:``)."""

    root: Optional[str] = Field(None, description="folder with modelnet10_{train,limited_train,test}.npz (or "
                                "their modelnet10/ folder); --root overrides it")
    train_split: Literal["train", "limited_train"] = Field("train", description="training file: train (100 "
                                                           "views per object) or limited_train (20 views)")
    val_split: Literal["train", "limited_train", "test"] = Field(
        "test", description="split validated on during training (the benchmark has no validation split)")
    val_limit: Optional[int] = Field(1000, ge=1, description="validate on at most this many images (an evenly "
                                     "spaced subset); null = all")
    image_size: int = Field(224, ge=32, description="side the images are resized to [px] (224 = as stored)")


class Pascal3DDataConfig(ConfigModel):
    """PASCAL3D+ data (``data:``)."""

    root: Optional[str] = Field(None, description="the PASCAL3D+_release1.1 folder; --root overrides it")
    synthetic_root: Optional[str] = Field(None, description="folder holding syn_images_cropped_bkg_overlaid/ "
                                          "(RenderForCNN); null = real images only")
    synthetic_fraction: float = Field(0.8, ge=0, lt=1, description="share of each training epoch drawn from the "
                                      "synthetic images when synthetic_root is set")
    val_split: Literal["train", "test"] = Field("test", description="split validated on during training")
    val_limit: Optional[int] = Field(1000, ge=1, description="validate on at most this many images (evenly "
                                     "spaced); null = all")
    image_size: int = Field(224, ge=32, description="side of the square virtual-camera view of each object [px]")
    margin: float = Field(1.0, ge=1.0, le=3.0, description="the box's half-extent times this fills half the view")
    mirror: bool = Field(True, description="training: mirror half of the images left-right with the mirrored "
                         "viewpoint (azimuth and theta negated), as the reference; assumes left-right symmetric "
                         "classes")
    roll_std_deg: float = Field(7.6, ge=0, le=90, description="training: std of a random roll of the virtual "
                                "camera [deg] (the reference's 'up' jitter, about atan(0.4/3))")
    box_jitter: float = Field(0.1, ge=0, le=0.5, description="training: each box edge moves uniformly by up to "
                              "this fraction of the box side")


class ModelNet10Experiment(ExperimentConfig):
    """I2S on ModelNet10-SO(3)."""

    task: Literal["modelnet10"] = Field("modelnet10", description="experiment type")
    data: ModelNet10DataConfig = Field(default_factory=ModelNet10DataConfig, description="data")
    model: BenchmarkModelConfig = Field(default_factory=BenchmarkModelConfig, description="model")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="evaluation")


class Pascal3DExperiment(ExperimentConfig):
    """I2S on PASCAL3D+."""

    task: Literal["pascal3d"] = Field("pascal3d", description="experiment type")
    data: Pascal3DDataConfig = Field(default_factory=Pascal3DDataConfig, description="data")
    model: BenchmarkModelConfig = Field(
        default_factory=lambda: BenchmarkModelConfig(encoder="resnet101"), description="model")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="evaluation")


BenchmarkExperiment = Union[ModelNet10Experiment, Pascal3DExperiment]
