"""Rendering through a virtual camera: exactly the view a crop of the pipeline shows, at the crop's resolution.

A crop of the pose pipeline is the real frame resampled into a :class:`~speedpose.virtual_camera.VirtualCamera`
(an ideal pinhole that shares the real camera's centre).  Rendering the scene straight through that pinhole gives the
same geometry without rendering (and then discarding) the 1920x1200 frame: about S^2 instead of 2.3 million pixels.
What the real crop would not show is blanked: virtual pixels whose ray falls outside the real image (a spacecraft cut
by the frame edge is cut in the crop too).
"""

from __future__ import annotations

import numpy as np

from speedpose.camera import Camera
from speedpose.geometry.rotations import matrix_to_quat_wxyz
from speedpose.render.distortion import pinhole_warp
from speedpose.render.domains import Frame, render_frame
from speedpose.virtual_camera import VirtualCamera


def virtual_pinhole(vc: VirtualCamera) -> Camera:
    """The undistorted :class:`Camera` of a virtual camera's image."""
    return Camera(K=vc.K, width=vc.width, height=vc.height)


def real_image_coverage(vc: VirtualCamera, camera: Camera) -> np.ndarray:
    """(height, width) bool: virtual pixels whose ray lands inside the real (distorted) image of ``camera``."""
    uv = vc.source_pixels(camera)
    return (uv[..., 0] >= -0.5) & (uv[..., 0] < camera.width - 0.5) & (uv[..., 1] >= -0.5) \
        & (uv[..., 1] < camera.height - 0.5)


def render_virtual_view(camera: Camera, vc: VirtualCamera, R_cam_body: np.ndarray, r_cam_m: np.ndarray,
                        domain: str, rng: np.random.Generator, earth: bool | None = None) -> Frame:
    """Render a domain's image of Tango at pose ``(R_cam_body, r_cam_m)`` (real camera frame) as seen by ``vc``.

    Args:
        camera: the real camera (only its field of view is used: pixels outside it are black, mask 0).
        vc: the virtual camera (its size is the output size).
        R_cam_body: (3, 3); r_cam_m: (3,) [m], real camera frame.
        domain, rng, earth: as :func:`speedpose.render.render_frame` (lighting directions are drawn in the virtual
            camera's frame; the domain recipes are isotropic about the spacecraft, so their statistics are those of
            the full frames).
    Returns:
        A :class:`~speedpose.render.Frame` of the virtual image; keypoints in virtual pixels.
    """
    R_virt, r_virt = vc.pose_to_virtual(np.asarray(R_cam_body, dtype=np.float64), np.asarray(r_cam_m, float))
    frame = render_frame(pinhole_warp(virtual_pinhole(vc)), matrix_to_quat_wxyz(R_virt), r_virt, domain, rng, earth)
    inside = real_image_coverage(vc, camera)
    if inside.all():
        return frame
    image, mask = frame.image.copy(), frame.mask.copy()
    image[~inside] = 0
    mask[~inside] = 0
    return Frame(image, mask, frame.keypoints_uv, frame.keypoints_visible, frame.earth)
