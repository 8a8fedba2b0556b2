"""Benchmark of `speedpose preprocess`: throughput against a single-process reference loop, peak memory against the
number of images, and the cost of a no-op re-run.

    NO_ALBUMENTATIONS_UPDATE=1 .venv/bin/python tools/bench_preprocess.py --n 240 --repeats 3 --workers 2

The images are copies of the ten real SPEED+ lightbox JPEGs of ../shared/speedplus-real-sample (realistic content
and file sizes, about 750 kB each), or generated stand-ins (``--source generated``) when that folder is absent.
Every timing is the median of ``--repeats`` runs, the reference and the stage alternating in the same process.

* reference: one process, for each image ``cv2.imread(GRAYSCALE)`` (full decode), ``cv2.resize(INTER_AREA)``,
  write the row into an .npy file; no validation, no index.
* stage: ``pipelines.preprocess.run(..., force=True)``: validation of labels and JPEG headers, decode (DCT-scaled),
  resize, write, keypoint index, manifest; with ``--workers`` processes and with 1 for comparison.
* memory: the stage in a fresh subprocess for each N of ``--memory-n``; peak RSS of the main process (VmHWM) and
  of the largest worker (its VmHWM, sampled every 50 ms).
* no-op: the stage re-run on unchanged inputs (on the throughput set, and on ``--noop-n`` images).
* read: one stored image from the memory-mapped store, from a PNG of it, and the original JPEG decoded.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE = Path(os.environ.get("SPEEDPOSE_SHARED", REPO.parent / "shared")) / "speedplus-real-sample"


def make_dataset(root: Path, n: int, source: str) -> Path:
    """A SPEED+ root with ``n`` lightbox test images (copies of the real sample, or generated)."""
    from speedpose.data.testing import write_tiny_speedplus

    if source == "real":
        labels = json.loads((SAMPLE / "lightbox" / "test.json").read_text())
        (root / "lightbox" / "images").mkdir(parents=True)
        shutil.copyfile(SAMPLE / "camera.json", root / "camera.json")
        recs = []
        for i in range(n):
            src = labels[i % len(labels)]
            name = f"img{i + 1:06d}.jpg"
            dst = root / "lightbox" / "images" / name
            try:  # a hard link: same bytes, no disk; the page cache holds the ten files either way
                os.link(SAMPLE / "lightbox" / "images" / src["filename"], dst)
            except OSError:
                shutil.copyfile(SAMPLE / "lightbox" / "images" / src["filename"], dst)
            recs.append({**src, "filename": name})
        (root / "lightbox" / "test.json").write_text(json.dumps(recs))
        return root
    from speedpose.geometry.rotations import random_quat_wxyz

    q = random_quat_wxyz(n, np.random.default_rng(0))
    recs = [{"filename": f"img{i + 1:06d}.jpg", "q_vbs2tango_true": q[i].tolist(),
             "r_Vo2To_vbs_true": [0.0, 0.0, 4.0 + 4.0 * i / max(n, 1)]} for i in range(n)]
    return write_tiny_speedplus(root, {("lightbox", "test"): recs})


def _cpu_s() -> float:
    """CPU seconds of this process and of its finished children (the pool's workers, once shut down)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


CPU_LOG: dict[str, list[float]] = {"reference": [], "stage": [], "stage_1_worker": []}


def reference_loop(root: Path, out: Path, size: tuple[int, int]) -> float:
    """Single-process decode, grayscale, resize, write; returns seconds."""
    names = [r["filename"] for r in json.loads((root / "lightbox" / "test.json").read_text())]
    w, h = size
    t0 = time.perf_counter()
    with open(out, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False,
                                                 "shape": (len(names), h, w)})
        for name in names:
            img = cv2.imread(str(root / "lightbox" / "images" / name), cv2.IMREAD_GRAYSCALE)
            f.write(cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA).tobytes())
    return time.perf_counter() - t0


def stage_run(root: Path, out: Path, size, workers: int, force: bool) -> float:
    from pipelines import preprocess as stage

    t0 = time.perf_counter()
    stage.run(root, out=out, size=size, workers=workers, force=force, progress=False)
    return time.perf_counter() - t0


def read_costs(out: Path, tmp: Path, n: int = 60) -> dict:
    """Median ms to get one stored image: memory-mapped store, PNG of the same image, the original JPEG."""
    from speedpose.data import open_split

    sp = open_split(out, "lightbox", "test")
    idx = np.random.default_rng(0).permutation(len(sp))[:n]
    pngs = []
    for i in idx:
        pngs.append(tmp / f"read{i}.png")
        cv2.imwrite(str(pngs[-1]), sp.image(int(i)))

    def med(fn, items) -> float:
        ts = []
        for it in items:
            t0 = time.perf_counter()
            fn(it)
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts) * 1000

    return {"store": med(lambda i: sp.image(int(i)), idx),
            "png": med(lambda p: cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), pngs),
            "original_jpeg_full": med(lambda i: sp.full_image(int(i)), idx[:20])}


def _children_hwm_kib(pid: int) -> int:
    """Largest peak RSS (VmHWM, KiB) among the live children of ``pid``."""
    best = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != pid:
                continue
            status = (stat.parent / "status").read_text()
        except (OSError, IndexError, ValueError):
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                best = max(best, int(line.split()[1]))
    return best


def memory_child(root: str, out: str, workers: int, size: str) -> None:
    """Run in a subprocess: preprocess once and print the peak RSS [MiB] of this process (VmHWM) and of its largest
    worker (VmHWM of the live children, sampled every 50 ms)."""
    import threading

    from pipelines import preprocess as stage

    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], _children_hwm_kib(os.getpid()))

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    stage.run(Path(root), out=Path(out), size=stage.parse_size(size), workers=workers, force=True, progress=False)
    stop.set()
    t.join()
    hwm = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("VmHWM:"))
    print(json.dumps({"main_peak_mib": hwm / 1024, "worker_peak_mib": peak[0] / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=240, help="images in the throughput runs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", default="768x512")
    ap.add_argument("--source", choices=["real", "generated"], default="real" if SAMPLE.is_dir() else "generated")
    ap.add_argument("--memory-n", default="100,400", help="comma-separated N for the memory runs ('' to skip)")
    ap.add_argument("--noop-n", type=int, default=2000, help="images in the no-op scaling run (0 to skip)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--_memory_child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._memory_child:
        memory_child(*args._memory_child[:2], args.workers, args._memory_child[2])
        return

    from pipelines.preprocess import parse_size

    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as tmp:
        tmp = Path(tmp)
        root = make_dataset(tmp / "ds", args.n, args.source)
        ref, par, one, noop = [], [], [], []
        stage_run(root, tmp / "warm", size, args.workers, True)  # warm the page cache and imports
        for _ in range(args.repeats):
            for key, lst, fn in (("reference", ref, lambda: reference_loop(root, tmp / "ref.npy", size)),
                                 ("stage", par, lambda: stage_run(root, tmp / "out", size, args.workers, True)),
                                 ("stage_1_worker", one, lambda: stage_run(root, tmp / "out1", size, 1, True))):
                c0 = _cpu_s()
                lst.append(fn())
                CPU_LOG[key].append(_cpu_s() - c0)
            noop.append(stage_run(root, tmp / "out", size, args.workers, False))
        fig = {
            "n_images": args.n, "source": args.source, "size": list(size), "workers": args.workers,
            "cpu_cores": len(os.sched_getaffinity(0)), "repeats": args.repeats,
            "reference_img_per_s": args.n / statistics.median(ref),
            "stage_img_per_s": args.n / statistics.median(par),
            "stage_1_worker_img_per_s": args.n / statistics.median(one),
            "noop_rerun_s": statistics.median(noop),
        }
        fig["speedup_vs_reference"] = fig["stage_img_per_s"] / fig["reference_img_per_s"]
        fig["speedup_1_worker_vs_reference"] = fig["stage_1_worker_img_per_s"] / fig["reference_img_per_s"]
        fig["speedup_workers_vs_1_worker"] = fig["stage_img_per_s"] / fig["stage_1_worker_img_per_s"]
        fig["all_runs_s"] = {"reference": ref, "stage": par, "stage_1_worker": one, "noop": noop}
        # CPU cost per image (all processes, pool start-up included): what the wall-clock ratios become on idle cores
        fig["cpu_ms_per_image"] = {k: statistics.median(v) / args.n * 1000 for k, v in CPU_LOG.items()}
        fig["load_average_1min_end"] = os.getloadavg()[0]
        fig["read_ms_per_image"] = read_costs(tmp / "out", tmp)

        mem = {}
        for n in [int(x) for x in args.memory_n.split(",") if x.strip()]:
            mroot = make_dataset(tmp / f"mem{n}", n, args.source)
            res = subprocess.run([sys.executable, __file__, "--workers", str(args.workers), "--_memory_child",
                                  str(mroot), str(tmp / f"memout{n}"), args.size],
                                 check=True, capture_output=True, text=True, cwd=REPO)
            mem[n] = json.loads(res.stdout.strip().splitlines()[-1])
            shutil.rmtree(mroot)
        fig["peak_memory_mib"] = mem

        if args.noop_n:  # no-op cost on a bigger split (made at a small size to keep the first run short)
            nroot = make_dataset(tmp / "noop", args.noop_n, args.source)
            stage_run(nroot, tmp / "noopout", (240, 150), args.workers, True)
            big = [stage_run(nroot, tmp / "noopout", (240, 150), args.workers, False) for _ in range(args.repeats)]
            fig["noop_big"] = {"n_images": args.noop_n, "median_s": statistics.median(big), "all_s": big}

    print(f"{args.n} images ({args.source}), {args.size}, {fig['cpu_cores']} cores, median of {args.repeats}:")
    print(f"  reference loop (1 process, full decode)   {fig['reference_img_per_s']:8.1f} img/s")
    print(f"  preprocess, 1 worker                      {fig['stage_1_worker_img_per_s']:8.1f} img/s  "
          f"x{fig['speedup_1_worker_vs_reference']:.2f}")
    print(f"  preprocess, {args.workers} workers                     {fig['stage_img_per_s']:8.1f} img/s  "
          f"x{fig['speedup_vs_reference']:.2f} (x{fig['speedup_workers_vs_1_worker']:.2f} vs 1 worker)")
    print(f"  no-op re-run                              {fig['noop_rerun_s'] * 1000:8.1f} ms")
    c = fig["cpu_ms_per_image"]
    print(f"  CPU per image (all processes): reference {c['reference']:.1f} ms, 1 worker {c['stage_1_worker']:.1f} ms, "
          f"{args.workers} workers {c['stage']:.1f} ms; 1-min load average at the end {fig['load_average_1min_end']:.1f}")
    r = fig["read_ms_per_image"]
    print(f"  read one stored image: store {r['store']:.3f} ms, PNG {r['png']:.2f} ms, original JPEG (full) "
          f"{r['original_jpeg_full']:.1f} ms")
    if "noop_big" in fig:
        nb = fig["noop_big"]
        print(f"  no-op re-run, {nb['n_images']} images                {nb['median_s'] * 1000:8.1f} ms "
              f"({nb['median_s'] / nb['n_images'] * 1e6:.0f} us/image)")
    for n, m in mem.items():
        print(f"  peak RSS with {n:5d} images: main {m['main_peak_mib']:.0f} MiB, largest worker "
              f"{m['worker_peak_mib']:.0f} MiB")
    if args.json:
        from speedpose.io_utils import atomic_write_json

        atomic_write_json(args.json, fig)


if __name__ == "__main__":
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    main()
