"""Random poses with the statistics of the released SPEED+ labels (SPEEDPLUS.md section 2).

Measured on the released labels (lightbox 6,740, sunlamp 2,791, synthetic validation 11,994): distance |r| about
uniform on [2.2, 10] m; the body origin's direction x/z and y/z close to normal with standard deviations 0.028 and
0.048, never beyond 0.07 and 0.17; rotations uniform; about 15% of images with a keypoint outside the frame;
quaternion signs w < 0 in about 50% of synthetic and 30% of lightbox/sunlamp labels.
"""

from __future__ import annotations

import numpy as np

from speedpose.geometry.rotations import canonical_quat_wxyz, random_quat_wxyz

DISTANCE_RANGE_M = (2.2, 10.0)
X_OVER_Z_STD, X_OVER_Z_MAX = 0.028, 0.07
Y_OVER_Z_STD, Y_OVER_Z_MAX = 0.048, 0.17
#: fraction of labels with w < 0 per domain in the released files
NEGATIVE_W_FRACTION = {"synthetic": 0.5, "lightbox": 0.3, "sunlamp": 0.3}


def _truncated_normal(rng: np.random.Generator, n: int, std: float, limit: float) -> np.ndarray:
    out = rng.normal(0.0, std, n)
    bad = np.abs(out) > limit
    while bad.any():
        out[bad] = rng.normal(0.0, std, int(bad.sum()))
        bad = np.abs(out) > limit
    return out


def sample_poses(n: int, rng: np.random.Generator, domain: str = "synthetic") -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` SPEED+-like poses.

    Args:
        n: number of poses.
        rng: random generator.
        domain: sets the fraction of quaternions with w < 0 (:data:`NEGATIVE_W_FRACTION`).
    Returns:
        q_wxyz: (n, 4) unit quaternions (``q_vbs2tango_true``), uniform rotations;
        r_cam_m: (n, 3) body origin in the camera frame [m].
    """
    q = canonical_quat_wxyz(random_quat_wxyz(n, rng))
    flip = rng.random(n) < NEGATIVE_W_FRACTION[domain]
    q = np.where(flip[:, None], -q, q)
    d = rng.uniform(*DISTANCE_RANGE_M, n)
    a = _truncated_normal(rng, n, X_OVER_Z_STD, X_OVER_Z_MAX)
    b = _truncated_normal(rng, n, Y_OVER_Z_STD, Y_OVER_Z_MAX)
    direction = np.stack([a, b, np.ones(n)], axis=1)
    r = d[:, None] * direction / np.linalg.norm(direction, axis=1, keepdims=True)
    return q, r
