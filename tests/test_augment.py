"""`speedpose augment`: preview grid and materialised copies; photometric augmentation is seeded."""

import json

import cv2
import numpy as np

from speedpose.cli import main
from speedpose.pose.augment import Photometric, central_box_frac
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
