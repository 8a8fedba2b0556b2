"""Rendering through the real (distorted) SPEED+ camera: render an ideal pinhole image, then remap it.

:class:`DistortionWarp` holds, for every pixel of the distorted image, the pixel of the ideal pinhole image with the
same intrinsics ``K`` that sees the same ray (``map_u``, ``map_v``).  Remapping a pinhole rendering through it gives the
image the real camera takes, so the keypoints projected with ``camera.json`` (distortion included) land on the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from speedpose.camera import Camera


@dataclass(frozen=True)
class DistortionWarp:
    """Per-pixel inverse distortion of a camera.

    Attributes:
        camera: the real camera (with distortion).
        map_u, map_v: (H, W) float32 ideal-pinhole pixel coordinates of each distorted pixel centre.
    """

    camera: Camera
    map_u: np.ndarray
    map_v: np.ndarray

    def rays(self, step: int = 1) -> np.ndarray:
        """(H/step, W/step, 3) float32 unit viewing rays (camera frame) of every ``step``-th distorted pixel."""
        u, v = self.map_u[::step, ::step], self.map_v[::step, ::step]
        K = self.camera.K
        y = (v - K[1, 2]) / K[1, 1]
        x = (u - K[0, 2] - K[0, 1] * y) / K[0, 0]
        d = np.stack([x, y, np.ones_like(x)], axis=-1).astype(np.float32)
        return d / np.linalg.norm(d, axis=-1, keepdims=True)

    def distorted_box(self, box_pinhole: tuple[float, float, float, float], margin: int = 2
                      ) -> tuple[int, int, int, int] | None:
        """Distorted-image pixels whose rays fall inside a box of the pinhole image.

        Args:
            box_pinhole: (x0, y0, x1, y1) in pinhole pixels.
            margin: extra pixels around the result.
        Returns:
            (x0, y0, x1, y1) inclusive pixel box in the distorted image, or None when nothing of the box is seen.
        """
        x0, y0, x1, y1 = box_pinhole
        step = 8
        mu, mv = self.map_u[::step, ::step], self.map_v[::step, ::step]
        pad = step * 1.5  # the coarse grid misses up to one cell of a thin box: widen the test accordingly
        hit = (mu >= x0 - pad) & (mu <= x1 + pad) & (mv >= y0 - pad) & (mv <= y1 + pad)
        rows, cols = np.nonzero(hit.any(axis=1))[0], np.nonzero(hit.any(axis=0))[0]
        if len(rows) == 0:
            return None
        W, H = self.camera.width, self.camera.height
        bx0 = max(0, cols[0] * step - step - margin)
        bx1 = min(W - 1, cols[-1] * step + step + margin)
        by0 = max(0, rows[0] * step - step - margin)
        by1 = min(H - 1, rows[-1] * step + step + margin)
        return int(bx0), int(by0), int(bx1), int(by1)

    def remap(self, image: np.ndarray, origin: tuple[int, int], box: tuple[int, int, int, int],
              scale: float = 1.0) -> np.ndarray:
        """Resample a pinhole image onto a box of the distorted image (bilinear, zero outside).

        Args:
            image: (h, w) float32 pinhole image whose pixel (0, 0) is centred on pinhole pixel ``origin`` = (x, y),
                sampled at ``scale`` pixels per pinhole pixel (pixel (i, j) is centred on ``origin + ((j + 0.5) /
                scale - 0.5, (i + 0.5) / scale - 0.5)``).
            box: (x0, y0, x1, y1) inclusive box of the distorted image to fill.
        Returns:
            (y1 - y0 + 1, x1 - x0 + 1) float32.
        """
        x0, y0, x1, y1 = box
        s = np.float32(scale)
        mu = (self.map_u[y0:y1 + 1, x0:x1 + 1] - np.float32(origin[0] - 0.5)) * s - np.float32(0.5)
        mv = (self.map_v[y0:y1 + 1, x0:x1 + 1] - np.float32(origin[1] - 0.5)) * s - np.float32(0.5)
        return cv2.remap(image, mu, mv, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _camera_key(camera: Camera) -> tuple:
    return (camera.width, camera.height, tuple(camera.K.ravel()), tuple(camera.dist))


_CACHE: dict[tuple, DistortionWarp] = {}


def distortion_warp(camera: Camera) -> DistortionWarp:
    """The (cached, per process) :class:`DistortionWarp` of a camera; about 1 s to build at 1920x1200.

    The inverse distortion is OpenCV's iterative ``undistortPoints`` run to 1e-10 (normalised units); the round trip
    through :meth:`Camera.normalized_to_pixels` is checked in the tests to stay below 1e-3 px.
    """
    key = _camera_key(camera)
    if key not in _CACHE:
        _CACHE[key] = _build(camera)
    return _CACHE[key]


def register_warp(warp: DistortionWarp) -> DistortionWarp:
    """Put an already built warp (e.g. received by a worker process) into this process's cache; returns it."""
    _CACHE.setdefault(_camera_key(warp.camera), warp)
    return _CACHE[_camera_key(warp.camera)]


def _build(camera: Camera) -> DistortionWarp:
    W, H = camera.width, camera.height
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    if not camera.has_distortion:
        mu, mv = u, v
    else:
        pts = np.stack([u, v], axis=-1).reshape(-1, 1, 2)
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-10)
        und = cv2.undistortPoints(pts, camera.K, camera.dist, R=np.eye(3), P=camera.K, criteria=crit).reshape(H, W, 2)
        mu, mv = und[..., 0], und[..., 1]
    mu32, mv32 = mu.astype(np.float32), mv.astype(np.float32)
    mu32.setflags(write=False)
    mv32.setflags(write=False)
    return DistortionWarp(camera, mu32, mv32)




def pinhole_warp(camera: Camera) -> DistortionWarp:
    """The identity warp of an undistorted camera, NOT cached (a virtual camera per crop would fill the cache)."""
    if camera.has_distortion:
        raise ValueError("pinhole_warp: the camera has distortion; use distortion_warp")
    return _build(camera)
