"""Training-step throughput of ResNet + I2S head on 224x224 crops (CPU by default).

    .venv/bin/python tools/bench_i2s_train.py --threads 2 --batch 16 --rounds 5 --out bench_train.json

Variants, timed in interleaved rounds in one process (so that load changes hit all of them alike), medians:
  fp32            one forward + backward + SGD step (our step)
  two_forward     the same plus a second full forward pass (what the reference SPEED+ fork does per step)
  channels_last   fp32 with channels_last images and encoder
  bf16            torch.autocast(device, bfloat16)
  bf16_cl         bf16 + channels_last
Also the split of the fp32 step between the encoder (forward+backward) and the spherical head + loss, and the
machine's ceiling: the floating-point work of one training image (counted by torch.utils.flop_counter) against the
throughput of a large float32 matrix product on the same threads (what oneDNN/BLAS reach at best on this CPU), i.e.
the images/s no implementation of this network could beat here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--variants", default="fp32,two_forward,channels_last,bf16,bf16_cl")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--no-ceiling", action="store_true", help="skip the FLOP count and the matrix-product ceiling")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from speedpose.geometry.rotations import random_rotation_matrices
    from speedpose.models.encoders import build_encoder
    from speedpose.models.i2s import I2SHeadSpec, I2SHead, so3_cross_entropy

    dev = torch.device(args.device)
    encoder, channels = build_encoder(args.encoder, pretrained=False)
    head = I2SHead(channels, I2SHeadSpec())
    encoder.to(dev).train()
    head.to(dev).train()
    params = list(encoder.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9, nesterov=True)
    x = torch.randn(args.batch, 3, 224, 224, device=dev)
    R = random_rotation_matrices(args.batch, torch.Generator().manual_seed(1)).to(dev)
    amp_dtype = torch.bfloat16  # what the engine's amp=auto uses on CUDA too

    def make_step(channels_last: bool, amp: bool, two_forward: bool):
        xin = x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()

        def step():
            encoder.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            ctx = torch.autocast(dev.type, dtype=amp_dtype) if amp else nullcontext()
            opt.zero_grad(set_to_none=True)
            with ctx:
                loss = so3_cross_entropy(head(encoder(xin)), R, head.grid)
            loss.backward()
            opt.step()
            if two_forward:
                with torch.no_grad(), ctx:
                    head(encoder(xin))
            if dev.type == "cuda":
                torch.cuda.synchronize()
        return step

    variants = {
        "fp32": make_step(False, False, False),
        "two_forward": make_step(False, False, True),
        "channels_last": make_step(True, False, False),
        "bf16": make_step(False, True, False),
        "bf16_cl": make_step(True, True, False),
    }
    chosen = [v for v in args.variants.split(",") if v]

    # encoder / head split of the fp32 step
    fmap_shape = encoder(x).shape
    fmap = torch.randn(fmap_shape, device=dev)
    g = torch.randn(fmap_shape, device=dev)

    def enc_only():
        encoder.to(memory_format=torch.contiguous_format)
        opt.zero_grad(set_to_none=True)
        (encoder(x) * g).sum().backward()

    def head_only():
        opt.zero_grad(set_to_none=True)
        so3_cross_entropy(head(fmap), R, head.grid).backward()

    variants["_encoder"], variants["_head"] = enc_only, head_only
    chosen += ["_encoder", "_head"]

    for name in chosen:  # warm-up
        variants[name]()
    times: dict[str, list[float]] = {name: [] for name in chosen}
    load0 = os.getloadavg()[0]
    for r in range(args.rounds):
        for name in chosen:
            t = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - t)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in chosen), flush=True)
    med = {n: statistics.median(v) for n, v in times.items()}
    res = {"device": str(dev), "threads": args.threads, "batch": args.batch, "encoder": args.encoder,
           "rounds": args.rounds, "load_avg": [load0, os.getloadavg()[0]],
           "median_step_s": med,
           "images_per_s": {n: args.batch / med[n] for n in chosen if not n.startswith("_")},
           "ratio_vs_two_forward": med["two_forward"] / med["fp32"] if "two_forward" in med else None,
           "speedup_vs_fp32": {n: med["fp32"] / med[n] for n in chosen if not n.startswith("_") and "fp32" in med},
           "encoder_share": med["_encoder"] / (med["_encoder"] + med["_head"]),
           "head_share": med["_head"] / (med["_encoder"] + med["_head"])}
    if not args.no_ceiling:
        res.update(ceiling(encoder, head, x, R, dev, args.rounds))
        if "fp32" in res["images_per_s"]:
            res["fp32_share_of_ceiling"] = res["images_per_s"]["fp32"] / res["ceiling_images_per_s"]
        print(f"ceiling: {res['gflop_per_image']:.2f} GFLOP per training image, sgemm {res['sgemm_gflops']:.0f} "
              f"GFLOP/s -> at most {res['ceiling_images_per_s']:.1f} images/s; fp32 step reaches "
              f"{100 * res.get('fp32_share_of_ceiling', float('nan')):.0f}% of it")
    for n, v in res["images_per_s"].items():
        print(f"{n:14s} {v:6.1f} images/s (median step {med[n]:.3f} s)")
    print(f"encoder share {100 * res['encoder_share']:.0f}%, head+loss share {100 * res['head_share']:.0f}% "
          f"(encoder fwd+bwd {med['_encoder']:.3f} s, head fwd+bwd {med['_head']:.3f} s)")
    if args.out is not None:
        from speedpose.io_utils import atomic_write_json

        atomic_write_json(args.out, res)
    print(json.dumps(res, indent=1))
    return res


def ceiling(encoder, head, x, R, dev, rounds: int) -> dict:
    """FLOPs of one fp32 training step per image and the sgemm rate of this machine (median of ``rounds``)."""
    from torch.utils.flop_counter import FlopCounterMode

    from speedpose.models.i2s import so3_cross_entropy

    encoder.to(memory_format=torch.contiguous_format)
    with FlopCounterMode(display=False) as fc:
        so3_cross_entropy(head(encoder(x)), R, head.grid).backward()
    gflop_img = fc.get_total_flops() / x.shape[0] / 1e9
    n = 2048
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    a @ b
    rates = []
    for _ in range(max(3, rounds)):
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        if dev.type == "cuda":
            torch.cuda.synchronize()
        rates.append(4 * 2 * n ** 3 / (time.perf_counter() - t) / 1e9)
    sgemm = statistics.median(rates)
    return {"gflop_per_image": gflop_img, "sgemm_gflops": sgemm, "ceiling_images_per_s": sgemm / gflop_img}


if __name__ == "__main__":
    main(sys.argv[1:])
