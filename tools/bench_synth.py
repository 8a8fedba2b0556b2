"""Benchmark of `speedpose synth`: images per second at 1920x1200 and peak memory, all workers vs one.

Renders the same mixed set (half synthetic, a quarter each lightbox/sunlamp) into fresh temporary folders, several
times, and reports medians.  The baseline, measured in the same process, is the single-worker run, so the ratio shows
the parallel speed-up whatever else loads the machine; the floor (JPEG encoding and noise of an empty frame) shows how
close rendering is to the unavoidable per-image cost.  Peak memory is measured for two set sizes: it must not grow with
the number of images.  Each size runs in a fresh child process so that ru_maxrss is that run's own peak.  CPU
seconds per image (all processes) are reported too: on a machine shared with other jobs the wall-clock rate depends
on their load (reported as the load average), the CPU cost does not.

    .venv/bin/python tools/bench_synth.py --images 60 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHILD = r"""
import json, resource, sys, time
from pipelines import synth
out, n, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if len(sys.argv) > 4:
    synth.MIN_IMAGES_PER_WORKER = int(sys.argv[4])
def cpu():
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime
c0 = cpu()
t0 = time.perf_counter()
s = synth.run(out, n // 2 - n // 8, n // 8, n // 4, n - (n // 2 - n // 8) - n // 8 - n // 4, seed=1, workers=workers,
              progress=False)
wall = time.perf_counter() - t0
cpu_s = cpu() - c0
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"images": s["rendered"], "render_s": s["seconds"], "wall_s": wall, "cpu_s": cpu_s,
                  "workers": s["workers"], "render_cpu_s_per_image": s["cpu_s_per_image"],
                  "peak_render_process_mib": s["peak_rss_mib_per_process"], "peak_parent_mib": own,
                  "peak_worker_mib": kids}))
"""


def _run(n: int, workers: int, min_per_worker: int | None = None) -> dict:
    extra = [] if min_per_worker is None else [str(min_per_worker)]
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run([sys.executable, "-c", _CHILD, str(Path(tmp) / "set"), str(n), str(workers)] + extra,
                             capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(res.stdout.strip().splitlines()[-1])


def _floor(repeats: int = 5) -> float:
    """Seconds per image of the unavoidable part: noise on a full frame, JPEG encoding of image and mask."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        img = np.zeros((1200, 1920), np.float32) + rng.standard_normal((1200, 1920), dtype=np.float32) * 0.01
        cv2.imencode(".jpg", np.clip(img * 255, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imencode(".jpg", np.zeros((1200, 1920), np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 100])
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-per-worker", type=int, default=None,
                    help="override synth.MIN_IMAGES_PER_WORKER (default: the stage's own value)")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    allw = [_run(args.images, 0, args.min_per_worker) for _ in range(args.repeats)]
    one = [_run(args.images, 1) for _ in range(args.repeats)]
    big = _run(2 * args.images, 0, args.min_per_worker)
    floor = _floor()
    ips_all = statistics.median(r["images"] / r["render_s"] for r in allw)
    ips_one = statistics.median(r["images"] / r["render_s"] for r in one)
    cpu_per_image = statistics.median(r["render_cpu_s_per_image"] for r in allw + one)
    report = {
        "cores": cores, "images_per_run": args.images, "repeats": args.repeats,
        "images_per_s_all_workers_median": round(ips_all, 3),
        "images_per_s_one_worker_median": round(ips_one, 3),
        "speedup_all_vs_one": round(ips_all / ips_one, 3),
        "seconds_per_1000_images_all_workers": round(1000 / ips_all, 1),
        "render_cpu_s_per_image_median": round(cpu_per_image, 4),
        "images_per_s_if_cores_were_idle": round(cores / cpu_per_image, 2),
        "floor_s_per_image_jpeg_and_noise": round(floor, 4),
        "render_cost_over_floor_one_worker": round((1 / ips_one) / floor, 2),
        "peak_render_process_mib": {args.images: round(max(r["peak_render_process_mib"] for r in allw), 1),
                                    2 * args.images: round(big["peak_render_process_mib"], 1)},
        "peak_parent_mib": {args.images: round(statistics.median(r["peak_parent_mib"] for r in allw), 1),
                            2 * args.images: round(big["peak_parent_mib"], 1)},
        "runs_all_workers": allw, "runs_one_worker": one, "run_double_size": big,
        "load_average_at_end": os.getloadavg(),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
