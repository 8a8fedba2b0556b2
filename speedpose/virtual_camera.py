"""Virtual cameras: the real camera rotated about its centre to look at a chosen pixel.

A crop taken by a virtual camera is a true perspective image of the scene (not a cut-out of the distorted frame),
so the object looks the same wherever it appears in the real image; only the pose must be re-expressed:

* ``R_cam_virt`` maps virtual-camera coordinates to real-camera coordinates: ``p_cam = R_cam_virt @ p_virt``.
* A pose ``(R, r)`` of the real camera (``p_cam = R p_body + r``) becomes, in the virtual camera,
  ``R_virt = R_cam_virt^T R`` and ``r_virt = R_cam_virt^T r``.  :meth:`VirtualCamera.pose_to_virtual` and
  :meth:`VirtualCamera.pose_from_virtual` do this and its inverse.

The virtual camera is an ideal pinhole (no distortion); :meth:`VirtualCamera.warp` resamples the distorted real
image through the real camera's distortion model.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from speedpose.camera import Camera


def rotation_z_to_ray(ray: np.ndarray) -> np.ndarray:
    """The smallest rotation taking the optical axis (0, 0, 1) onto ``ray``. (3,) -> (3, 3).

    Its columns are the virtual camera's axes expressed in the real camera frame.
    """
    d = np.asarray(ray, dtype=np.float64)
    d = d / np.linalg.norm(d)
    v = np.array([-d[1], d[0], 0.0])  # e_z x d
    c = d[2]
    if c <= -1 + 1e-12:
        raise ValueError("cannot look backwards (ray opposite to the optical axis)")
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


@dataclass(frozen=True)
class VirtualCamera:
    """An undistorted pinhole camera sharing the real camera's centre.

    Attributes:
        R_cam_virt: (3, 3) rotation, virtual-camera frame -> real camera frame.
        K: (3, 3) intrinsics of the virtual image [px].
        width, height: size of the virtual image [px].
    """

    R_cam_virt: np.ndarray
    K: np.ndarray
    width: int
    height: int

    # ------------------------------------------------------------------------------------------ constructors
    @classmethod
    def look_at_pixel(cls, camera: Camera, uv: np.ndarray, size: int | tuple[int, int], focal_px: float,
                      in_plane_rad: float = 0.0) -> "VirtualCamera":
        """A virtual camera whose optical axis goes through the (distorted) pixel ``uv`` of ``camera``.

        Args:
            camera: the real camera.
            uv: (2,) pixel in the real (distorted) image the virtual camera looks at.
            size: side (or (width, height)) of the virtual image [px]; the principal point is its centre.
            focal_px: focal length of the virtual camera [px].
            in_plane_rad: extra rotation of the virtual camera about its optical axis [rad] (augmentation).
        """
        w, h = (size, size) if isinstance(size, (int, np.integer)) else size
        ray = np.append(camera.pixels_to_normalized(np.asarray(uv, dtype=np.float64)), 1.0)
        R = rotation_z_to_ray(ray)
        if in_plane_rad:
            c, s = np.cos(in_plane_rad), np.sin(in_plane_rad)
            R = R @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        K = np.array([[focal_px, 0.0, (w - 1) / 2], [0.0, focal_px, (h - 1) / 2], [0.0, 0.0, 1.0]])
        return cls(R, K, int(w), int(h))

    @classmethod
    def covering_box(cls, camera: Camera, box_xyxy: np.ndarray, size: int, margin: float = 1.25,
                     in_plane_rad: float = 0.0, center_uv: np.ndarray | None = None) -> "VirtualCamera":
        """A square virtual camera looking at the centre of a box that it shows whole, with a margin.

        Args:
            camera: the real camera.
            box_xyxy: (4,) box (x0, y0, x1, y1) in real (distorted) pixels; may extend beyond the image.
            size: side of the virtual image [px].
            margin: the box's larger angular half-extent times ``margin`` fills half the crop.
            in_plane_rad: rotation about the virtual optical axis [rad].
            center_uv: look at this pixel instead of the box centre.
        """
        x0, y0, x1, y1 = np.asarray(box_xyxy, dtype=np.float64)
        centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2]) if center_uv is None else np.asarray(center_uv, float)
        unit = cls.look_at_pixel(camera, centre, size, 1.0, in_plane_rad)
        corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [(x0 + x1) / 2, y0], [(x0 + x1) / 2, y1],
                            [x0, (y0 + y1) / 2], [x1, (y0 + y1) / 2]])
        rays = np.concatenate([camera.pixels_to_normalized(corners), np.ones((len(corners), 1))], axis=1)
        rv = rays @ unit.R_cam_virt  # rows: R^T ray
        tan = np.abs(rv[:, :2] / rv[:, 2:3]).max()
        focal = (size / 2) / max(tan * margin, 1e-6)
        return cls.look_at_pixel(camera, centre, size, focal, in_plane_rad)

    # ------------------------------------------------------------------------------------------ geometry
    @property
    def focal_px(self) -> float:
        return float(self.K[0, 0])

    def homography(self, camera: Camera) -> np.ndarray:
        """(3, 3) homography from virtual pixels to UNDISTORTED real pixels: ``x_real ~ K R_cam_virt K_v^-1 x_v``.

        With a distortion-free camera it warps the image exactly (``cv2.warpPerspective`` with ``WARP_INVERSE_MAP``);
        with distortion use :meth:`warp`, which composes it with the distortion model.
        """
        return camera.K @ self.R_cam_virt @ np.linalg.inv(self.K)

    def source_pixels(self, camera: Camera) -> np.ndarray:
        """(height, width, 2) real (distorted) pixel seen by each virtual pixel."""
        u, v = np.meshgrid(np.arange(self.width, dtype=np.float64), np.arange(self.height, dtype=np.float64))
        return self.virtual_to_real_pixels(camera, np.stack([u, v], axis=-1))

    def warp(self, image: np.ndarray, camera: Camera, antialias: bool = True,
             border_value: float = 0.0) -> np.ndarray:
        """Resample the real image into the virtual camera (distortion handled).

        Args:
            image: (H, W) or (H, W, C) image from ``camera``.
            camera: the camera of ``image`` (use ``camera.resized`` for a resized image).
            antialias: when the crop shrinks the image by more than 2x, sample from a pyramid level instead
                (``cv2.pyrDown``) so that small details do not alias.
            border_value: value of pixels that fall outside the real image.
        Returns:
            (height, width[, C]) image, same dtype.
        """
        if image.shape[:2] != (camera.height, camera.width):
            raise ValueError(f"image is {image.shape[1]}x{image.shape[0]} but the camera is "
                             f"{camera.width}x{camera.height}")
        src_cam = camera
        scale = self.focal_px / camera.fx
        while antialias and scale < 0.5 and min(image.shape[:2]) > 32:
            image = cv2.pyrDown(image)
            src_cam = src_cam.resized(image.shape[1], image.shape[0])
            scale *= 2
        maps = self.source_pixels(src_cam).astype(np.float32)
        return cv2.remap(image, maps[..., 0], maps[..., 1], interpolation=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=border_value)

    def project(self, points_virt: np.ndarray) -> np.ndarray:
        """Project virtual-camera-frame points (..., 3) [m] to virtual pixels (..., 2)."""
        p = np.asarray(points_virt, dtype=np.float64)
        return np.stack([self.K[0, 0] * p[..., 0] / p[..., 2] + self.K[0, 2],
                         self.K[1, 1] * p[..., 1] / p[..., 2] + self.K[1, 2]], axis=-1)

    def _rays_in_camera(self, uv: np.ndarray) -> np.ndarray:
        """Rays (..., 3) in the real camera frame through virtual pixels ``uv`` (..., 2)."""
        uv = np.asarray(uv, dtype=np.float64)
        rays_v = np.stack([(uv[..., 0] - self.K[0, 2]) / self.K[0, 0], (uv[..., 1] - self.K[1, 2]) / self.K[1, 1],
                           np.ones(uv.shape[:-1])], axis=-1)
        return rays_v @ self.R_cam_virt.T

    def virtual_to_real_pixels(self, camera: Camera, uv: np.ndarray) -> np.ndarray:
        """Map virtual pixels (..., 2) to real (distorted) pixels (..., 2) of ``camera`` (the inverse of
        :meth:`real_to_virtual_pixels`)."""
        rays_c = self._rays_in_camera(uv)
        return camera.normalized_to_pixels(rays_c[..., :2] / rays_c[..., 2:3], distort=True)

    def pixels_in(self, other: "VirtualCamera", uv: np.ndarray) -> np.ndarray:
        """Map pixels (..., 2) of this virtual camera to the pixels of ``other`` (another virtual camera of the same
        real camera, e.g. the same box rolled about the optical axis): both are pinholes sharing the centre."""
        return other.project(self._rays_in_camera(uv) @ other.R_cam_virt)

    def real_to_virtual_pixels(self, camera: Camera, uv: np.ndarray) -> np.ndarray:
        """Map real (distorted) pixels (..., 2) to virtual pixels (..., 2)."""
        xy = camera.pixels_to_normalized(uv)
        rays = np.concatenate([xy, np.ones(xy.shape[:-1] + (1,))], axis=-1)
        return self.project(rays @ self.R_cam_virt)

    # ------------------------------------------------------------------------------------------ poses
    def pose_to_virtual(self, R_cam_body: np.ndarray, r_cam_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(R, r) in the real camera -> (R_virt, r_virt) in the virtual camera. (..., 3, 3), (..., 3)."""
        Rt = self.R_cam_virt.T
        return Rt @ np.asarray(R_cam_body), np.asarray(r_cam_m) @ self.R_cam_virt

    def pose_from_virtual(self, R_virt_body: np.ndarray, r_virt_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(R_virt, r_virt) in the virtual camera -> (R, r) in the real camera. (..., 3, 3), (..., 3)."""
        return self.R_cam_virt @ np.asarray(R_virt_body), np.asarray(r_virt_m) @ self.R_cam_virt.T
