"""`speedpose augment`: preview grid and materialised copies; photometric augmentation is seeded."""

import json

import cv2
import numpy as np
import pytest

from speedpose.cli import main
from speedpose.pose.augment import Photometric, bloom, central_box_frac, exposure
from speedpose.pose.config import AugmentConfig


def test_photometric_is_deterministic_per_seed_and_changes_pixels():
    crop = np.full((64, 64), 90, np.uint8)
    crop[20:44, 20:44] = 200
    aug = Photometric(AugmentConfig(p_brightness_contrast=1, p_noise=1, p_dropout=1), central_box_frac(1.3))
    a, b, c = aug(crop, 1), aug(crop, 1), aug(crop, 2)
    assert a.shape == crop.shape and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.array_equal(a, crop)
    off = Photometric(AugmentConfig(enabled=False), central_box_frac(1.3))
    assert np.array_equal(off(crop, 1), crop)


def test_dropout_stays_inside_the_box():
    crop = np.full((100, 100), 255, np.uint8)
    cfg = AugmentConfig(p_brightness_contrast=0, p_gamma=0, p_noise=0, p_blur=0, p_flare=0, p_dropout=1)
    aug = Photometric(cfg, (0.3, 0.3, 0.7, 0.7))
    for seed in range(10):
        out = aug(crop, seed)
        holes = out < 255
        assert holes.any()
        ys, xs = np.nonzero(holes)
        assert ys.min() >= 30 and ys.max() < 70 and xs.min() >= 30 and xs.max() < 70


def test_cli_preview_and_materialise(tiny_prepared, tmp_path):
    root, prep = tiny_prepared
    png = tmp_path / "preview.png"
    over = [f"data.prep_dir={prep}", "data.crop_size=64"]
    assert main(["augment", "--root", str(root), "--preview", str(png), "--n", "4", *over]) == 0
    img = cv2.imread(str(png))
    assert img.shape == (2 * 256, 2 * 256, 3)
    out = tmp_path / "mat"
    assert main(["augment", "--root", str(root), "--materialise", str(out), *over]) == 0
    labels = json.loads((out / "labels.json").read_text())
    assert len(labels) == 8 and all((out / "images" / lab["filename"]).is_file() for lab in labels)
    kp = np.array([lab["kp_crop"] for lab in labels])
    assert (kp > -0.5).all() and (kp < 63.5).all()
    assert main(["augment", "--root", str(root), *over]) == 2  # nothing asked


def test_augmentation_curriculum_share():
    """augment.start_step / ramp_steps: no photometric change before start_step, then a growing share of augmented
    samples; a sample drawn outside training (no step) or after the ramp is augmented as without a curriculum."""
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 255, (64, 64), dtype=np.uint8)
    cfg = AugmentConfig(p_brightness_contrast=1, p_noise=1, start_step=10, ramp_steps=10)
    aug, plain = Photometric(cfg, central_box_frac(1.3)), Photometric(AugmentConfig(p_brightness_contrast=1,
                                                                                    p_noise=1), central_box_frac(1.3))
    assert [aug.share(s) for s in (None, 0, 9, 10, 14, 19, 100)] == [1.0, 0.0, 0.0, 0.1, 0.5, 1.0, 1.0]
    assert all(np.array_equal(aug(crop, seed, 9), crop) for seed in range(20))
    changed = [not np.array_equal(aug(crop, seed, 14), crop) for seed in range(200)]
    assert 0.4 < np.mean(changed) < 0.6
    assert all(np.array_equal(aug(crop, seed, 30), plain(crop, seed)) for seed in range(5))
    assert np.array_equal(aug(crop, 3), plain(crop, 3))


def test_exposure_saturates_the_lit_part_and_keeps_black_in_linear_light():
    img = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.abs(exposure(img, 1.0).astype(int) - img).max() <= 1  # gain 1: unchanged up to rounding
    bright = exposure(img, 4.0)
    # linear light x4 saturates what was above 255 * (1/4)^(1/2.2) = 136 grey levels; black stays black
    assert (bright[img.reshape(16, 16) >= 137] == 255).all() and (bright[img < 130] < 255).all()
    assert bright.flat[0] == 0 and (np.diff(bright.ravel().astype(int)) >= 0).all()
    # not a plain brightness gain: 64 x 4^(1/2.2) = 120 (a display-space x4 would give 255)
    assert abs(int(bright.flat[64]) - round(64 * 4 ** (1 / 2.2))) <= 1
    dark = exposure(img, 0.5)
    assert abs(int(dark.flat[255]) - round(255 * 0.5 ** (1 / 2.2))) <= 1


def test_bloom_glows_around_white_only():
    img = np.full((64, 64), 40, np.uint8)
    img[28:36, 28:36] = 255
    out = bloom(img, strength=0.8, sigma_px=4.0)
    assert out[32, 40] > img[32, 40] and out[32, 44] > 40 and out[32, 40] > out[32, 44] > out[32, 60] >= 40
    assert out[0, 0] == 40  # far from the white patch: unchanged
    grey = np.full((64, 64), 200, np.uint8)  # 0.78 of full scale: below the threshold, no glow
    assert np.array_equal(bloom(grey, 1.0, 4.0), grey)


def test_camera_effects_are_off_by_default_and_leave_the_other_draws_alone():
    rng = np.random.default_rng(1)
    crop = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    base = dict(p_brightness_contrast=1, p_noise=1, p_dropout=1)
    plain = Photometric(AugmentConfig(**base), central_box_frac(1.3))
    # a gain of exactly 1: the exposure step is drawn and applied, and nothing else about the sample changes
    unit = Photometric(AugmentConfig(**base, p_exposure=1, exposure_gain=(1.0, 1.0)), central_box_frac(1.3))
    for seed in range(5):
        assert np.abs(unit(crop, seed).astype(int) - plain(crop, seed)).max() <= 2
    strong = Photometric(AugmentConfig(p_brightness_contrast=0, p_gamma=0, p_noise=0, p_blur=0, p_flare=0,
                                       p_dropout=0, p_exposure=1, exposure_gain=(4.0, 4.0)), central_box_frac(1.3))
    assert np.array_equal(strong(crop, 0), exposure(crop, 4.0))


@pytest.mark.parametrize("key", ["exposure_gain", "bloom_strength", "bloom_sigma"])
def test_camera_effect_ranges_are_checked(key):
    with pytest.raises(ValueError, match="0 < low <= high"):
        AugmentConfig(**{key: (2.0, 1.0)})
    with pytest.raises(ValueError, match="0 < low <= high"):
        AugmentConfig(**{key: (0.0, 1.0)})


def test_camera_effects_defaults_and_bloom_width():
    rng = np.random.default_rng(2)
    crop = rng.integers(0, 256, (48, 64), dtype=np.uint8)
    assert Photometric(AugmentConfig(), central_box_frac(1.3)).camera_effects(crop, [0]) is crop  # off by default
    glow = Photometric(AugmentConfig(p_bloom=1, bloom_strength=(0.5, 0.5), bloom_sigma=(0.1, 0.1)),
                       central_box_frac(1.3))
    # the glow's sigma is a fraction of the image's longer side (64 px here)
    assert np.array_equal(glow.camera_effects(crop, [0]), bloom(crop, 0.5, 6.4))


def test_localiser_frame_augmentation_is_seeded_and_follows_the_curriculum():
    rng = np.random.default_rng(4)
    frame = rng.integers(0, 256, (60, 96), dtype=np.uint8)
    base = dict(p_brightness_contrast=1, p_noise=1, start_step=10, ramp_steps=0)
    on = Photometric(AugmentConfig(**base, localiser=True), central_box_frac(1.3))
    assert np.array_equal(on.frame(frame, 1, 12), on.frame(frame, 1, 12))
    assert not np.array_equal(on.frame(frame, 1, 12), frame) and not np.array_equal(on.frame(frame, 1, 12),
                                                                                    on.frame(frame, 2, 12))
    assert np.array_equal(on.frame(frame, 1, 9), frame)  # before augment.start_step
    off = Photometric(AugmentConfig(**base), central_box_frac(1.3))  # augment.localiser false
    assert np.array_equal(off.frame(frame, 1, 12), frame)
    # the camera effects draw from their own stream: a unit gain leaves the other draws of the frame as they were
    unit = Photometric(AugmentConfig(**base, localiser=True, p_exposure=1, exposure_gain=(1.0, 1.0)),
                       central_box_frac(1.3))
    assert np.abs(unit.frame(frame, 1, 12).astype(int) - on.frame(frame, 1, 12)).max() <= 2


def test_localiser_frames_get_a_lamp_anywhere_and_no_blur_or_noise():
    """The frame augmentation: no blur and no noise (the frames are downscaled ~10x, where the crops' kernels would
    be ten times the camera's); the sun flare (p_flare) lands anywhere in the frame, not in the central box."""
    frame = np.random.default_rng(5).integers(0, 60, (60, 96), dtype=np.uint8)  # texture: a blur would show
    quiet = Photometric(AugmentConfig(localiser=True, p_brightness_contrast=0, p_gamma=0, p_flare=0, p_blur=1,
                                      p_noise=1), central_box_frac(1.3))
    assert np.array_equal(quiet.frame(frame, 1, None), frame)
    lamp = Photometric(AugmentConfig(localiser=True, p_brightness_contrast=0, p_gamma=0, p_flare=1, p_blur=0,
                                     p_noise=0), central_box_frac(1.3))
    peaks = []
    for seed in range(24):
        out = lamp.frame(frame, seed, None).astype(int)
        assert out.max() > 100 and (out >= frame).all()  # a bright source, only added light
        peaks.append(np.unravel_index(np.argmax(out), out.shape))
    ys, xs = np.array(peaks).T
    x0, y0, x1, y1 = central_box_frac(1.3)
    outside = (xs < x0 * 96) | (xs > x1 * 96) | (ys < y0 * 60) | (ys > y1 * 60)
    assert outside.sum() >= 6 and xs.min() < 24 and xs.max() > 72  # spread over the frame


def test_random_convolution_keeps_the_crop_statistics_and_the_other_draws():
    from speedpose.pose.augment import random_convolution

    rng = np.random.default_rng(3)
    crop = np.zeros((64, 64), np.uint8)
    crop[16:48, 20:44] = rng.integers(60, 200, (32, 24), dtype=np.uint8)
    outs = [random_convolution(crop, np.random.default_rng(s), (1, 3, 5, 7)) for s in range(20)]
    assert all(o.shape == crop.shape and o.dtype == np.uint8 for o in outs)
    assert all(abs(float(o.mean()) - float(crop.mean())) < 10 for o in outs)  # mean kept, up to the clipping at 0
    assert sum(not np.array_equal(o, crop) for o in outs) >= 18
    # a 1x1 filter with a negative weight inverts the contrast before the mixing: some outputs anti-correlate
    corr = [np.corrcoef(o.ravel().astype(float), crop.ravel().astype(float))[0, 1] for o in outs]
    assert min(corr) < 0 < max(corr)
    flat = np.full((8, 8), 90, np.uint8)
    assert np.array_equal(random_convolution(flat, np.random.default_rng(0), (3,)), flat)
    # off by default; switched on, deterministic per seed and drawn from its own stream
    base = dict(p_brightness_contrast=0, p_gamma=0, p_noise=0, p_blur=0, p_flare=0, p_dropout=0)
    assert AugmentConfig().p_randconv == 0
    on = Photometric(AugmentConfig(**base, p_randconv=1), central_box_frac(1.3))
    assert np.array_equal(on(crop, 7), on(crop, 7)) and not np.array_equal(on(crop, 7), crop)
    stream = np.random.default_rng([7, 6])
    stream.random()  # the draw of p_randconv comes first
    assert np.array_equal(on(crop, 7), random_convolution(crop, stream, (1, 3, 5, 7)))
    # its own stream: switched on but never drawn, the other steps give the same sample as without it
    every = dict(p_brightness_contrast=1, p_noise=1, p_blur=1, p_dropout=1)
    never = Photometric(AugmentConfig(**every, p_randconv=1e-12), central_box_frac(1.3))
    without = Photometric(AugmentConfig(**every), central_box_frac(1.3))
    assert all(np.array_equal(never(crop, s), without(crop, s)) for s in range(5))
    for bad in ((2, 3), (17,), ()):
        with pytest.raises(ValueError, match="odd kernel sides from 1 to 15"):
            AugmentConfig(randconv_kernels=bad)
