"""Z-buffered triangle rasterisation: OpenCV fills each triangle's pixels, numpy runs the depth test.

Pixel convention: pixel ``(row i, column j)`` has its centre at image coordinates ``(x, y) = (j, i)`` (OpenCV).
``cv2.fillConvexPoly`` (with sub-pixel vertex precision) decides which pixels a triangle covers; the depth key is
the triangle's plane evaluated at the pixel centre.  Pixels along an edge may be claimed by both neighbours; the depth
test settles the tie, so closed meshes have no cracks.
"""

from __future__ import annotations

import cv2
import numpy as np

#: sub-pixel bits of the vertex positions given to OpenCV's polygon fill
FILL_SHIFT = 4


def rasterize(tri_xy: np.ndarray, tri_key: np.ndarray, height: int, width: int,
              empty_key: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise triangles with a depth test that keeps the LARGEST interpolated key.

    The key is interpolated linearly in image space, so pass ``1 / z`` for a perspective camera (affine in the
    image) and the distance towards the viewer for an orthographic one.

    Args:
        tri_xy: (F, 3, 2) corner positions in pixel coordinates (x right, y down).
        tri_key: (F, 3) depth key at the corners (larger = nearer).
        height, width: size of the target buffer in pixels.
        empty_key: key of uncovered pixels (must be smaller than every triangle's key).
    Returns:
        key: (height, width) float32 interpolated key of the nearest triangle (``empty_key`` where uncovered);
        face: (height, width) int32 index of the nearest triangle, -1 where uncovered.
    """
    key = np.full((height, width), empty_key, dtype=np.float32)
    face = np.full((height, width), -1, dtype=np.int32)
    tri_xy = np.asarray(tri_xy, dtype=np.float64)
    tri_key = np.asarray(tri_key, dtype=np.float64)
    lo = np.floor(tri_xy.min(axis=1)).astype(np.int64)
    hi = np.ceil(tri_xy.max(axis=1)).astype(np.int64)
    lo = np.maximum(lo, 0)
    hi[:, 0] = np.minimum(hi[:, 0], width - 1)
    hi[:, 1] = np.minimum(hi[:, 1], height - 1)
    # the key's plane k(x, y) = k0 + gx * x + gy * y of every triangle
    a, b, c = tri_xy[:, 0], tri_xy[:, 1], tri_xy[:, 2]
    e1, e2 = b - a, c - a
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    dk1, dk2 = tri_key[:, 1] - tri_key[:, 0], tri_key[:, 2] - tri_key[:, 0]
    ok = np.abs(det) > 1e-9
    safe = np.where(ok, det, 1.0)
    gx = (dk1 * e2[:, 1] - dk2 * e1[:, 1]) / safe
    gy = (dk2 * e1[:, 0] - dk1 * e2[:, 0]) / safe
    visible = np.nonzero(ok & (lo[:, 0] <= hi[:, 0]) & (lo[:, 1] <= hi[:, 1]))[0]
    scale = float(1 << FILL_SHIFT)
    for f in visible:
        x0, y0 = int(lo[f, 0]), int(lo[f, 1])
        x1, y1 = int(hi[f, 0]), int(hi[f, 1])
        mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
        pts = np.rint((tri_xy[f] - (x0, y0)) * scale).astype(np.int32)
        cv2.fillConvexPoly(mask, pts, 1, lineType=cv2.LINE_8, shift=FILL_SHIFT)
        # plane at the pixel centres of the box, relative to corner a
        kx = (gx[f] * (np.arange(x0, x1 + 1) - a[f, 0])).astype(np.float32)
        ky = (tri_key[f, 0] + gy[f] * (np.arange(y0, y1 + 1) - a[f, 1])).astype(np.float32)
        k = ky[:, None] + kx[None, :]
        sub_key = key[y0:y1 + 1, x0:x1 + 1]
        upd = (mask > 0) & (k > sub_key)
        sub_key[upd] = k[upd]
        face[y0:y1 + 1, x0:x1 + 1][upd] = f
    return key, face
