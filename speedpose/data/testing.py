"""Tiny SPEED+-layout datasets written on the fly, for tests of everything that reads a SPEED+ root.

Each labelled image shows the convex hull of Tango's 11 projected keypoints, bright over a dark noisy background
(so that the image, the keypoints and the optional mask agree); unlabelled images show the same noise only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np

from speedpose.camera import Camera, speedplus_camera
from speedpose.io_utils import atomic_write_json
from speedpose.labels import Q_KEY, R_KEY, label_file
from speedpose.tango import project_keypoints


def hull_mask(camera: Camera, q_wxyz: np.ndarray, r_cam_m: np.ndarray) -> np.ndarray:
    """uint8 (H, W) 0/255: the filled convex hull of the projected keypoints (full resolution)."""
    uv = project_keypoints(camera, np.asarray(q_wxyz, float), np.asarray(r_cam_m, float))
    uv = np.clip(uv, -4 * camera.width, 4 * camera.width)
    hull = cv2.convexHull(np.round(uv).astype(np.int32))
    mask = np.zeros((camera.height, camera.width), np.uint8)
    cv2.fillConvexPoly(mask, hull, 255)
    return mask


def write_tiny_speedplus(root: str | Path, splits: Mapping[tuple[str, str], Sequence[Mapping]],
                         camera: Camera | None = None, masks: bool = False, seed: int = 0,
                         jpeg_quality: int = 90) -> Path:
    """Write camera.json, label files, images (and masks) in the SPEED+ layout under ``root``.

    Args:
        root: folder to create.
        splits: ``{(domain, split): [label record, ...]}`` in the SPEED+ schema (records without pose keys are
            unlabelled and written as such).
        camera: the camera (default: the SPEED+ camera).
        masks: also write ``<domain>/masks/<filename>`` (PNG data under the JPEG's name, lossless 0/255).
        seed: background noise seed.
    Returns:
        ``root``.
    """
    root = Path(root)
    camera = camera or speedplus_camera()
    atomic_write_json(root / "camera.json", camera.to_json_dict())
    rng = np.random.default_rng(seed)
    for (domain, split), recs in splits.items():
        path = label_file(root, domain, split)
        atomic_write_json(path, [dict(r) for r in recs])
        img_dir = root / domain / "images"
        img_dir.mkdir(parents=True, exist_ok=True)
        for rec in recs:
            base = rng.integers(0, 40, size=(camera.height // 8, camera.width // 8), dtype=np.uint8)
            img = cv2.resize(base, (camera.width, camera.height), interpolation=cv2.INTER_LINEAR)
            mask = None
            if Q_KEY in rec:
                mask = hull_mask(camera, rec[Q_KEY], rec[R_KEY])
                img = np.where(mask > 0, np.uint8(200), img)
            cv2.imwrite(str(img_dir / rec["filename"]), img, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            if masks:
                mdir = root / domain / "masks"
                mdir.mkdir(parents=True, exist_ok=True)
                m = mask if mask is not None else np.zeros((camera.height, camera.width), np.uint8)
                ok, buf = cv2.imencode(".png", m)
                (mdir / rec["filename"]).write_bytes(buf.tobytes())
    return root
