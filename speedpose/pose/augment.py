"""Photometric augmentation of spacecraft crops and localiser frames (albumentations), from the ``augment:`` section.

What SPNv2 found to help across the SPEED+ domain gap (SPEEDPLUS.md section 8): brightness/contrast, gamma, Gaussian or
ISO noise, one of motion/median/glass blur, a sun flare centred inside the spacecraft box and coarse dropout
restricted to the box.  Two more, off by default, imitate the camera under the sunlamp (over-exposure and glare,
SPEEDPLUS.md section 1): an exposure change in linear light clipped at white, and a bloom around what is white; they
come first, as in the camera, before the blur and the noise.  A random convolution (RandConv,
``augment.p_randconv``, off by default) randomises the crops' style (texture, edges, contrast sign) without a style
network; it follows the camera effects.  Geometry (in-plane rotation of the virtual camera, box
jitter) is applied when the crop is taken (:mod:`speedpose.pose.crops`), where the label can be updated exactly.  No
flips: a mirror is not a rotation.

Every random choice comes from a per-sample seed, so a sample is the same after a resume.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from speedpose.pose.config import AugmentConfig

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A  # noqa: E402  (after the environment variable)


class Photometric:
    """Photometric augmentation of (H, W) uint8 grayscale crops whose spacecraft box is known (``__call__``), and of
    the localiser's frames (:meth:`frame`).

    Args:
        cfg: the ``augment:`` section.
        box_frac: (x0, y0, x1, y1) of the spacecraft box in the crop, as fractions of the crop side (for the flare
            region and the dropout holes).
    """

    def __init__(self, cfg: AugmentConfig, box_frac: tuple[float, float, float, float]):
        self.cfg = cfg
        self.box_frac = box_frac
        flare = A.RandomSunFlare(flare_roi=box_frac, src_radius=64, angle_range=(0, 1),
                                 num_flare_circles_range=(3, 6), p=cfg.p_flare)
        self.global_ops = A.Compose(_global_ops(cfg, flare))
        self._frame_ops: dict[tuple[int, int], A.Compose] = {}  # per frame size (:meth:`frame`)
        self.dropout = A.Compose([A.CoarseDropout(num_holes_range=tuple(cfg.dropout_holes),
                                                  hole_height_range=tuple(cfg.dropout_size),
                                                  hole_width_range=tuple(cfg.dropout_size), fill=0, p=1.0)])

    def share(self, step: int | None) -> float:
        """The share of samples augmented at optimiser step ``step`` (None: outside training, 1): 0 before
        ``start_step``, then growing linearly to 1 over ``ramp_steps``."""
        if step is None:
            return 1.0
        if step < self.cfg.start_step:
            return 0.0
        return 1.0 if self.cfg.ramp_steps == 0 else min(1.0, (step - self.cfg.start_step + 1) / self.cfg.ramp_steps)

    def __call__(self, crop: np.ndarray, seed: int, step: int | None = None) -> np.ndarray:
        """Augment one crop drawn for optimiser step ``step`` (see :meth:`share`). (H, W) uint8 -> (H, W) uint8;
        deterministic for ``(seed, step)``."""
        if not self.cfg.enabled:
            return crop
        share = self.share(step)
        if share < 1.0 and not np.random.default_rng([seed, 1]).random() < share:
            return crop
        rng = np.random.default_rng(seed)
        # a stream of its own: switching the camera effects on leaves the other draws of a sample unchanged
        crop = self.camera_effects(crop, [seed, 2])
        if self.cfg.p_randconv:  # a stream of its own too
            rc = np.random.default_rng([seed, 6])
            if rc.random() < self.cfg.p_randconv:
                crop = random_convolution(crop, rc, self.cfg.randconv_kernels)
        self.global_ops.set_random_seed(int(rng.integers(2**31)))
        # flare and ISO noise work on colour images: augment in RGB, return to gray like the real images
        rgb = np.repeat(crop[..., None], 3, axis=2)
        out = self.global_ops(image=rgb)["image"]
        out = np.round(out.astype(np.float32).mean(axis=2)).astype(np.uint8)
        if rng.random() < self.cfg.p_dropout:
            h, w = out.shape
            x0, y0, x1, y1 = self.box_frac
            sl = (slice(int(y0 * h), max(int(y1 * h), int(y0 * h) + 2)),
                  slice(int(x0 * w), max(int(x1 * w), int(x0 * w) + 2)))
            self.dropout.set_random_seed(int(rng.integers(2**31)))
            out[sl] = self.dropout(image=np.ascontiguousarray(out[sl]))["image"]
        return out

    def frame(self, img: np.ndarray, seed: int, step: int | None = None) -> np.ndarray:
        """Augment one localiser frame (``augment.localiser``): the exposure change, the bloom, brightness/contrast,
        gamma and a bright light source anywhere in the frame (:func:`frame_ops`), with the crops' probabilities and
        curriculum. (H, W) uint8 -> (H, W) uint8; deterministic for ``(seed, step)``, drawn apart from the crop's
        augmentation of the same seed."""
        if not (self.cfg.enabled and self.cfg.localiser):
            return img
        share = self.share(step)
        if share < 1.0 and not np.random.default_rng([seed, 4]).random() < share:
            return img
        img = self.camera_effects(img, [seed, 5])  # its own stream, as for the crops
        ops = self._frame_ops.get(img.shape)
        if ops is None:
            ops = self._frame_ops[img.shape] = A.Compose(frame_ops(self.cfg, img.shape))
        ops.set_random_seed(int(np.random.default_rng([seed, 3]).integers(2**31)))
        out = ops(image=np.repeat(img[..., None], 3, axis=2))["image"]
        return np.round(out.astype(np.float32).mean(axis=2)).astype(np.uint8)

    def camera_effects(self, img: np.ndarray, seed: list[int]) -> np.ndarray:
        """The exposure change and the bloom (each with its probability, drawn from the stream ``seed``), (H, W)
        uint8 -> (H, W) uint8; no work when both probabilities are 0."""
        c = self.cfg
        if not (c.p_exposure or c.p_bloom):
            return img
        rng = np.random.default_rng(seed)
        expose, glow = rng.random() < c.p_exposure, rng.random() < c.p_bloom
        if not (expose or glow):
            return img
        if expose:
            gain = float(np.exp(rng.uniform(*np.log(c.exposure_gain))))
            img = exposure(img, gain)
        if glow:
            side = max(img.shape)
            img = bloom(img, float(rng.uniform(*c.bloom_strength)), float(rng.uniform(*c.bloom_sigma)) * side)
        return img


def _global_ops(cfg: AugmentConfig, flare) -> list:
    """The albumentations steps on the whole crop, in the camera's order."""
    blur = A.OneOf([A.MotionBlur(blur_limit=(3, 7), p=1.0), A.MedianBlur(blur_limit=(3, 5), p=1.0),
                    A.GlassBlur(sigma=0.5, max_delta=2, iterations=1, p=1.0)], p=cfg.p_blur)
    noise = A.OneOf([A.GaussNoise(std_range=(0.0, cfg.noise_std / 255.0), p=1.0),
                     A.ISONoise(intensity=(0.1, 0.5), p=1.0)], p=cfg.p_noise)
    return [*_tone_ops(cfg), flare, blur, noise]


def _tone_ops(cfg: AugmentConfig) -> list:
    """Brightness/contrast and gamma, each with its probability."""
    return [A.RandomBrightnessContrast(brightness_limit=cfg.brightness, contrast_limit=cfg.contrast,
                                       p=cfg.p_brightness_contrast),
            A.RandomGamma(gamma_limit=tuple(cfg.gamma_range), p=cfg.p_gamma)]


#: radius of the light source that :func:`frame_ops` puts in a localiser frame, as a fraction of the frame's longer
#: side (29 px on the 192x120 frames of standin_cpu; its glow reaches about twice as far there)
FRAME_FLARE_RADIUS = 0.15


def frame_ops(cfg: AugmentConfig, shape: tuple[int, int]) -> list:
    """The albumentations steps on a localiser frame of ``shape`` (H, W): brightness/contrast, gamma and, with
    probability ``p_flare``, a lamp anywhere in the frame (albumentations' physics-based sun flare: a bright source
    with its glow and ghosts, the distractor the sunlamp domain puts beside the spacecraft; the crops' flare is tied
    to the spacecraft box instead).  No blur or noise: the localiser sees frames downscaled about ten times, where
    the crops' kernels (3-7 px) and noise (up to 40 grey levels) would be ten times the camera's."""
    radius = max(2, int(round(FRAME_FLARE_RADIUS * max(shape))))  # albumentations wants > 1
    return [*_tone_ops(cfg),
            A.RandomSunFlare(flare_roi=(0.0, 0.0, 1.0, 1.0), src_radius=radius, angle_range=(0, 1),
                             num_flare_circles_range=(3, 6), method="physics_based", p=cfg.p_flare)]


#: display gamma assumed when the images are taken back to linear light (the SPEED+ JPEGs are display-encoded)
DISPLAY_GAMMA = 2.2
#: grey level [0, 1] above which a pixel glows in :func:`bloom`
BLOOM_THRESHOLD = 0.9


def exposure(img: np.ndarray, gain: float) -> np.ndarray:
    """Scale the light reaching the sensor by ``gain`` and clip at white: (H, W) uint8 -> (H, W) uint8.

    Done in linear light (display gamma :data:`DISPLAY_GAMMA` undone, then re-applied), so the lit faces saturate
    while the shadows stay dark, as on an over-exposed sensor."""
    lin = (img.astype(np.float32) / 255.0) ** DISPLAY_GAMMA * gain
    return np.round(255.0 * np.clip(lin, 0.0, 1.0) ** (1.0 / DISPLAY_GAMMA)).astype(np.uint8)


def bloom(img: np.ndarray, strength: float, sigma_px: float) -> np.ndarray:
    """Glare around the near-white pixels: what exceeds :data:`BLOOM_THRESHOLD` (rescaled to [0, 1]), blurred by a
    Gaussian of ``sigma_px`` [px] and added with weight ``strength`` (fraction of full scale). (H, W) uint8 ->
    (H, W) uint8."""
    x = img.astype(np.float32) / 255.0
    hot = np.clip((x - BLOOM_THRESHOLD) / (1.0 - BLOOM_THRESHOLD), 0.0, 1.0)
    glow = cv2.GaussianBlur(hot, (0, 0), sigmaX=max(sigma_px, 0.5), borderType=cv2.BORDER_CONSTANT)
    return np.round(255.0 * np.clip(x + strength * glow, 0.0, 1.0)).astype(np.uint8)


def random_convolution(img: np.ndarray, rng: np.random.Generator, kernel_sides: tuple[int, ...]) -> np.ndarray:
    """RandConv on a grey image: a k x k filter (k drawn from ``kernel_sides``) of Gaussian weights, its output
    shifted and scaled to the image's mean and standard deviation (so the weights' scale does not matter), then
    mixed with the image as ``a * image + (1 - a) * filtered``, ``a`` ~ U(0, 1), clipped to [0, 255].  On one
    channel a 1x1 filter is the image itself or its negative: with k = 1 the result is the image or a partly
    inverted copy.  (H, W) uint8 -> (H, W) uint8; a constant image is returned unchanged."""
    x = img.astype(np.float32)
    k = int(rng.choice(np.asarray(kernel_sides)))
    w = rng.normal(0.0, 1.0 / k, (k, k)).astype(np.float32)
    y = cv2.filter2D(x, -1, w, borderType=cv2.BORDER_REFLECT)
    spread = float(y.std())
    if spread < 1e-6 or float(x.std()) < 1e-6:
        return img
    y = (y - float(y.mean())) / spread * float(x.std()) + float(x.mean())
    a = float(rng.uniform())
    return np.clip(np.round(a * x + (1.0 - a) * y), 0, 255).astype(np.uint8)


def central_box_frac(margin: float) -> tuple[float, float, float, float]:
    """The spacecraft box in a crop that frames it with ``margin``: the central ``1/margin`` of the side."""
    h = 0.5 / margin
    return (0.5 - h, 0.5 - h, 0.5 + h, 0.5 + h)
