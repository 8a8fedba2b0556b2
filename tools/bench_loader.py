"""Cost of the engine's deterministic data pipeline versus a plain shuffled DataLoader.

The engine wraps the dataset in SeededDataset (per-sample seeding of python/numpy/torch RNGs, and RNG save/restore
in the main process) and draws batches from ResumableBatchSampler.  This benchmark times one epoch of both
pipelines over the same dataset, interleaving the runs, and reports medians and the ratio engine / plain.

Usage:
    NO_ALBUMENTATIONS_UPDATE=1 .venv/bin/python tools/bench_loader.py --kind jpeg --workers 0 2 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from speedpose.training import ResumableBatchSampler, SeededDataset  # noqa: E402


class JpegCrops(Dataset):
    """Decodes a grayscale JPEG (side x side) and returns a random 224 x 224 crop with noise, as float tensor."""

    def __init__(self, n: int, side: int = 480):
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[:side, :side]
        self.blobs = []
        for k in range(8):  # a few distinct images, cycled
            img = (127 + 100 * np.sin(xx / (7 + k)) * np.cos(yy / (11 + k)) + rng.normal(0, 10, (side, side)))
            ok, buf = cv2.imencode(".jpg", np.clip(img, 0, 255).astype(np.uint8))
            self.blobs.append(buf)
        self.n, self.side = n, side

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        img = cv2.imdecode(self.blobs[i % len(self.blobs)], cv2.IMREAD_GRAYSCALE)
        y, x = np.random.randint(0, self.side - 224, size=2)
        crop = img[y:y + 224, x:x + 224].astype(np.float32) / 255.0
        crop += np.random.normal(0, 0.02, crop.shape).astype(np.float32)
        return torch.from_numpy(crop)[None]


class Tiny(Dataset):
    """Worst case for the wrapper: an 8-float sample with a torch jitter (the wrapper cost dominates)."""

    def __init__(self, n: int):
        self.x = torch.randn(n, 8)

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i] + 0.01 * torch.randn(8)


def epoch_time(loader: DataLoader) -> float:
    t = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=["jpeg", "tiny"], default="jpeg")
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    ds = JpegCrops(args.samples) if args.kind == "jpeg" else Tiny(args.samples)
    print(f"dataset={args.kind} samples={args.samples} batch={args.batch} repeats={args.repeats} "
          f"torch_threads={torch.get_num_threads()} cpus={os.cpu_count()}")
    for w in args.workers:
        plain = DataLoader(ds, batch_size=args.batch, shuffle=True, drop_last=True, num_workers=w,
                           generator=torch.Generator().manual_seed(0), persistent_workers=w > 0)
        sampler = ResumableBatchSampler(len(ds), args.batch, seed=0)
        engine = DataLoader(SeededDataset(ds, 0), batch_sampler=sampler, num_workers=w,
                            generator=torch.Generator().manual_seed(0), persistent_workers=w > 0)
        epoch_time(plain), epoch_time(engine)  # warm-up (worker start, caches)
        tp, te = [], []
        for r in range(args.repeats):  # interleaved, so that load from other processes hits both alike
            sampler.set_epoch(r)
            tp.append(epoch_time(plain))
            te.append(epoch_time(engine))
        mp, me = statistics.median(tp), statistics.median(te)
        per_sample_us = (me - mp) / (sampler.steps_per_epoch * args.batch) * 1e6
        print(f"workers={w}: plain {mp * 1e3:8.1f} ms/epoch  engine {me * 1e3:8.1f} ms/epoch  "
              f"ratio engine/plain {me / mp:5.2f}  (overhead {per_sample_us:+.0f} us/sample)")


if __name__ == "__main__":
    main()
