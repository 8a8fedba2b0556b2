"""Benchmark of I2S inference: model construction, coarse-to-fine mode search vs a dense level-4 search, agreement
with the dense level-5 argmax.

    .venv/bin/python tools/bench_i2s_inference.py --threads 2 --repeats 7 --n-agree 1000 --out bench_inf.json

Phases run in this order so that the whole-process peak memory of the coarse-to-fine search is read before the
dense level-4 matrix exists.  Times are medians over ``--repeats`` runs; the machine load is printed alongside.
``--device cuda`` runs the network and the searches on the GPU (timings synchronise the device; the random inputs
are drawn on the CPU, so they are the same on every device) and adds the GPU's peak allocated memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _no_sync() -> None:
    pass


def median_time(fn, repeats: int, sync=_no_sync) -> float:
    fn()  # warm-up
    sync()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--top-k", type=int, default=16)
    ap.add_argument("--level", type=int, default=5)
    ap.add_argument("--n-agree", type=int, default=1000, help="distributions for the agreement check (0: skip)")
    ap.add_argument("--skip-dense", action="store_true", help="skip the dense level-4 baseline")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else _no_sync
    res: dict = {"device": str(dev), "threads": args.threads, "batch": args.batch, "top_k": args.top_k,
                 "level": args.level, "load_avg_start": os.getloadavg()[0]}

    from speedpose.geometry.so3_grids import so3_healpix_rotations, so3_healpix_spacing_deg, so3_healpix_wigner_features
    from speedpose.geometry.rotations import geodesic_angle_matrix
    from speedpose.models.encoders import build_encoder
    from speedpose.models.i2s import I2SHeadSpec, I2SHead, coarse_to_fine_mode, dense_argmax, predict_mode

    # 1. construction
    rss0 = rss_mb()
    t = time.perf_counter()
    encoder, channels = build_encoder("resnet18", pretrained=False)
    head = I2SHead(channels, I2SHeadSpec())
    res["construct_s"] = time.perf_counter() - t
    res["construct_rss_mb"] = rss_mb() - rss0
    encoder.to(dev).eval(), head.to(dev).eval()
    print(f"construction (ResNet18 + I2S head, level-3 grid): {res['construct_s']:.2f} s, "
          f"+{res['construct_rss_mb']:.0f} MB RSS", flush=True)

    with torch.no_grad():
        coeffs = head(torch.randn(args.batch, channels, 7, 7).to(dev))

    # 2. coarse-to-fine search
    grid = head.grid
    res["c2f_s"] = median_time(lambda: predict_mode(coeffs, args.level, args.top_k, refine=False, grid=grid),
                               args.repeats, sync)
    res["c2f_refine_s"] = median_time(lambda: predict_mode(coeffs, args.level, args.top_k, refine=True, grid=grid),
                                      args.repeats, sync)
    res["peak_rss_after_c2f_mb"] = peak_rss_mb()
    print(f"coarse-to-fine to level {args.level} ({so3_healpix_spacing_deg(args.level)} deg), top-k {args.top_k}: "
          f"{res['c2f_s']:.3f} s / batch of {args.batch}, with Newton refinement {res['c2f_refine_s']:.3f} s; "
          f"whole-process peak RSS so far {res['peak_rss_after_c2f_mb']:.0f} MB", flush=True)

    # 3. agreement with the dense level-5 argmax (evaluated in chunks)
    if args.n_agree:
        gen = torch.Generator().manual_seed(args.seed + 1)
        cs = []
        with torch.no_grad():
            for start in range(0, args.n_agree, 50):
                n = min(50, args.n_agree - start)
                cs.append(head(torch.randn(n, channels, 7, 7, generator=gen).to(dev)))
        cs = torch.cat(cs)
        sync()
        t = time.perf_counter()
        idx, val, _ = coarse_to_fine_mode(cs, grid, args.level, args.top_k)
        sync()
        t_c2f = time.perf_counter() - t
        t = time.perf_counter()
        d_idx, d_val = dense_argmax(cs, args.level, chunk=1 << 25)
        sync()
        t_dense = time.perf_counter() - t
        ang = torch.rad2deg(geodesic_angle_matrix(so3_healpix_rotations(args.level, idx),
                                                  so3_healpix_rotations(args.level, d_idx)))
        step = so3_healpix_spacing_deg(args.level)
        res["agree_n"] = len(cs)
        res["agree_same_cell"] = (idx == d_idx).double().mean().item()
        res["agree_within_1_step"] = (ang <= step + 1e-6).double().mean().item()
        res["agree_within_2_steps"] = (ang <= 2 * step + 1e-6).double().mean().item()
        res["agree_value_gap_max"] = (d_val - val).max().item()
        res["agree_c2f_s"], res["agree_dense_s"] = t_c2f, t_dense
        print(f"agreement on {len(cs)} distributions (random-init head): same level-{args.level} cell "
              f"{100 * res['agree_same_cell']:.1f}%, within {step} deg {100 * res['agree_within_1_step']:.1f}%, "
              f"within {2 * step} deg {100 * res['agree_within_2_steps']:.1f}%; max value gap "
              f"{res['agree_value_gap_max']:.2e}; c2f {t_c2f:.1f} s, dense chunked {t_dense:.1f} s", flush=True)
        res["peak_rss_after_agreement_mb"] = peak_rss_mb()

    # 4. dense level-4 baseline (the reference's approach: a precomputed 455 x 294,912 matrix)
    if not args.skip_dense:
        rss0 = rss_mb()
        t = time.perf_counter()
        W4 = so3_healpix_wigner_features(4, head.lmax).T.contiguous().to(dev)
        sync()
        res["dense4_construct_s"] = time.perf_counter() - t
        res["dense4_matrix_mb"] = W4.numel() * 4 / 2**20
        R4 = so3_healpix_rotations(4, dtype=torch.float32, device=dev)

        def dense4():
            return R4[(coeffs @ W4).argmax(dim=1)]

        # interleaved with the coarse-to-fine search so that load changes hit both alike
        fns = {"dense4": dense4,
               "c2f": lambda: predict_mode(coeffs, args.level, args.top_k, refine=False, grid=grid),
               "c2f_refine": lambda: predict_mode(coeffs, args.level, args.top_k, refine=True, grid=grid)}
        ts = {k: [] for k in fns}
        cpu = {k: [] for k in fns}
        for fn in fns.values():
            fn()
        sync()
        for _ in range(args.repeats):
            for k, fn in fns.items():
                t, c0 = time.perf_counter(), time.process_time()
                fn()
                sync()
                ts[k].append(time.perf_counter() - t)
                cpu[k].append(time.process_time() - c0)
        med = {k: statistics.median(v) for k, v in ts.items()}
        # CPU time (both threads) is less sensitive than wall time to other processes on a shared machine
        med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
        res["cpu_s"] = med_cpu
        res["c2f_over_dense4_cpu"] = med_cpu["c2f"] / med_cpu["dense4"]
        res["c2f_refine_over_dense4_cpu"] = med_cpu["c2f_refine"] / med_cpu["dense4"]
        print(f"CPU time per batch: dense-4 {med_cpu['dense4']:.3f} s, coarse-to-fine {med_cpu['c2f']:.3f} s, "
              f"refined {med_cpu['c2f_refine']:.3f} s; ratios {res['c2f_over_dense4_cpu']:.2f} / "
              f"{res['c2f_refine_over_dense4_cpu']:.2f}", flush=True)
        res["dense4_s"], res["c2f_interleaved_s"], res["c2f_refine_interleaved_s"] = (
            med["dense4"], med["c2f"], med["c2f_refine"])
        res["peak_rss_after_dense4_mb"] = peak_rss_mb()
        res["c2f_over_dense4"] = med["c2f"] / med["dense4"]
        res["c2f_refine_over_dense4"] = med["c2f_refine"] / med["dense4"]
        R_c2f, _ = predict_mode(coeffs, args.level, args.top_k, refine=True, grid=grid)
        res["c2f_vs_dense4_median_deg"] = torch.rad2deg(geodesic_angle_matrix(R_c2f, dense4())).median().item()
        print(f"dense level 4 (3.75 deg): build {res['dense4_construct_s']:.2f} s ({res['dense4_matrix_mb']:.0f} MB "
              f"matrix), search {res['dense4_s']:.3f} s / batch; interleaved with it, coarse-to-fine "
              f"{res['c2f_interleaved_s']:.3f} s, refined {res['c2f_refine_interleaved_s']:.3f} s; ratio to dense-4 "
              f"{res['c2f_over_dense4']:.2f} (refined {res['c2f_refine_over_dense4']:.2f}); peak RSS "
              f"{res['peak_rss_after_dense4_mb']:.0f} MB", flush=True)
    res["load_avg_end"] = os.getloadavg()[0]
    if dev.type == "cuda":
        res["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    if args.out is not None:
        from speedpose.io_utils import atomic_write_json

        atomic_write_json(args.out, res)
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
