"""Crop geometry of the pose pipeline: which virtual camera looks at the spacecraft, how the translation is
encoded relative to it, and how the box is jittered during training.

The crop model sees the spacecraft through a :class:`~speedpose.virtual_camera.VirtualCamera` that looks at the centre
of its box and is zoomed so that the box (times ``margin``) fills the crop.  Its targets are:

* rotation ``R_virt = R_cam_virt^T R`` (the crop is a true perspective view, so the label stays exact);
* translation, encoded as ``t_enc = (du, dv, log(z_virt / z0))``: the offset of the body origin's projection from the
  crop centre in units of the crop side, and its depth along the virtual optical axis relative to the box-size prior
  ``z0 = f_virt * TANGO_SIZE_M / (size / margin)`` (the depth at which Tango's diameter would span the box).
  :func:`decode_translation` turns a prediction back into ``r`` [m] in the real camera frame.

:func:`refined_boxes` gives the box to crop again around a predicted pose (``model.refine_passes``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speedpose.camera import Camera
from speedpose.tango import TANGO_SIZE_M, tango_keypoints_body
from speedpose.virtual_camera import VirtualCamera

#: (11, 3) the Tango keypoints in the body frame [m]
TANGO_KP = tango_keypoints_body()


@dataclass(frozen=True)
class CropSpec:
    """How crops are taken.

    Attributes:
        size: side of the square crop [px].
        margin: the box's larger angular half-extent times ``margin`` fills half the crop (>= 1).
    """

    size: int = 224
    margin: float = 1.3


def crop_camera(camera: Camera, box_xyxy: np.ndarray, spec: CropSpec, in_plane_rad: float = 0.0) -> VirtualCamera:
    """The virtual camera of a crop around ``box_xyxy`` (x0, y0, x1, y1) [real, distorted px]."""
    return VirtualCamera.covering_box(camera, box_xyxy, spec.size, spec.margin, in_plane_rad)


def depth_prior_m(vc: VirtualCamera, spec: CropSpec) -> float:
    """``z0`` [m]: the depth at which Tango's diameter spans the box that the crop frames."""
    return vc.focal_px * TANGO_SIZE_M / (spec.size / spec.margin)


def encode_translation(vc: VirtualCamera, r_cam_m: np.ndarray, spec: CropSpec) -> np.ndarray:
    """``r`` [m] in the real camera -> ``(du, dv, log(z_virt / z0))`` (3,) for the crop of ``vc``."""
    r_virt = np.asarray(r_cam_m, dtype=np.float64) @ vc.R_cam_virt
    uv = vc.project(r_virt)
    return np.array([(uv[0] - vc.K[0, 2]) / spec.size, (uv[1] - vc.K[1, 2]) / spec.size,
                     np.log(r_virt[2] / depth_prior_m(vc, spec))])


#: |log(z / z0)| beyond this is no estimate (an untrained head): clamped so that poses stay finite
MAX_LOG_DEPTH_RATIO = 5.0


def decode_translation(vc: VirtualCamera, t_enc: np.ndarray, spec: CropSpec) -> np.ndarray:
    """Inverse of :func:`encode_translation`: (3,) -> ``r`` [m] in the real camera frame (3,).

    ``log(z / z0)`` is clamped to +-:data:`MAX_LOG_DEPTH_RATIO` (a factor of 148) so that an untrained head still
    gives a finite pose."""
    du, dv, log_z = np.asarray(t_enc, dtype=np.float64)
    z = depth_prior_m(vc, spec) * np.exp(np.clip(log_z, -MAX_LOG_DEPTH_RATIO, MAX_LOG_DEPTH_RATIO))
    ray = np.array([du * spec.size / vc.K[0, 0], dv * spec.size / vc.K[1, 1], 1.0])
    return (z * ray) @ vc.R_cam_virt.T


def jitter_box(box_xyxy: np.ndarray, rng: np.random.Generator, spec: CropSpec,
               scale_range: tuple[float, float] = (0.9, 1.2), shift_frac: float = 0.1) -> np.ndarray:
    """A randomly scaled and shifted copy of a box, to train for detector error.

    The box side is scaled by a factor in ``scale_range`` and its centre moved by up to ``shift_frac`` of the side
    (each axis), but never so far that the ORIGINAL box leaves the crop: with the crop framing the jittered box
    times ``margin``, the shift is clamped to ``(scale * margin - 1) / 2`` of the side.

    Args:
        box_xyxy: (4,) box [px].
        rng: numpy generator.
    Returns:
        (4,) jittered box [px].
    """
    x0, y0, x1, y1 = np.asarray(box_xyxy, dtype=np.float64)
    side = np.array([x1 - x0, y1 - y0])
    scale = max(rng.uniform(*scale_range), min_jitter_scale(spec))
    # the crop is square and frames the larger side: the original box stays inside when
    # |shift| + side/2 <= scale * max(side) * margin / 2 on each axis
    room = np.maximum(scale * side.max() * spec.margin * 0.97 / 2 - side / 2, 0.0)  # 3%: perspective, distortion
    shift = np.clip(rng.uniform(-shift_frac, shift_frac, 2) * side.max(), -room, room)
    return scale_boxes(box_xyxy, scale) + np.tile(shift, 2)


def min_jitter_scale(spec: CropSpec) -> float:
    """The smallest box scale :func:`jitter_box` draws: below it the spacecraft could not fit in the crop at all
    (3% kept for perspective and distortion)."""
    return 1.0 / (0.97 * spec.margin)


def mean_jitter_scale(scale_range: tuple[float, float], spec: CropSpec) -> float:
    """The mean box scale that :func:`jitter_box` draws: E[max(U(lo, hi), :func:`min_jitter_scale`)] (the framing of
    the average training crop)."""
    lo, hi = float(scale_range[0]), float(scale_range[1])
    floor = min_jitter_scale(spec)
    if hi - lo < 1e-12 or floor >= hi:
        return max((lo + hi) / 2, floor)
    if floor <= lo:
        return (lo + hi) / 2
    return (floor * (floor - lo) + (hi * hi - floor * floor) / 2) / (hi - lo)


def scale_boxes(boxes_xyxy: np.ndarray, scale: float) -> np.ndarray:
    """Boxes (..., 4) (x0, y0, x1, y1) [px] scaled by ``scale`` about their centres."""
    b = np.asarray(boxes_xyxy, dtype=np.float64)
    c = (b[..., :2] + b[..., 2:]) / 2
    half = (b[..., 2:] - b[..., :2]) * (scale / 2)
    return np.concatenate([c - half, c + half], axis=-1)


def refined_boxes(camera: Camera, R_cam_body: np.ndarray, r_cam_m: np.ndarray, fallback_xyxy: np.ndarray
                  ) -> np.ndarray:
    """The keypoint boxes [full-resolution px, unclipped] of predicted poses (B, 3, 3), (B, 3) [m]: where to crop
    again.  A pose whose keypoints are not all at least 0.5 m in front of the camera, or whose box is degenerate,
    keeps its ``fallback_xyxy`` box (B, 4)."""
    kp_cam = np.einsum("bij,kj->bki", R_cam_body, TANGO_KP) + r_cam_m[:, None, :]
    ok = (kp_cam[..., 2] > 0.5).all(axis=1)
    uv = camera.project(np.where(ok[:, None, None], kp_cam, np.array([0.0, 0.0, 1.0])))
    boxes = np.concatenate([uv.min(axis=1), uv.max(axis=1)], axis=1)
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    ok &= np.isfinite(boxes).all(axis=1) & (side > 4) & (side < 20 * max(camera.width, camera.height))
    return np.where(ok[:, None], boxes, fallback_xyxy)


def source_reduction(split, vc: VirtualCamera) -> int:
    """Which image of a record :func:`crop_source` reads for a crop through ``vc``: 0 = the preprocessed image, 4 or
    2 = a libjpeg-reduced decode (1/4 or 1/2 size), 1 = the full-resolution original.  ``split``: a
    :class:`speedpose.data.loader.PreprocessedSplit`."""
    full, small = split.camera, split.camera_small
    scale = vc.focal_px / full.fx  # crop pixels per full-resolution pixel
    if scale <= min(small.fx / full.fx, small.fy / full.fy):
        return 0
    return next((reduce for reduce in (4, 2) if scale <= 1.0 / reduce), 1)


def crop_source(split, i: int, vc: VirtualCamera) -> tuple[np.ndarray, Camera]:
    """The cheapest image of record ``i`` that still has the resolution a crop through ``vc`` needs
    (:func:`source_reduction`).

    A crop that shrinks the spacecraft (virtual focal well below the real one) is taken from the preprocessed image
    (no JPEG decoding) or from a libjpeg-reduced decode (1/2 or 1/4 size, 4-16x fewer pixels); a distant, small
    spacecraft is taken from the full-resolution original.  The sampling density of the source is never below the
    crop's own (so no detail is lost), and :meth:`VirtualCamera.warp` low-passes larger reductions.

    Args:
        split: a :class:`speedpose.data.loader.PreprocessedSplit`.
        i: record index.
        vc: the crop's virtual camera.
    Returns:
        (uint8 (H, W) image, its camera).
    """
    from speedpose.data.image_store import read_gray

    reduction = source_reduction(split, vc)
    if reduction == 0:
        return split.image(i), split.camera_small
    for reduce in (4, 2):
        if reduce <= reduction:  # a decode that fails (not a JPEG) falls back to the next finer one
            img = read_gray(split.image_path(i), reduce)
            if img is not None:
                return img, split.camera.resized(img.shape[1], img.shape[0])
    return split.full_image(i), split.camera
