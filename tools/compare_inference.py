"""Inference settings side by side on one trained run: the same checkpoint, the same images, one process.

    python tools/compare_inference.py --run RUN --root ROOT [--prep PREP] [--domain synthetic] \\
        model.refine_passes=0 model.refine_passes=1 model.pose_solver=fused ...

Each positional argument is one variant: a dotted override of an inference key of the run's config (several joined
with commas: ``model.refine_passes=1,model.pose_solver=fused``); ``base`` is the run's own config.  For every variant
it prints the SPEED+ score (thresholds as the domain's), median E_R [deg], Acc@10, median E_T [m], localiser IoU and
the prediction time per image [ms] (median of ``--repeats`` passes).  Training-only keys have no effect here.
``--true-boxes`` also prints each variant on crops of the true keypoint boxes (the crop network apart from the
localiser; the labels choose the boxes, so it is a diagnosis, not a result; IoU blank, time of one pass).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--prep", default=None, help="preprocessed folder (default: the root's cache folder)")
    ap.add_argument("--domain", default="synthetic")
    ap.add_argument("--checkpoint", default="last")
    ap.add_argument("--limit", type=int, default=None, help="first N images only")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--true-boxes", action="store_true", help="also crop the true keypoint boxes (row '+ true box')")
    ap.add_argument("variants", nargs="*", default=["base"])
    args = ap.parse_args()

    import numpy as np

    from pipelines.evaluate import DEFAULT_SPLIT
    from speedpose.config import load_config
    from speedpose.config.loading import RESOLVED_NAME
    from speedpose.data.loader import open_split
    from speedpose.pose.inference import predict_split
    from speedpose.pose.kinds import model_kind
    from speedpose.pose.metrics import pose_metrics
    from speedpose.runs import load_run
    from speedpose.scoring import default_thresholds

    run = load_run(args.run, args.checkpoint)
    split = open_split(args.prep or args.root, args.domain, DEFAULT_SPLIT[args.domain], root=args.root)
    idx = np.arange(len(split) if args.limit is None else min(args.limit, len(split)))
    print(f"{args.run} ({run.checkpoint.name}, step {run.step}) on {args.domain}: {len(idx)} images")
    print(f"{'variant':<44} {'score':>7} {'E_R med':>8} {'Acc@10':>7} {'E_T med':>8} {'IoU':>6} {'ms/img':>7}")
    for variant in args.variants:
        cfg = run.cfg if variant == "base" else load_config(run.run_dir / RESOLVED_NAME, variant.split(","))
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            pred = predict_split(run.model, split, idx, model_kind(cfg), batch_size=cfg.train.batch_size)
            times.append((time.perf_counter() - t0) / len(idx))
        rows = [(variant, pred, statistics.median(times))]
        if args.true_boxes:
            t0 = time.perf_counter()
            pred = predict_split(run.model, split, idx, model_kind(cfg), batch_size=cfg.train.batch_size,
                                 boxes_xyxy=split.kp_box(clipped=False)[idx])
            rows.append((f"{variant} + true box", pred, (time.perf_counter() - t0) / len(idx)))
        for name, pred, dt in rows:
            m = pose_metrics(pred, split, thresholds=default_thresholds(args.domain))
            iou = float("nan") if name.endswith("true box") else m.get("loc_iou", float("nan"))
            print(f"{name:<44} {m['score']:7.3f} {m['e_r_median_deg']:8.2f} {m['acc@10']:7.3f} "
                  f"{m['e_t_median_m']:8.3f} {iou:6.3f} {1000 * dt:7.1f}")


if __name__ == "__main__":
    main()
