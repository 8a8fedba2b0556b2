"""Wireframe and axes overlays of a pose on a SPEED+ image (OpenCV drawing, BGR uint8 out).

The wireframe is Tango's outline in the body frame [m]: the body box, the solar-panel plate on +z and the three
antennas ending at keypoints 9-11 (dimensions from the public description of the spacecraft).  Each edge is sampled
and projected WITH the camera's distortion, so the drawing matches the image up to its borders.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from speedpose.camera import Camera
from speedpose.geometry.rotations import quat_wxyz_to_matrix
from speedpose.tango import project_keypoints, tango_keypoints_body

#: BGR colours of the overlays
COLOR_PRED = (0, 200, 255)   # orange-yellow
COLOR_TRUE = (80, 220, 80)   # green
COLOR_KEYPOINT = (255, 0, 255)  # magenta: predicted keypoints
AXIS_COLORS = ((60, 60, 255), (60, 220, 60), (255, 120, 40))  # body x red, y green, z blue
#: samples per wireframe edge (distortion bends long edges near the border)
EDGE_SAMPLES = 12


@lru_cache(maxsize=1)
def wireframe_edges_body() -> np.ndarray:
    """(E, 2, 3) segments of Tango's wireframe in the body frame [m]."""
    x0, x1, y0, y1, z0, z1 = -0.366, 0.366, -0.261, 0.302, 0.0, 0.297
    box = np.array([[x, y, z] for z in (z0, z1) for y in (y0, y1) for x in (x0, x1)])
    box_edges = [(0, 1), (2, 3), (0, 2), (1, 3), (4, 5), (6, 7), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7)]
    kp = tango_keypoints_body()
    panel = kp[:4]  # top corners of the solar panel
    segs = [(box[a], box[b]) for a, b in box_edges]
    segs += [(panel[k], panel[(k + 1) % 4]) for k in range(4)]
    segs += [(np.array([-0.300, 0.348, 0.25]), kp[8]), (np.array([0.300, 0.348, 0.25]), kp[9]),
             (np.array([0.306, -0.299, 0.25]), kp[10])]
    edges = np.array([[a, b] for a, b in segs], dtype=np.float64)
    edges.setflags(write=False)
    return edges


def project_wireframe(camera: Camera, q_wxyz: np.ndarray, r_cam_m: np.ndarray) -> list[np.ndarray]:
    """Polylines of the wireframe in pixels of ``camera`` for one pose. -> list of (EDGE_SAMPLES, 2) [px];
    edges with a point behind the camera are left out."""
    R = quat_wxyz_to_matrix(np.asarray(q_wxyz, dtype=np.float64))
    t = np.linspace(0.0, 1.0, EDGE_SAMPLES)[None, :, None]
    e = wireframe_edges_body()
    pts_body = e[:, :1] * (1 - t) + e[:, 1:] * t  # (E, S, 3)
    pts_cam = pts_body @ R.T + np.asarray(r_cam_m, dtype=np.float64)
    lines = []
    for seg in pts_cam:
        if (seg[:, 2] <= 1e-3).any():
            continue
        lines.append(camera.project(seg))
    return lines


def _to_bgr(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()


def _poly(canvas: np.ndarray, uv: np.ndarray, color, thickness: int) -> None:
    if not np.isfinite(uv).all() or np.abs(uv).max() > 1e5:
        return
    cv2.polylines(canvas, [np.round(uv * 16).astype(np.int32)], False, color, thickness, cv2.LINE_AA, shift=4)


def draw_pose(canvas: np.ndarray, camera: Camera, q_wxyz: np.ndarray, r_cam_m: np.ndarray, color,
              thickness: int = 2, axes_m: float | None = None) -> np.ndarray:
    """Draw the wireframe (and, when ``axes_m`` is given, the body axes of that length [m]) on ``canvas`` (BGR,
    the size of ``camera``'s image), in place; returns it."""
    for line in project_wireframe(camera, q_wxyz, r_cam_m):
        _poly(canvas, line, color, thickness)
    if axes_m:
        R = quat_wxyz_to_matrix(np.asarray(q_wxyz, dtype=np.float64))
        r = np.asarray(r_cam_m, dtype=np.float64)
        t = np.linspace(0.0, 1.0, EDGE_SAMPLES)[:, None]
        for k in range(3):
            seg = r + t * (axes_m * R[:, k])
            if (seg[:, 2] > 1e-3).all():
                _poly(canvas, camera.project(seg), AXIS_COLORS[k], thickness + 1)
    return canvas


def zoom_box(boxes: list[np.ndarray], width: int, height: int, margin: float = 1.3, min_side: float = 96.0
             ) -> tuple[int, int, int, int]:
    """A square (x0, y0, x1, y1) integer box [px] around the union of finite ``boxes`` (x0, y0, x1, y1), enlarged
    by ``margin`` and at least ``min_side`` wide; the whole image when no box is finite."""
    finite = [np.asarray(b, float) for b in boxes if b is not None and np.isfinite(b).all()]
    if not finite:
        return 0, 0, width, height
    b = np.stack(finite)
    lo, hi = b[:, :2].min(axis=0), b[:, 2:].max(axis=0)
    lo, hi = np.maximum(lo, [-width, -height]), np.minimum(hi, [2 * width, 2 * height])
    c = (lo + hi) / 2
    side = max(float((hi - lo).max()) * margin, min_side)
    x0, y0 = int(round(c[0] - side / 2)), int(round(c[1] - side / 2))
    return x0, y0, x0 + int(round(side)), y0 + int(round(side))


def pose_overlay(image: np.ndarray, camera: Camera, q_pred_wxyz: np.ndarray | None, r_pred_m: np.ndarray | None,
                 q_true_wxyz: np.ndarray | None = None, r_true_m: np.ndarray | None = None,
                 box_pred_xyxy: np.ndarray | None = None, text: str | None = None, out_height: int = 480,
                 axes_m: float | None = 0.4, kp_pred_uv: np.ndarray | None = None,
                 kp_pred_conf: np.ndarray | None = None) -> np.ndarray:
    """The full frame and a zoom around the spacecraft, side by side, with the predicted (orange, with body axes)
    and the true (green) wireframes; with ``kp_pred_uv``, the predicted keypoints as crosses (magenta, their size
    growing with the confidence) next to the true keypoints' projections (green dots).

    Args:
        image: uint8 (H, W) grayscale or (H, W, 3) BGR, the full-resolution frame of ``camera``.
        q_*_wxyz, r_*_m: (4,), (3,) poses (camera <- body, [m]); the true pose may be None (unlabelled).
        box_pred_xyxy: (4,) the localiser's box [px], drawn as a thin rectangle.
        kp_pred_uv, kp_pred_conf: (11, 2) predicted keypoints [px of ``camera``] and (11,) confidences in [0, 1].
        text: a caption drawn on the frame.
        out_height: height of the returned image [px].
    Returns:
        uint8 (out_height, W', 3) BGR.
    """
    if image.shape[:2] != (camera.height, camera.width):
        raise ValueError(f"image {image.shape[:2]} does not match the camera ({camera.height}, {camera.width})")
    canvas = _to_bgr(image)
    thick = max(1, int(round(camera.width / 640)))
    boxes = []
    if box_pred_xyxy is not None and np.isfinite(box_pred_xyxy).all():
        b = np.round(np.asarray(box_pred_xyxy, float)).astype(int)
        cv2.rectangle(canvas, (int(b[0]), int(b[1])), (int(b[2]), int(b[3])), (200, 200, 200), 1, cv2.LINE_AA)
        boxes.append(box_pred_xyxy)
    for q, r, col, ax in ((q_true_wxyz, r_true_m, COLOR_TRUE, None), (q_pred_wxyz, r_pred_m, COLOR_PRED, axes_m)):
        if q is None or r is None:
            continue
        draw_pose(canvas, camera, q, r, col, thick, ax)
        pts = np.concatenate(project_wireframe(camera, q, r) or [np.full((1, 2), np.nan)])
        if np.isfinite(pts).all():
            boxes.append(np.concatenate([pts.min(axis=0), pts.max(axis=0)]))
    if kp_pred_uv is not None:
        draw_keypoints(canvas, kp_pred_uv, kp_pred_conf,
                       None if q_true_wxyz is None or r_true_m is None
                       else project_keypoints(camera, np.asarray(q_true_wxyz), np.asarray(r_true_m)), thick)
    x0, y0, x1, y1 = zoom_box(boxes, camera.width, camera.height)
    zoom = np.zeros((y1 - y0, x1 - x0, 3), dtype=np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, camera.width), min(y1, camera.height)
    if sx1 > sx0 and sy1 > sy0:
        zoom[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = canvas[sy0:sy1, sx0:sx1]
    cv2.rectangle(canvas, (x0, y0), (x1, y1), (255, 255, 255), thick, cv2.LINE_AA)
    frame = cv2.resize(canvas, (int(round(camera.width * out_height / camera.height)), out_height),
                       interpolation=cv2.INTER_AREA)
    interp = cv2.INTER_AREA if zoom.shape[0] > out_height else cv2.INTER_LINEAR
    zoom = cv2.resize(zoom, (out_height, out_height), interpolation=interp)
    if text:
        for k, line in enumerate(text.split("\n")):
            org = (8, 22 + 22 * k)
            (tw, th), _ = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, 0.55, 1)
            cv2.rectangle(frame, (4, org[1] - th - 5), (12 + tw, org[1] + 6), (0, 0, 0), -1)  # readable on Earth
            cv2.putText(frame, line, org, cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    sep = np.full((out_height, 4, 3), 255, dtype=np.uint8)
    return np.concatenate([frame, sep, zoom], axis=1)


def draw_keypoints(canvas: np.ndarray, uv_pred: np.ndarray, conf: np.ndarray | None, uv_true: np.ndarray | None,
                   thick: int = 1) -> None:
    """Predicted keypoints (11, 2) [px] as magenta crosses whose arm grows with the confidence (3-10 x ``thick``
    px), the true ones (11, 2) as green dots, joined to their prediction by a thin line; in place on BGR
    ``canvas``."""
    conf = np.ones(len(uv_pred)) if conf is None else np.asarray(conf, float)
    for k, p in enumerate(np.asarray(uv_pred, float)):
        if not np.isfinite(p).all():
            continue
        c = (int(round(p[0])), int(round(p[1])))
        if uv_true is not None and np.isfinite(uv_true[k]).all():
            t = (int(round(uv_true[k][0])), int(round(uv_true[k][1])))
            cv2.line(canvas, c, t, COLOR_TRUE, 1, cv2.LINE_AA)
            cv2.circle(canvas, t, 2 * thick, COLOR_TRUE, -1, cv2.LINE_AA)
        arm = int(round(thick * (3 + 7 * float(np.clip(conf[k], 0, 1)))))
        cv2.drawMarker(canvas, c, COLOR_KEYPOINT, cv2.MARKER_CROSS, 2 * arm, thick, cv2.LINE_AA)


def write_png(path, image_bgr: np.ndarray) -> None:
    """Write a PNG atomically (nothing half-written)."""
    from speedpose.io_utils import atomic_path

    ok, buf = cv2.imencode(".png", image_bgr)
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())
