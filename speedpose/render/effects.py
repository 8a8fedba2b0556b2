"""Camera effects on linear full-frame images (float32, (H, W)): bloom, streaks, lens flare, defocus, noise, tone.

Every function is deterministic given its arguments (random draws come from the caller's generator).
"""

from __future__ import annotations

import cv2
import numpy as np


def defocus(img: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur standing in for a slightly defocused lens."""
    if sigma_px <= 0:
        return img
    return cv2.GaussianBlur(img, (0, 0), sigma_px, borderType=cv2.BORDER_REPLICATE)


def bloom(img: np.ndarray, threshold: float, strength: float, sigma_px: float) -> np.ndarray:
    """Add a wide glow around everything brighter than ``threshold`` (computed at 1/4 resolution)."""
    if strength <= 0:
        return img
    h, w = img.shape
    bright = np.maximum(img - np.float32(threshold), 0)
    small = cv2.resize(bright, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
    glow = cv2.GaussianBlur(small, (0, 0), sigma_px / 4) + 0.5 * cv2.GaussianBlur(small, (0, 0), sigma_px)
    return img + np.float32(strength) * cv2.resize(glow, (w, h), interpolation=cv2.INTER_LINEAR)


def streaks(img: np.ndarray, threshold: float, strength: float, length_px: float, angles_deg) -> np.ndarray:
    """Diffraction-like streaks (star spikes) from over-exposed regions, at 1/4 resolution."""
    if strength <= 0:
        return img
    h, w = img.shape
    bright = np.maximum(img - np.float32(threshold), 0)
    small = cv2.resize(bright, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
    n = int(max(3, length_px / 4)) | 1
    acc = np.zeros_like(small)
    c = n // 2
    for ang in angles_deg:
        k = np.zeros((n, n), np.float32)
        dx, dy = np.cos(np.radians(ang)), np.sin(np.radians(ang))
        t = np.linspace(-c, c, 4 * n)
        weights = np.exp(-np.abs(t) / (c / 3))
        xs, ys = np.rint(c + t * dx).astype(int), np.rint(c + t * dy).astype(int)
        np.add.at(k, (ys, xs), weights)
        acc += cv2.filter2D(small, -1, k / k.sum(), borderType=cv2.BORDER_CONSTANT)
    return img + np.float32(strength) * cv2.resize(acc, (w, h), interpolation=cv2.INTER_LINEAR)


def lens_flare(img: np.ndarray, source_uv: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """A lamp's glare around ``source_uv`` (may be outside the frame) and ghost discs mirrored through the centre.

    Args:
        source_uv: (2,) pixel position of the light source in the image plane.
        strength: peak brightness of the glare (linear units).
    """
    if strength <= 0:
        return img
    h, w = img.shape
    small_w, small_h = w // 4, h // 4
    ys, xs = np.mgrid[0:small_h, 0:small_w].astype(np.float32)
    xs = xs * 4 + 1.5
    ys = ys * 4 + 1.5
    su, sv = float(source_uv[0]), float(source_uv[1])
    d2 = (xs - su) ** 2 + (ys - sv) ** 2
    flare = np.float32(strength) * (np.float32(120.0) ** 2 / (d2 + np.float32(120.0) ** 2))
    centre = np.array([w / 2, h / 2])
    axis = centre - np.array([su, sv])
    for t, radius, gain in ((0.6, 40, 0.10), (1.25, 90, 0.06), (1.6, 30, 0.12), (2.0, 150, 0.04)):
        t = t * float(rng.uniform(0.9, 1.1))
        gx, gy = su + axis[0] * t, sv + axis[1] * t
        r = radius * float(rng.uniform(0.7, 1.4))
        dist = np.sqrt((xs - gx) ** 2 + (ys - gy) ** 2)
        ghost = np.clip((r - dist) / (0.25 * r), 0, 1)  # soft-edged disc
        flare += np.float32(strength * gain) * ghost
    return img + cv2.resize(flare, (w, h), interpolation=cv2.INTER_LINEAR)


_LUT_SIZE = 4096


def tone_map(img: np.ndarray, exposure: float, gamma: float, black_level: float) -> np.ndarray:
    """Linear radiance -> display values in [0, 1]: ``black + (1 - black) * clip(exposure * img) ** (1/gamma)``.

    The power law goes through a 4096-entry table indexed by ``sqrt(x)`` (a linear index would band visibly in the
    dark, where ``x ** (1/gamma)`` is steep).
    """
    k = np.linspace(0, 1, _LUT_SIZE, dtype=np.float32)
    lut = np.float32(black_level) + np.float32(1 - black_level) * np.power(k, np.float32(2.0 / gamma))
    x = np.clip(img * np.float32(exposure), 0, 1)
    idx = cv2.sqrt(x) * np.float32(_LUT_SIZE - 1) + np.float32(0.5)
    return lut[idx.astype(np.int32)]


#: fixed noise tiles (part of the generator, like the Earth textures): images take random windows of them
_NOISE_SEED = 31415
_NOISE_PAD = 64
_NOISE_CACHE: dict[tuple[int, int], np.ndarray] = {}


def _noise_tiles(height: int, width: int) -> np.ndarray:
    """(4, H + 64, W + 64) float32 standard normal tiles: two white, two film grain (blurred, unit variance)."""
    key = (height, width)
    if key not in _NOISE_CACHE:
        rng = np.random.default_rng(_NOISE_SEED)
        shape = (height + _NOISE_PAD, width + _NOISE_PAD)
        tiles = [rng.standard_normal(shape, dtype=np.float32) for _ in range(4)]
        for i in (2, 3):
            g = cv2.GaussianBlur(tiles[i], (0, 0), 0.7)
            tiles[i] = g / np.float32(g.std())
        bank = np.stack(tiles)
        bank.setflags(write=False)
        _NOISE_CACHE[key] = bank
    return _NOISE_CACHE[key]


def sensor_noise(display: np.ndarray, rng: np.random.Generator, read_sigma: float, shot_sigma: float,
                 grain: bool = False) -> np.ndarray:
    """Add noise in display units (0-1): ``sigma^2 = read^2 + shot^2 * value``.

    The noise field is a random window (random offset, flips) of a fixed standard-normal tile, which costs a slice
    instead of two million fresh normal draws per image; ``grain=True`` uses blurred (film-grain) tiles.
    """
    h, w = display.shape
    bank = _noise_tiles(h, w)
    k = int(rng.integers(2)) + (2 if grain else 0)
    oy, ox = (int(v) for v in rng.integers(0, _NOISE_PAD, 2))
    noise = bank[k, oy:oy + h, ox:ox + w]
    if rng.random() < 0.5:
        noise = noise[::-1]
    if rng.random() < 0.5:
        noise = noise[:, ::-1]
    sigma = np.sqrt(np.float32(read_sigma) ** 2 + np.float32(shot_sigma) ** 2 * np.maximum(display, 0))
    return display + noise * sigma


def to_uint8(display: np.ndarray) -> np.ndarray:
    """[0, 1] -> uint8 (rounded, clipped)."""
    return np.clip(display * np.float32(255) + np.float32(0.5), 0, 255).astype(np.uint8)
