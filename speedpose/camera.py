"""The SPEED+ camera: camera.json, projection with OpenCV distortion, resizing/cropping, virtual cameras.

Frames: the camera frame is SPEED+'s VBS frame in the OpenCV convention (x right, y down, z forward).  Pixel
coordinates ``(u, v)`` have their origin at the CENTRE of the top-left pixel (OpenCV), u to the right, v down.
A Tango body point ``p`` (metres) lands in the camera at ``p_cam = R(q) p + r``.

Distortion is OpenCV's 5-coefficient model ``(k1, k2, p1, p2, k3)`` applied to normalised coordinates
``(x, y) = (X/Z, Y/Z)`` before the intrinsics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from speedpose.errors import InputError, ShapeError
from speedpose.geometry.rotations import quat_wxyz_to_matrix
from speedpose.io_utils import read_json

CAMERA_KEYS = ("Nu", "Nv", "ppx", "ppy", "fx", "fy", "ccx", "ccy", "cameraMatrix", "distCoeffs")


@dataclass(frozen=True)
class Camera:
    """A pinhole camera with OpenCV distortion.

    Attributes:
        K: (3, 3) intrinsics in pixels (fx, fy, cx, cy).
        dist: (5,) distortion (k1, k2, p1, p2, k3); zeros for an ideal pinhole.
        width, height: image size in pixels.
    """

    K: np.ndarray
    dist: np.ndarray = field(default_factory=lambda: np.zeros(5))
    width: int = 1920
    height: int = 1200

    def __post_init__(self):
        K = np.asarray(self.K, dtype=np.float64)
        dist = np.asarray(self.dist, dtype=np.float64).reshape(-1)
        if K.shape != (3, 3):
            raise ShapeError(f"K: expected shape (3, 3), got {K.shape}")
        if dist.shape != (5,):
            raise ShapeError(f"dist: expected 5 coefficients (k1, k2, p1, p2, k3), got {dist.shape[0]}")
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "dist", dist)

    # ----------------------------------------------------------------------------------------------- properties
    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    @property
    def has_distortion(self) -> bool:
        return bool(np.any(self.dist != 0))

    def undistorted(self) -> "Camera":
        """The same camera without distortion."""
        return replace(self, dist=np.zeros(5))

    # ----------------------------------------------------------------------------------------------- projection
    def distort_normalized(self, xy: np.ndarray) -> np.ndarray:
        """Apply the distortion to normalised image coordinates. (..., 2) -> (..., 2)."""
        xy = np.asarray(xy, dtype=np.float64)
        k1, k2, p1, p2, k3 = self.dist
        x, y = xy[..., 0], xy[..., 1]
        r2 = x * x + y * y
        radial = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        return np.stack([xd, yd], axis=-1)

    def normalized_to_pixels(self, xy: np.ndarray, distort: bool = True) -> np.ndarray:
        """Normalised coordinates (..., 2) -> pixels (..., 2), distorting first unless ``distort=False``."""
        xy = self.distort_normalized(xy) if distort else np.asarray(xy, dtype=np.float64)
        u = self.K[0, 0] * xy[..., 0] + self.K[0, 1] * xy[..., 1] + self.K[0, 2]
        v = self.K[1, 1] * xy[..., 1] + self.K[1, 2]
        return np.stack([u, v], axis=-1)

    def project(self, points_cam: np.ndarray, distort: bool = True) -> np.ndarray:
        """Project camera-frame points (..., 3) [m], z > 0, to pixels (..., 2)."""
        p = np.asarray(points_cam, dtype=np.float64)
        if p.shape[-1] != 3:
            raise ShapeError(f"points_cam: expected shape (..., 3), got {p.shape}")
        xy = p[..., :2] / p[..., 2:3]
        return self.normalized_to_pixels(xy, distort=distort)

    def project_body_points(self, points_body: np.ndarray, q_wxyz: np.ndarray, r_cam_m: np.ndarray,
                            distort: bool = True) -> np.ndarray:
        """Project body-frame points with poses: ``p_cam = R(q) p + r``.

        Args:
            points_body: (P, 3) points in the Tango body frame [m].
            q_wxyz: (..., 4) scalar-first quaternions (SPEED+ ``q_vbs2tango_true``).
            r_cam_m: (..., 3) body origin in the camera frame [m] (``r_Vo2To_vbs_true``).
        Returns:
            (..., P, 2) pixels.
        """
        R = quat_wxyz_to_matrix(np.asarray(q_wxyz, dtype=np.float64))
        r = np.asarray(r_cam_m, dtype=np.float64)
        p_cam = np.einsum("...ij,pj->...pi", R, np.asarray(points_body, dtype=np.float64)) + r[..., None, :]
        return self.project(p_cam, distort=distort)

    def pixels_to_normalized(self, uv: np.ndarray, undistort: bool = True) -> np.ndarray:
        """Pixels (..., 2) -> normalised undistorted coordinates (..., 2) (the ray ``(x, y, 1)``).

        The inverse distortion is solved iteratively (fixed point, then Newton) to below 1e-6 px over the whole
        SPEED+ image.
        """
        uv = np.asarray(uv, dtype=np.float64)
        shape = uv.shape
        y = (uv[..., 1] - self.K[1, 2]) / self.K[1, 1]
        x = (uv[..., 0] - self.K[0, 2] - self.K[0, 1] * y) / self.K[0, 0]
        xy_d = np.stack([x, y], axis=-1)
        if not undistort or not self.has_distortion:
            return xy_d
        # fixed-point start (OpenCV's scheme), then Newton steps on the forward model: converges to < 1e-12
        # in the normalised plane over the whole SPEED+ image
        und = xy_d.copy()
        for _ in range(5):
            und = und - (self.distort_normalized(und) - xy_d)
        for _ in range(6):
            und = und - self._newton_step(und, xy_d)
        return und

    def _newton_step(self, xy: np.ndarray, target: np.ndarray, eps: float = 1e-7) -> np.ndarray:
        f = self.distort_normalized(xy) - target
        jx = (self.distort_normalized(xy + [eps, 0.0]) - self.distort_normalized(xy - [eps, 0.0])) / (2 * eps)
        jy = (self.distort_normalized(xy + [0.0, eps]) - self.distort_normalized(xy - [0.0, eps])) / (2 * eps)
        det = jx[..., 0] * jy[..., 1] - jy[..., 0] * jx[..., 1]
        dx = (jy[..., 1] * f[..., 0] - jy[..., 0] * f[..., 1]) / det
        dy = (-jx[..., 1] * f[..., 0] + jx[..., 0] * f[..., 1]) / det
        return np.stack([dx, dy], axis=-1)

    def undistort_pixels(self, uv: np.ndarray) -> np.ndarray:
        """Distorted pixels (..., 2) -> the pixels an ideal pinhole with the same K would see (..., 2)."""
        return self.normalized_to_pixels(self.pixels_to_normalized(uv), distort=False)

    # ----------------------------------------------------------------------------------- resizing and cropping
    def resized(self, width: int, height: int) -> "Camera":
        """The camera of the image resized to ``width x height`` (cv2.resize, pixel-centre convention)."""
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[0, 0] *= sx
        K[0, 1] *= sx
        K[1, 1] *= sy
        # pixel centres: u' + 0.5 = (u + 0.5) * s
        K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
        return Camera(K, self.dist.copy(), int(width), int(height))

    def cropped(self, x0: int, y0: int, width: int, height: int) -> "Camera":
        """The camera of the sub-image ``image[y0:y0+height, x0:x0+width]``."""
        K = self.K.copy()
        K[0, 2] -= x0
        K[1, 2] -= y0
        return Camera(K, self.dist.copy(), int(width), int(height))

    def in_image(self, uv: np.ndarray) -> np.ndarray:
        """Boolean (...) mask of pixels inside the image (pixel centres in [-0.5, W-0.5) x [-0.5, H-0.5))."""
        uv = np.asarray(uv)
        return (uv[..., 0] >= -0.5) & (uv[..., 0] < self.width - 0.5) & (uv[..., 1] >= -0.5) & (
            uv[..., 1] < self.height - 0.5)

    def to_json_dict(self, pixel_pitch_m: float = 5.86e-6) -> dict:
        """camera.json content in the SPEED+ schema."""
        return {
            "Nu": self.width, "Nv": self.height, "ppx": pixel_pitch_m, "ppy": pixel_pitch_m,
            "fx": self.fx * pixel_pitch_m, "fy": self.fy * pixel_pitch_m, "ccx": self.cx, "ccy": self.cy,
            "cameraMatrix": self.K.tolist(), "distCoeffs": self.dist.tolist(),
        }


def load_camera(path: str | Path) -> Camera:
    """Read and validate a SPEED+ ``camera.json``.

    Every key of the SPEED+ schema must be present with the right shape; the focal lengths in metres divided by
    the pixel pitch must agree with ``cameraMatrix`` (to 0.1%), as must the principal point.

    Raises:
        InputError: naming the file and the key that is missing or inconsistent.
    """
    data = read_json(path)
    return camera_from_dict(data, path)


def camera_from_dict(data: object, path: str | Path | None = None) -> Camera:
    """Validate a camera.json dictionary (see :func:`load_camera`)."""
    if not isinstance(data, dict):
        raise InputError(f"expected a JSON object with keys {', '.join(CAMERA_KEYS)}, got {type(data).__name__}", path)
    missing = [k for k in CAMERA_KEYS if k not in data]
    if missing:
        raise InputError(f"missing key(s) {', '.join(missing)} (camera.json needs {', '.join(CAMERA_KEYS)})", path)

    def number(key: str, positive: bool = True) -> float:
        val = data[key]
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val):
            raise InputError(f"key {key!r}: expected a finite number, got {val!r}", path)
        if positive and val <= 0:
            raise InputError(f"key {key!r}: expected a positive number, got {val!r}", path)
        return float(val)

    nu, nv = number("Nu"), number("Nv")
    if nu != int(nu) or nv != int(nv):
        raise InputError(f"keys 'Nu'/'Nv': expected integer image sizes, got {nu}, {nv}", path)
    ppx, ppy, fx_m, fy_m, ccx, ccy = (number(k) for k in ("ppx", "ppy", "fx", "fy", "ccx", "ccy"))
    try:
        K = np.asarray(data["cameraMatrix"], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("key 'cameraMatrix': expected a 3x3 array of numbers", path) from None
    if K.shape != (3, 3) or not np.all(np.isfinite(K)):
        raise InputError(f"key 'cameraMatrix': expected a finite 3x3 array, got shape {K.shape}", path)
    try:
        dist = np.asarray(data["distCoeffs"], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError("key 'distCoeffs': expected 5 numbers (k1, k2, p1, p2, k3)", path) from None
    if dist.shape != (5,) or not np.all(np.isfinite(dist)):
        raise InputError(f"key 'distCoeffs': expected 5 finite numbers (k1, k2, p1, p2, k3), got {dist.size}", path)
    if not np.allclose(K[2], [0, 0, 1]) or K[1, 0] != 0:
        raise InputError(f"key 'cameraMatrix': last row must be [0, 0, 1] and K[1][0] 0, got {K.tolist()}", path)
    for name, metres, pitch, pixels in (("fx", fx_m, ppx, K[0, 0]), ("fy", fy_m, ppy, K[1, 1])):
        if abs(metres / pitch - pixels) > 1e-3 * pixels:
            raise InputError(f"key {name!r}: {name}/pp = {metres / pitch:.2f} px disagrees with cameraMatrix "
                             f"({pixels:.2f} px)", path)
    if abs(ccx - K[0, 2]) > 1 or abs(ccy - K[1, 2]) > 1:
        raise InputError(f"keys 'ccx'/'ccy' ({ccx}, {ccy}) disagree with cameraMatrix ({K[0, 2]}, {K[1, 2]})", path)
    return Camera(K=K, dist=dist, width=int(nu), height=int(nv))


def speedplus_camera() -> Camera:
    """The SPEED+ camera (values of the released ``camera.json``): 1920x1200, f = 2988.58/2988.34 px, with
    distortion.  Used by the stand-in generator; everything reading a dataset uses that dataset's camera.json."""
    K = np.array([[2988.5795163815555, 0.0, 960.0], [0.0, 2988.3401159176124, 600.0], [0.0, 0.0, 1.0]])
    dist = np.array([-0.22383016606510672, 0.5140979708910638, -0.0006649961199834066,
                     -0.00021404771667484594, -0.13124227429077406])
    return Camera(K=K, dist=dist, width=1920, height=1200)
