"""Benchmark: PASCAL3D+ object views (the training loader's per-image cost) on a generated 500x375 tree.

Prints, as medians of 9 runs measured in this process: the general per-pixel-map warp
(``VirtualCamera.warp``, baseline) versus the homography fast path (``warp_pinhole``) and their ratio, then the full
training sample (decode + augmentation + view) versus JPEG decoding alone.

    .venv/bin/python tools/bench_pascal3d_views.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from speedpose.benchmarks.datasets import Pascal3DSamples, warp_pinhole
from speedpose.benchmarks.testing import write_pascal3d_tree
from speedpose.data.pascal3d import Pascal3DAdapter, object_view, read_rgb, resolve_camera_and_box


def median_time(fn, runs: int = 9) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    root = Path(tempfile.mkdtemp()) / "PASCAL3D+_release1.1"
    write_pascal3d_tree(root, classes=("aeroplane", "car", "chair", "sofa"), width=500, height=375)
    rec = Pascal3DAdapter(root).get_records("train")
    n = len(rec)
    images = [read_rgb(p) for p in rec.image_paths]
    cams = [resolve_camera_and_box(rec.extras["K"][i], rec.extras["box_xyxy"][i], 500, 375) for i in range(n)]
    views = [object_view(c, b, 224, 1.0, 0.1) for c, b in cams]
    general = median_time(lambda: [vc.warp(im, c) for vc, im, (c, _) in zip(views, images, cams)]) / n
    fast = median_time(lambda: [warp_pinhole(im, c, vc) for vc, im, (c, _) in zip(views, images, cams)]) / n
    print(f"{n} images 500x375 -> 224x224 view: VirtualCamera.warp {general * 1e3:.2f} ms, warp_pinhole "
          f"{fast * 1e3:.2f} ms, speed-up {general / fast:.1f}x")
    ds = Pascal3DSamples(rec, np.arange(n), 224, 1.0, train=True, mirror=True, roll_std_deg=7.6, box_jitter=0.1)
    decode = median_time(lambda: [read_rgb(p) for p in rec.image_paths]) / n
    sample = median_time(lambda: [ds[i] for i in range(n)]) / n
    print(f"training sample {sample * 1e3:.2f} ms ({1 / sample:.0f} images/s per loader process), "
          f"{sample / decode:.1f}x the JPEG decode alone ({decode * 1e3:.2f} ms)")


if __name__ == "__main__":
    main()
