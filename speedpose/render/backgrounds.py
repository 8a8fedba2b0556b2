"""Procedural backgrounds: the Earth seen from low orbit (clouds, ocean, land, terminator, limb glow) and black space.

Everything is computed from the viewing rays of the real (distorted) camera, so the limb is curved as the lens sees
it.  Textures are periodic fractal noise tiles (power-law spectrum) from a fixed seed, sampled in a local tangent
plane of the Earth at a chosen scale, position and rotation: the same tiles serve every image, the sampling differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

EARTH_RADIUS_KM = 6371.0
_TILE = 512
_BANK_SEED = 20221  # fixed: the tiles are part of the generator, not of an image's randomness


@lru_cache(maxsize=1)
def noise_bank() -> np.ndarray:
    """(4, 512, 512) float32 periodic fractal noise tiles in [0, 1] (spectral slopes 1.6 to 2.4), cached."""
    rng = np.random.default_rng(_BANK_SEED)
    fy = np.fft.fftfreq(_TILE)[:, None]
    fx = np.fft.fftfreq(_TILE)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    tiles = []
    for beta in (1.6, 1.9, 2.2, 2.4):
        spec = np.fft.fft2(rng.standard_normal((_TILE, _TILE))) / f ** (beta / 1.0) * (f > 0)
        t = np.real(np.fft.ifft2(spec))
        lo, hi = np.percentile(t, [0.5, 99.5])
        tiles.append(np.clip((t - lo) / (hi - lo), 0, 1).astype(np.float32))
    bank = np.stack(tiles)
    bank.setflags(write=False)
    return bank


def _sample(tile: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of a periodic tile at texel coordinates (any range)."""
    n = np.float32(tile.shape[0])
    return cv2.remap(tile, np.mod(x, n).astype(np.float32), np.mod(y, n).astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_WRAP)


@dataclass(frozen=True)
class EarthView:
    """Where the Earth is and how it is drawn.

    Attributes:
        centre_dir_cam: (3,) unit vector from the camera to the Earth's centre (camera frame).
        altitude_km: camera altitude above the surface.
        sun_dir_cam: (3,) unit vector towards the sun (camera frame).
        offset_km: (2,) texture offset in the tangent plane (which part of the planet is seen).
        rotation_rad: texture rotation in the tangent plane.
        cloud_cover: threshold shift in [-0.3, 0.3]: larger = more cloud.
        uniform_light: light the disc evenly (a picture on a light box) instead of by the sun.
        brightness: overall gain.
        contrast: gamma-like contrast of the cloud field (1 = as generated).
    """

    centre_dir_cam: np.ndarray
    altitude_km: float
    sun_dir_cam: np.ndarray
    offset_km: tuple[float, float] = (0.0, 0.0)
    rotation_rad: float = 0.0
    cloud_cover: float = 0.0
    uniform_light: bool = False
    brightness: float = 1.0
    contrast: float = 1.0


def random_earth_view(rng: np.random.Generator, sun_dir_cam: np.ndarray, uniform_light: bool = False) -> EarthView:
    """An Earth behind the spacecraft: from a disc filling the frame to a limb crossing it (altitude 400-900 km).

    ``uniform_light`` (light-box pictures) also draws more cloud and a harder cloud contrast.
    """
    alt = float(rng.uniform(400, 900))
    sun = np.asarray(sun_dir_cam, float)
    half_angle = np.degrees(np.arcsin(EARTH_RADIUS_KM / (EARTH_RADIUS_KM + alt)))
    # angle between the optical axis and the Earth's centre: below ~half_angle - 20 deg the disc fills the frame
    off_axis = np.radians(rng.uniform(half_angle - 45, half_angle + 12))
    phi = rng.uniform(0, 2 * np.pi)
    centre = np.array([np.sin(off_axis) * np.cos(phi), np.sin(off_axis) * np.sin(phi), np.cos(off_axis)])
    if np.dot(-centre, sun) < 0.2:  # mostly the day side, as in SPEED+: mirror the Earth across the optical axis
        centre[:2] *= -1
    cover = rng.uniform(-0.05, 0.3) if uniform_light else rng.uniform(-0.2, 0.25)
    contrast = rng.uniform(0.6, 1.0) if uniform_light else rng.uniform(0.8, 1.4)
    return EarthView(centre, alt, sun, tuple(rng.uniform(-3e4, 3e4, 2)),
                     float(rng.uniform(0, 2 * np.pi)), float(cover), uniform_light,
                     float(rng.uniform(0.8, 1.15)), float(contrast))


def earth_radiance(rays: np.ndarray, view: EarthView, upsample: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Radiance of the Earth and its atmosphere along viewing rays.

    Args:
        rays: (h, w, 3) float32 unit rays, camera frame.
        view: the Earth's placement and look.
        upsample: the geometry (hit points, lighting) is computed on ``rays`` and interpolated ``upsample`` times
            finer before the cloud textures are sampled, so texture detail is finer than the ray grid.
    Returns:
        radiance: (h * upsample, w * upsample) float32 linear radiance (0 off the planet except the limb glow);
        earth: same shape, bool, True where the ray hits the planet.
    """
    rc = np.float32(1.0 + view.altitude_km / EARTH_RADIUS_KM)
    c = (np.asarray(view.centre_dir_cam, np.float32) * rc).astype(np.float32)
    b = rays @ c
    disc = b * b - (rc * rc - 1)
    t = b - np.sqrt(np.maximum(disc, 0))
    n = rays * t[..., None] - c  # unit normal at the hit point (Earth radius = 1)
    # local tangent frame at the sub-camera point, rotated
    cdir = c / rc
    e1 = np.cross(cdir, [0.0, 0.0, 1.0] if abs(cdir[2]) < 0.9 else [1.0, 0.0, 0.0]).astype(np.float32)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(cdir, e1).astype(np.float32)
    cr, sr = np.cos(view.rotation_rad), np.sin(view.rotation_rad)
    a1, a2 = cr * e1 + sr * e2, -sr * e1 + cr * e2
    mu = np.clip(-np.einsum("hwc,hwc->hw", n, rays), 0, 1)  # cosine between surface normal and the viewer
    if view.uniform_light:
        light = np.float32(0.9) + np.float32(0.1) * mu
    else:
        light = np.clip(n @ np.asarray(view.sun_dir_cam, np.float32), 0, 1) * np.float32(1.05) + np.float32(0.01)
    closest = np.sqrt(np.maximum(rc * rc - b * b, 0))  # closest approach of a missing ray to the centre
    geo = np.stack([(n @ a1.astype(np.float32)) * np.float32(EARTH_RADIUS_KM),
                    (n @ a2.astype(np.float32)) * np.float32(EARTH_RADIUS_KM),
                    light, mu, np.where(b > 0, disc, -1).astype(np.float32), closest], axis=-1)
    if upsample > 1:
        h, w = rays.shape[:2]
        geo = cv2.resize(geo, (w * upsample, h * upsample), interpolation=cv2.INTER_LINEAR)
    xk = geo[..., 0] + np.float32(view.offset_km[0])
    yk = geo[..., 1] + np.float32(view.offset_km[1])
    light, mu, disc, closest = geo[..., 2], geo[..., 3], geo[..., 4], geo[..., 5]
    hit = disc > 0
    bank = noise_bank()
    # clouds at three scales (texel 0.7, 3 and 12 km), continents at 60 km per texel
    fine = _sample(bank[0], xk / 0.7, yk / 0.7)
    mid = _sample(bank[1], (xk + yk * 0.3) / 3.0, (yk - xk * 0.3) / 3.0)
    large = _sample(bank[2], xk / 12.0, yk / 12.0)
    land = _sample(bank[3], xk / 60.0 + 100, yk / 60.0 + 50)
    field = 0.45 * large + 0.35 * mid + 0.2 * fine
    thr = np.float32(0.5 - view.cloud_cover)
    cloud = np.clip((field - thr) / np.float32(0.14), 0, 1) ** np.float32(view.contrast)
    surface = np.where(land > 0.55, 0.08 + 0.14 * mid, 0.03 + 0.03 * fine).astype(np.float32)
    albedo = surface + (np.float32(0.9) - surface) * cloud * (0.7 + 0.3 * fine)
    haze = np.exp(-mu / np.float32(0.12))  # a bright haze towards the limb
    rad = (albedo * (1 - 0.6 * haze) + 0.25 * haze) * light * np.float32(view.brightness)
    # thin glowing atmosphere above the limb (rays passing within ~60 km of the surface)
    glow = np.exp(-np.maximum(closest - 1, 0) * np.float32(EARTH_RADIUS_KM / 25.0))
    day = 1.0 if view.uniform_light else float(np.clip(0.3 + np.dot(-np.asarray(view.centre_dir_cam),
                                                                    view.sun_dir_cam), 0.05, 1))
    rad = np.where(hit, rad, np.float32(0.35 * day * view.brightness) * glow * (disc > -0.5)).astype(np.float32)
    return rad, hit


def earth_background(rays_step4: np.ndarray, view: EarthView, height: int, width: int) -> np.ndarray:
    """Earth radiance at full resolution: geometry on a quarter-resolution ray grid, textures at half resolution,
    then upsampled (the Earth is soft; the spacecraft is what must be sharp).

    Args:
        rays_step4: (ceil(H/4), ceil(W/4), 3) rays of every fourth pixel (:meth:`DistortionWarp.rays` step 4).
    Returns:
        (height, width) float32 radiance.
    """
    rad, _ = earth_radiance(rays_step4, view, upsample=2)
    # quarter-grid pixel q is full pixel 4q; the centre-aligned x2 resize puts half-grid pixel p at quarter
    # coordinate (p + 0.5) / 2 - 0.5, i.e. at full pixel 2p - 1
    m = np.float32([[2, 0, -1], [0, 2, -1]])
    return cv2.warpAffine(rad, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
