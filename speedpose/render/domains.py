"""The three SPEED+ domains as rendering recipes: lighting, background and camera effects per image.

* ``synthetic``: sun + faint ambient, Earth-albedo fill over the Earth, film grain; over the Earth or black space.
* ``lightbox``: hard key light plus a bright diffuse fill, strong specular highlights, bloom, slight defocus, sensor
  noise, a lifted black level and (mostly) Earth pictures lit evenly, as on the light boxes of the TRON facility.
* ``sunlamp``: one very strong lamp, almost no fill (hard shadows), over-exposure, bloom, streaks and lens flare over
  a black background.

Each recipe draws its parameters from the caller's generator, so an image is a pure function of (pose, domain, seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speedpose.errors import InputError
from speedpose.geometry.rotations import quat_wxyz_to_matrix
from speedpose.render import effects
from speedpose.render.backgrounds import earth_background, random_earth_view
from speedpose.render.distortion import DistortionWarp
from speedpose.render.spacecraft import Lighting, render_spacecraft

DOMAIN_NAMES = ("synthetic", "lightbox", "sunlamp")


@dataclass(frozen=True)
class Frame:
    """One rendered image.

    Attributes:
        image: (H, W) uint8 grayscale image.
        mask: (H, W) uint8 spacecraft mask, 0 or 255.
        keypoints_uv: (11, 2) keypoints projected with the camera [px].
        keypoints_visible: (11,) in the frame and not hidden by the spacecraft itself.
        earth: whether the background shows the Earth.
    """

    image: np.ndarray
    mask: np.ndarray
    keypoints_uv: np.ndarray
    keypoints_visible: np.ndarray
    earth: bool


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _random_dir(rng: np.random.Generator) -> np.ndarray:
    return _unit(rng.standard_normal(3))


def render_frame(warp: DistortionWarp, q_wxyz: np.ndarray, r_cam_m: np.ndarray, domain: str,
                 rng: np.random.Generator, earth: bool | None = None) -> Frame:
    """Render one image of a domain at a pose.

    Args:
        warp: the camera's distortion warp.
        q_wxyz: (4,) SPEED+ quaternion (``q_vbs2tango_true``); r_cam_m: (3,) translation [m], camera frame.
        domain: ``synthetic``, ``lightbox`` or ``sunlamp``.
        rng: source of every random choice of this image.
        earth: force an Earth background on or off (default: drawn with the domain's probability; sunlamp never).
    """
    if domain not in DOMAIN_NAMES:
        raise InputError(f"unknown domain {domain!r}; expected one of {', '.join(DOMAIN_NAMES)}")
    R = quat_wxyz_to_matrix(np.asarray(q_wxyz, dtype=np.float64))
    recipe = {"synthetic": _synthetic, "lightbox": _lightbox, "sunlamp": _sunlamp}[domain]
    return recipe(warp, R, np.asarray(r_cam_m, dtype=np.float64), rng, earth)


def _background(warp: DistortionWarp, rng: np.random.Generator, sun: np.ndarray, earth: bool,
                uniform_light: bool) -> tuple[np.ndarray, np.ndarray | None]:
    cam = warp.camera
    if not earth:
        return np.zeros((cam.height, cam.width), np.float32), None
    view = random_earth_view(rng, sun, uniform_light=uniform_light)
    return earth_background(warp.rays(4), view, cam.height, cam.width), -view.centre_dir_cam


def _finish(warp, layer, display: np.ndarray, earth: bool) -> Frame:
    cam = warp.camera
    return Frame(effects.to_uint8(display), layer.mask(cam.height, cam.width), layer.keypoints_uv,
                 layer.keypoints_visible, earth)


def _synthetic(warp, R, r, rng, earth):
    sun = _random_dir(rng)
    if sun[2] > 0.3 and rng.random() < 0.7:  # mostly lit from the camera's side, sometimes against the light
        sun[2] = -sun[2]
    earth = bool(rng.random() < 0.5) if earth is None else earth
    bg, earth_dir = _background(warp, rng, sun, earth, uniform_light=False)
    key = float(rng.uniform(0.9, 1.3))
    lighting = Lighting(sun, key, earth_dir, float(rng.uniform(0.15, 0.35)) if earth else 0.0,
                        ambient=float(rng.uniform(0.01, 0.04)), specular_gain=1.0)
    layer = render_spacecraft(warp, R, r, lighting)
    img = layer.paste(bg)
    disp = effects.tone_map(img, exposure=float(rng.uniform(0.85, 1.1)), gamma=1.8, black_level=0.0)
    disp = effects.sensor_noise(disp, rng, read_sigma=0.006, shot_sigma=0.012, grain=True)
    return _finish(warp, layer, disp, earth)


def _lightbox(warp, R, r, rng, earth):
    key_dir = _random_dir(rng)
    key_dir[2] = -abs(key_dir[2]) if rng.random() < 0.85 else abs(key_dir[2])
    fill_dir = _random_dir(rng)
    fill_dir[2] = -abs(fill_dir[2])
    earth = bool(rng.random() < 0.6) if earth is None else earth
    bg, _ = _background(warp, rng, key_dir, earth, uniform_light=True)
    bg *= np.float32(rng.uniform(0.8, 1.3))  # light-box Earth pictures are bright and contrasted
    lighting = Lighting(key_dir, float(rng.uniform(1.0, 1.7)), fill_dir, float(rng.uniform(0.35, 0.65)),
                        ambient=float(rng.uniform(0.04, 0.09)), specular_gain=float(rng.uniform(2.0, 3.5)))
    layer = render_spacecraft(warp, R, r, lighting)
    img = layer.paste(bg)
    img = effects.defocus(img, float(rng.uniform(0.8, 1.6)))
    img = effects.bloom(img, threshold=0.8, strength=float(rng.uniform(0.3, 0.7)), sigma_px=24.0)
    # exposure varies more than in synthetic: some real light-box frames are much darker
    disp = effects.tone_map(img, exposure=float(np.exp(rng.uniform(np.log(0.35), np.log(1.3)))), gamma=2.0,
                            black_level=float(rng.uniform(0.07, 0.13)))
    disp = effects.sensor_noise(disp, rng, read_sigma=float(rng.uniform(0.01, 0.02)), shot_sigma=0.03)
    return _finish(warp, layer, disp, earth)


def _sunlamp(warp, R, r, rng, earth):
    cam = warp.camera
    lamp = _random_dir(rng)
    behind = rng.random() < 0.3  # lamp behind the spacecraft, in or near the field of view: flare
    if behind:
        lamp = _unit([rng.normal(0, 0.35), rng.normal(0, 0.25), 1.0])
    else:
        lamp[2] = -abs(lamp[2])
    lighting = Lighting(lamp, float(rng.uniform(1.8, 3.5)), _random_dir(rng), 0.03, ambient=0.01,
                        specular_gain=float(rng.uniform(3.0, 5.0)))
    layer = render_spacecraft(warp, R, r, lighting)
    img = layer.paste(np.zeros((cam.height, cam.width), np.float32))
    img = effects.bloom(img, threshold=1.0, strength=float(rng.uniform(0.3, 0.7)), sigma_px=40.0)
    img = effects.streaks(img, threshold=1.0, strength=float(rng.uniform(0.15, 0.35)), length_px=240,
                          angles_deg=rng.uniform(0, 60) + np.arange(0, 180, 60))
    if lamp[2] > 0.05:
        src = cam.project(lamp[None] * 100.0)[0] if lamp[2] > 0.2 else cam.project(lamp[None] * 100.0,
                                                                                 distort=False)[0]
        img = effects.lens_flare(img, src, float(rng.uniform(0.6, 1.5)), rng)
    disp = effects.tone_map(img, exposure=1.0, gamma=2.0, black_level=float(rng.uniform(0.02, 0.05)))
    disp = effects.sensor_noise(disp, rng, read_sigma=0.01, shot_sigma=0.02)
    return _finish(warp, layer, disp, False if earth is None else earth)
