"""The Tango spacecraft: its 11 keypoints, their projection and the 2D box they span."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from speedpose.camera import Camera


@lru_cache(maxsize=1)
def _keypoints() -> np.ndarray:
    text = resources.files("speedpose").joinpath("resources/tango_keypoints.json").read_text(encoding="utf-8")
    kp = np.asarray(json.loads(text)["keypoints"], dtype=np.float64)
    kp.setflags(write=False)
    return kp


def tango_keypoints_body() -> np.ndarray:
    """(11, 3) Tango keypoints in the body frame [m] (read-only): 1-4 panel corners, 5-8 body corners, 9-11 antennas."""
    return _keypoints()


#: characteristic size of Tango used as the depth prior [m]: the diameter of its keypoint set
TANGO_SIZE_M = float(np.linalg.norm(_keypoints()[:, None] - _keypoints()[None], axis=-1).max())


def project_keypoints(camera: Camera, q_wxyz: np.ndarray, r_cam_m: np.ndarray, distort: bool = True) -> np.ndarray:
    """Pixels of the 11 keypoints for poses ``(q, r)``: (..., 4), (..., 3) -> (..., 11, 2)."""
    return camera.project_body_points(tango_keypoints_body(), q_wxyz, r_cam_m, distort=distort)


@dataclass(frozen=True)
class KeypointBox:
    """The 2D box of projected keypoints.

    Attributes:
        unclipped: (..., 4) (x0, y0, x1, y1) [px], may extend beyond the image.
        clipped: (..., 4) the same box clipped to the image ``[0, W-1] x [0, H-1]``.
        truncated: (...) True where at least one keypoint lies outside the image.
    """

    unclipped: np.ndarray
    clipped: np.ndarray
    truncated: np.ndarray


def keypoint_box(uv: np.ndarray, width: int, height: int) -> KeypointBox:
    """Box of projected keypoints ``uv`` (..., K, 2) in an image of ``width x height`` pixels."""
    uv = np.asarray(uv, dtype=np.float64)
    unclipped = np.concatenate([uv.min(axis=-2), uv.max(axis=-2)], axis=-1)
    lo = np.array([0.0, 0.0, 0.0, 0.0])
    hi = np.array([width - 1.0, height - 1.0, width - 1.0, height - 1.0])
    clipped = np.clip(unclipped, lo, hi)
    inside = (uv[..., 0] >= -0.5) & (uv[..., 0] < width - 0.5) & (uv[..., 1] >= -0.5) & (uv[..., 1] < height - 0.5)
    return KeypointBox(unclipped, clipped, ~inside.all(axis=-1))
