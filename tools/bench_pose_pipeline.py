"""Data loading versus training speed of the SPEED+ pose pipeline (issue: "data loading must not limit training").

Measures, on a preprocessed stand-in (or real) SPEED+ root, in one process:
  * loader throughput: training samples per second produced by the kind's samples (virtual-camera crop from the cheapest
    sufficient source, photometric augmentation, localiser frame), single process;
  * training throughput: images per second of the training step (forward + backward + optimiser) of the same
    config, with batches pre-loaded so that no loading is timed.
  * with --layouts: the training step in both memory layouts (``train.channels_last`` false and true), the same
    batch, interleaved in this process (the weights go on training), and their ratio;
  * with --freeze-strides 0 4 ...: the training step with the crop encoder's layers up to each output stride frozen
    (``model.freeze_to_stride``), the same batch, interleaved, and each one's ratio to the first.
Reports medians over --repeats and the ratio loader / training (>= 2 means one loader worker keeps up with two
training steps' worth of images).

Usage:
    .venv/bin/python tools/bench_pose_pipeline.py --root DATA --config standin_cpu --repeats 5 [--layouts]
        [--freeze-strides 0 2 4 8] [key=value ...]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import default_collate  # noqa: E402

from speedpose.config import load_config, resolve_config  # noqa: E402
from speedpose.devices import place_model  # noqa: E402
from speedpose.models.encoders import FREEZE_STRIDES, freeze_to_stride  # noqa: E402
from speedpose.pose.task import SpeedplusTask  # noqa: E402
from speedpose.training import build_optimizer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True)
    ap.add_argument("--config", default="standin_cpu")
    ap.add_argument("--samples", type=int, default=64, help="samples per loader measurement")
    ap.add_argument("--steps", type=int, default=4, help="training steps per measurement")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--layouts", action="store_true", help="also time the training step in NCHW and channels-last")
    ap.add_argument("--freeze-strides", type=int, nargs="+", choices=FREEZE_STRIDES, default=None,
                    help="also time the training step with the crop encoder frozen to each of these strides")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(resolve_config(args.config, "speedplus"), [("data.root", args.root), *args.overrides])
    task = SpeedplusTask(cfg)
    ds = task.train_dataset()
    n = len(ds)
    bs = cfg.train.batch_size

    def load(k0: int, count: int) -> list:
        out = []
        for k in range(k0, k0 + count):
            np.random.seed(k)
            out.append(ds[k % n])
        return out

    torch.manual_seed(0)
    model = place_model(task.build_model(), torch.device("cpu"), cfg.train.channels_last).train()
    opt = build_optimizer(model.parameters(), cfg.optim)
    batch = default_collate(load(0, bs))

    def step() -> None:
        loss = task.training_step(model, batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    loader_ips, train_ips = [], []
    for r in range(args.repeats):  # interleaved
        t = time.perf_counter()
        load(r * args.samples, args.samples)
        loader_ips.append(args.samples / (time.perf_counter() - t))
        t = time.perf_counter()
        for _ in range(args.steps):
            step()
        train_ips.append(args.steps * bs / (time.perf_counter() - t))
    lo, tr = statistics.median(loader_ips), statistics.median(train_ips)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"config {args.config} ({cfg.model.kind}, {cfg.model.encoder}, crop {cfg.data.crop_size}, batch {bs}), "
          f"{args.threads} threads, {n} training images")
    print(f"loader   : {lo:7.1f} samples/s (median of {args.repeats}; runs {[round(v, 1) for v in loader_ips]})")
    print(f"training : {tr:7.1f} images/s  (median of {args.repeats}; runs {[round(v, 1) for v in train_ips]})")
    print(f"ratio loader/training: {lo / tr:.2f}   peak RSS {peak:.0f} MB")
    if args.layouts:
        layout_ips: dict[str, list[float]] = {"NCHW": [], "channels-last": []}
        for r in range(args.repeats):  # interleaved, the same batch
            for name, fmt in (("NCHW", torch.contiguous_format), ("channels-last", torch.channels_last)):
                model.to(memory_format=fmt)
                opt.state.clear()  # the optimiser's moments are created again, in the new layout
                step()
                t = time.perf_counter()
                for _ in range(args.steps):
                    step()
                layout_ips[name].append(args.steps * bs / (time.perf_counter() - t))
        med = {k: statistics.median(v) for k, v in layout_ips.items()}
        for name, runs in layout_ips.items():
            print(f"training, {name:13s}: {med[name]:7.1f} images/s (median of {args.repeats}; runs "
                  f"{[round(v, 1) for v in runs]})")
        print(f"channels-last / NCHW: {med['channels-last'] / med['NCHW']:.2f}x")
    if args.freeze_strides:
        if cfg.model.kind != "crop":
            raise SystemExit(f"--freeze-strides: the crop network's encoder; {args.config} is {cfg.model.kind}")
        encoder = model.net.encoder
        freeze_ips: dict[int, list[float]] = {s: [] for s in args.freeze_strides}
        for r in range(args.repeats):  # interleaved, the same batch
            for stride in freeze_ips:
                encoder.requires_grad_(True)
                freeze_to_stride(encoder, stride)
                step()
                t = time.perf_counter()
                for _ in range(args.steps):
                    step()
                freeze_ips[stride].append(args.steps * bs / (time.perf_counter() - t))
        med = {k: statistics.median(v) for k, v in freeze_ips.items()}
        first = args.freeze_strides[0]
        for stride, runs in freeze_ips.items():
            print(f"training, frozen to stride {stride}: {med[stride]:7.1f} images/s ({med[stride] / med[first]:.2f}x "
                  f"stride {first}; median of {args.repeats}; runs {[round(v, 1) for v in runs]})")


if __name__ == "__main__":
    main()
