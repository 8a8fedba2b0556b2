"""Draw the Tango keypoints projected with a label file over SPEED+ images (developer check of conventions).

Colours: green = correct model (R(q) p + r, with distortion); red = distortion ignored; blue = R transposed.
Writes one PNG per image, and optionally zoomed crops around each keypoint (``--zoom``), to inspect by eye.

    python tools/overlay_keypoints.py ../shared/speedplus-real-sample lightbox --out /tmp/overlays --zoom
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from speedpose.camera import load_camera
from speedpose.geometry.rotations import quat_wxyz_to_matrix
from speedpose.labels import label_file, read_labels
from speedpose.tango import tango_keypoints_body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path)
    ap.add_argument("domain")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--zoom", action="store_true", help="also write 120x120 crops around each keypoint, x3")
    args = ap.parse_args()
    cam = load_camera(args.root / "camera.json")
    kp = tango_keypoints_body()
    args.out.mkdir(parents=True, exist_ok=True)
    for lab in read_labels(label_file(args.root, args.domain, "test" if args.domain != "synthetic" else None)):
        img = cv2.imread(str(args.root / args.domain / "images" / lab.filename), cv2.IMREAD_GRAYSCALE)
        vis = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        R = quat_wxyz_to_matrix(lab.q_wxyz)
        good = cam.project(kp @ R.T + lab.r_cam_m)
        nodist = cam.project(kp @ R.T + lab.r_cam_m, distort=False)
        transposed = cam.project(kp @ R + lab.r_cam_m)
        for pts, col in ((nodist, (0, 0, 255)), (transposed, (255, 0, 0)), (good, (0, 255, 0))):
            for i, (u, v) in enumerate(pts):
                if -1e4 < u < 1e4 and -1e4 < v < 1e4:
                    cv2.circle(vis, (int(round(u)), int(round(v))), 6, col, 2)
                    if col == (0, 255, 0):
                        cv2.putText(vis, str(i + 1), (int(u) + 8, int(v) - 8), cv2.FONT_HERSHEY_SIMPLEX, 1.0, col, 2)
        stem = Path(lab.filename).stem
        cv2.imwrite(str(args.out / f"{stem}_overlay.png"), cv2.resize(vis, (960, 600), interpolation=cv2.INTER_AREA))
        if args.zoom:
            for i, (u, v) in enumerate(good):
                x, y = int(round(u)), int(round(v))
                if 60 <= x < cam.width - 60 and 60 <= y < cam.height - 60:
                    crop = cv2.cvtColor(img[y - 60:y + 60, x - 60:x + 60], cv2.COLOR_GRAY2BGR)
                    crop = cv2.resize(crop, (360, 360), interpolation=cv2.INTER_NEAREST)
                    cv2.drawMarker(crop, (181, 181), (0, 255, 0), cv2.MARKER_CROSS, 20, 1)
                    cv2.imwrite(str(args.out / f"{stem}_kp{i + 1:02d}_at_{x}_{y}.png"), crop)


if __name__ == "__main__":
    main()
