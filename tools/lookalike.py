"""Look-alike check: render the real sample's poses and write side-by-side PNGs (real | stand-in) with keypoints.

For every image of a real SPEED+ root's domain (default: the ten real lightbox frames in ../shared), renders the
stand-in at the released label in each requested style and writes ``OUT/<stem>.png``: the real image, then one
stand-in per style, each at half size with the 11 keypoints projected with camera.json (green, numbered), plus the
stand-in's mask outline (cyan) on the stand-in.  Also writes ``OUT/contact_sheet.png`` with every row at 1/4 size.

    .venv/bin/python tools/lookalike.py --root ../shared/speedplus-real-sample --out /tmp/lookalike
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from speedpose.camera import load_camera
from speedpose.labels import label_file, read_labels
from speedpose.render import distortion_warp, render_frame
from speedpose.tango import project_keypoints


def _annotate(gray: np.ndarray, uv: np.ndarray, title: str, mask: np.ndarray | None = None) -> np.ndarray:
    vis = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    if mask is not None:
        contours, _ = cv2.findContours((mask >= 128).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(vis, contours, -1, (255, 255, 0), 2)
    for i, (u, v) in enumerate(uv):
        if -1e4 < u < 1e4 and -1e4 < v < 1e4:
            cv2.circle(vis, (int(round(u)), int(round(v))), 7, (0, 255, 0), 2)
            cv2.putText(vis, str(i + 1), (int(u) + 9, int(v) - 9), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 255, 0), 2)
    cv2.putText(vis, title, (20, 50), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (0, 200, 255), 3)
    return cv2.resize(vis, (vis.shape[1] // 2, vis.shape[0] // 2), interpolation=cv2.INTER_AREA)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" /
                    "speedplus-real-sample", help="real SPEED+ root (camera.json, <domain>/test.json, images/)")
    ap.add_argument("--domain", default="lightbox")
    ap.add_argument("--styles", default="lightbox,synthetic,sunlamp", help="stand-in styles to render")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    cam = load_camera(args.root / "camera.json")
    warp = distortion_warp(cam)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, lab in enumerate(read_labels(label_file(args.root, args.domain, None if args.domain != "synthetic"
                                                   else "validation"), require_poses=True)):
        real = cv2.imread(str(args.root / args.domain / "images" / lab.filename), cv2.IMREAD_GRAYSCALE)
        if real is None:
            continue
        uv = project_keypoints(cam, lab.q_wxyz, lab.r_cam_m)
        panels = [_annotate(real, uv, f"real {args.domain} {lab.filename}")]
        for style in args.styles.split(","):
            frame = render_frame(warp, lab.q_wxyz, lab.r_cam_m, style, np.random.default_rng([args.seed, i]),
                                 earth=None)
            panels.append(_annotate(frame.image, uv, f"stand-in {style}", frame.mask))
        row = np.hstack(panels)
        cv2.imwrite(str(args.out / f"{Path(lab.filename).stem}.png"), row)
        rows.append(cv2.resize(row, (row.shape[1] // 2, row.shape[0] // 2), interpolation=cv2.INTER_AREA))
        dest = args.out / f"{Path(lab.filename).stem}.png"
        print(f"{lab.filename}: distance {np.linalg.norm(lab.r_cam_m):.2f} m -> {dest}")
    if rows:
        cv2.imwrite(str(args.out / "contact_sheet.png"), np.vstack(rows))


if __name__ == "__main__":
    main()
