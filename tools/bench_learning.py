"""Time-to-accuracy of a training recipe on a fixed stand-in: the learning curve against minutes of training.

    python tools/bench_learning.py --config standin_cpu --minutes 20 --name lite0 [--threads 1] [key=value ...]

1. The stand-in, rendered once and cached (seeded; ``--data``, default
   ``$SPEEDPOSE_CACHE/bench-learning/standin-v<format>-<sizes>-seed<seed>``): synthetic train frames (the localiser's
   data), validation, lightbox and sunlamp frames, preprocessed, plus the config's crop set when it names one
   (``data.crop_set`` relative to the root, rendered at the config's ``data.crop_size``).
2. Training (``pipelines.train``) into ``--out/NAME`` for ``--minutes`` spent in training steps
   (``train.max_train_time_min``; validation excluded), validating every ``--every`` minutes of training on
   ``--val-limit`` validation images (``train.val_every_min``).
3. The last checkpoint evaluated (``pipelines.evaluate``) on every validation, lightbox and sunlamp image.
4. ``--out/NAME/curve.json`` (curve, final metrics, machine, command), a table on stdout, and
   ``--out/learning_curves.png`` overlaying every run of ``--out`` (compare configs run in the same session, on the
   same machine: absolute times do not carry over between machines).

Curve columns: training minutes, images seen, median E_R [deg], Acc@10, Acc@30, median E_T [m], localiser IoU and
the SPEED+ score (no thresholds) on the validation subset, predicted through the whole chain (localiser -> crop ->
mode search at the config's inference level); and the median E_R of the crop network alone, on crops of the true
keypoint boxes.  Two runs side by side on a 2-core machine: ``--threads 1`` each
(and ``train.workers=0``) so that they share it equally.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

CURVE_KEYS = ("e_r_median_deg", "acc@10", "acc@30", "e_t_median_m", "loc_iou", "score")


def _cache_dir() -> Path:
    base = os.environ.get("SPEEDPOSE_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "speedpose")
    return Path(base) / "bench-learning"


def default_root(frames: int = 1000, val: int = 200, test: int = 100, seed: int = 0) -> Path:
    """The cached stand-in of these sizes (the renderer's format version in the name)."""
    from pipelines import synth

    return _cache_dir() / f"standin-v{synth.FORMAT_VERSION}-{frames}-{val}-{test}-seed{seed}"


def source_commit() -> str:
    """The short commit of this checkout (empty outside git): read it when a measurement STARTS."""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent).stdout.strip()


def prepare_data(args, cfg) -> tuple[Path, Path]:
    """Render (once) and preprocess the stand-in; render the config's crop set when it names one."""
    from pipelines import preprocess, synth, synth_crops
    from speedpose.pose.kinds import model_kind
    from speedpose.pose.task import resolve_crop_set

    root = Path(args.data) if args.data else default_root(args.frames, args.val, args.test, args.seed)
    synth.run(root, args.frames, args.val, args.test, args.test, seed=args.seed, progress=True)
    prep = root.parent / (root.name + "-prep")
    preprocess.run(root, out=prep, progress=True)
    crop_set = model_kind(cfg).crop_set
    if crop_set:
        crops = resolve_crop_set(crop_set, str(root))
        if not Path(crop_set).is_absolute():
            params = synth_crops.CropSetParams(args.crops, cfg.data.crop_size, cfg.data.crop_margin, seed=args.seed)
            print(synth_crops.format_summary(synth_crops.run(crops, params)))
    return root, prep


def read_curve(run_dir: Path) -> list[dict]:
    """Validation rows of ``metrics.csv``: one dict per validation (train_time_s, samples_seen, metrics)."""
    import pandas as pd

    m = pd.read_csv(run_dir / "metrics.csv")
    v = m[m.split == "val"].pivot_table(index="step", columns="name", values="value", aggfunc="last")
    return [{"step": int(step), **{k: float(row[k]) for k in row.index if row[k] == row[k]}}
            for step, row in v.iterrows()]


def format_table(curve: list[dict]) -> str:
    head = (f"{'min':>6} {'images':>8} {'E_R med':>8} {'Acc@10':>7} {'Acc@30':>7} {'E_T med':>8} {'IoU':>6} "
            f"{'score':>7} {'E_R med, true box':>18}")
    lines = [head]
    for r in curve:
        lines.append(f"{r.get('train_time_s', float('nan')) / 60:6.1f} {int(r.get('samples_seen', 0)):8d} "
                     f"{r.get('e_r_median_deg', float('nan')):8.1f} {r.get('acc@10', float('nan')):7.3f} "
                     f"{r.get('acc@30', float('nan')):7.3f} {r.get('e_t_median_m', float('nan')):8.3f} "
                     f"{r.get('loc_iou', float('nan')):6.3f} {r.get('score', float('nan')):7.3f} "
                     f"{r.get('e_r_median_deg_truebox', float('nan')):18.1f}")
    return "\n".join(lines)


def plot_curves(out: Path) -> Path:
    """Overlay the curves of every run in ``out`` (median E_R, Acc@10, median E_T against training minutes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for f in sorted(out.glob("*/curve.json")):
        data = json.loads(f.read_text())
        x = [r["train_time_s"] / 60 for r in data["curve"]]
        for ax, key in zip(axes, ("e_r_median_deg", "acc@10", "e_t_median_m")):
            ax.plot(x, [r.get(key, float("nan")) for r in data["curve"]], marker="o", ms=3, label=data["name"])
    for ax, (key, label) in zip(axes, (("e_r_median_deg", "median E_R [deg] (validation)"),
                                        ("acc@10", "Acc@10"), ("e_t_median_m", "median E_T [m]"))):
        ax.set_xlabel("minutes of training")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if key != "acc@10":
            ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle("speedpose time-to-accuracy on the stand-in (tools/bench_learning.py)")
    fig.tight_layout()
    path = out / "learning_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="standin_cpu", help="shipped config name or YAML file")
    ap.add_argument("--minutes", type=float, default=20.0, help="minutes of training (validation excluded)")
    ap.add_argument("--every", type=float, default=2.0, help="validate every this many minutes of training")
    ap.add_argument("--name", default=None, help="run name (default: the config's name)")
    ap.add_argument("--out", default="bench-learning", help="folder of the runs and the plot")
    ap.add_argument("--data", default=None, help="stand-in root (default: cached under $SPEEDPOSE_CACHE)")
    ap.add_argument("--frames", type=int, default=1000, help="synthetic train frames (localiser data)")
    ap.add_argument("--val", type=int, default=200, help="synthetic validation frames")
    ap.add_argument("--test", type=int, default=100, help="lightbox and sunlamp frames each")
    ap.add_argument("--crops", type=int, default=40000, help="crops of the crop set (configs with data.crop_set)")
    ap.add_argument("--val-limit", type=int, default=100, help="validation images of each curve point")
    ap.add_argument("--seed", type=int, default=0, help="seed of the stand-in")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--prepare-only", action="store_true", help="render and preprocess the stand-in, then stop "
                    "(before runs side by side: rendering uses every core)")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides (key=value)")
    args = ap.parse_args()

    import torch

    from pipelines import evaluate, train
    from speedpose.config import load_config, resolve_config

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg_path = resolve_config(args.config, "speedplus")
    cfg = load_config(cfg_path, list(args.overrides))
    root, prep = prepare_data(args, cfg)
    if args.prepare_only:
        print(f"stand-in ready: {root} (preprocessed: {prep})")
        return
    name = args.name or cfg_path.stem
    out = Path(args.out)
    run_dir = out / name
    if (run_dir / "summary.json").exists():
        raise SystemExit(f"{run_dir} holds a finished run: choose another --name or delete it")
    overrides = [*args.overrides, ("data.prep_dir", prep), ("train.max_train_time_min", args.minutes),
                 ("train.val_every_min", args.every), ("data.val_limit", args.val_limit)]
    commit = source_commit()  # read before training: the code that trains
    t0 = time.monotonic()
    summary = train.run(root, args.config, overrides, out=out, name=name, resume=(run_dir / "last.pt").exists())
    train_wall = time.monotonic() - t0
    final = {}
    for domain in ("synthetic", "lightbox", "sunlamp"):
        rep = evaluate.run(Path(summary.run_dir), root, domain, checkpoint="last", prep_dir=prep,
                           out=Path(summary.run_dir) / "eval" / domain, n_examples=2, n_distributions=1,
                           progress=False)
        final[domain] = rep["metrics"]
    curve = read_curve(Path(summary.run_dir))
    record = {"name": name, "config": str(cfg_path), "overrides": list(args.overrides), "minutes": args.minutes,
              "curve": curve, "final": final, "steps": summary.global_step, "stopped": summary.stopped,
              "train_wall_s": round(train_wall, 1), "threads": torch.get_num_threads(), "data": str(root),
              "machine": platform.processor() or platform.machine(), "cores": os.cpu_count(), "commit": commit,
              "command": " ".join([Path(sys.executable).name, *sys.argv])}
    (Path(summary.run_dir) / "curve.json").write_text(json.dumps(record, indent=1))
    print(f"\n{name}: {summary.global_step} steps, {summary.stopped}, {torch.get_num_threads()} thread(s)")
    print(format_table(curve))
    print(f"{'domain':<10} {'score':>7} {'E_R med':>8} {'Acc@10':>7} {'E_T med':>8} {'IoU':>6}  (last checkpoint, all "
          f"images)")
    for d, m in final.items():
        print(f"{d:<10} {m['score']:7.3f} {m['e_r_median_deg']:8.1f} {m['acc@10']:7.3f} {m['e_t_median_m']:8.3f} "
              f"{m.get('loc_iou', float('nan')):6.3f}")
    print(f"plot: {plot_curves(out)}")


if __name__ == "__main__":
    main()
