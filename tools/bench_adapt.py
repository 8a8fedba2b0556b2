"""Domain adaptation of a trained run, measured on the stand-in: target and synthetic scores before and after.

    python tools/bench_adapt.py --run RUN --out OUT [--name TAG] [--methods refine self-train]
        [--domains lightbox sunlamp] [--checkpoint last] [--threads 1] [-- key=value ...]

For each target domain and method: ``speedpose adapt`` (``pipelines.adapt``, the dotted ``key=value`` overrides
are adaptation settings, e.g. ``refine.lr=1e-5``) into ``OUT/TAG/<domain>-<method>``, then ``speedpose evaluate`` of
the adapted run on that domain and on synthetic validation; the source run is evaluated once on every domain
(``OUT/source``, reused by later calls with the same ``--out``).  The target labels are used only here, to score:
adaptation reads the images through the label-free view.  For self-training, the rotation error of the accepted
pseudo-labels of each round is measured afterwards against the hidden labels.

Writes ``OUT/TAG/bench_adapt.json`` and prints one row per (domain, method): score, median E_R / E_T, IoU before ->
after and the relative change; synthetic validation score before -> after (all images, and, when the synthetic
check scored a subset, on the images it did not score: the check decides what is kept, so only those are an
unbiased read, e.g. ``check.images=100`` of the 200); adaptation time per 1,000 target images
(time / images x 1,000: for refine, whose steps are fixed, an overstatement on fewer than 1,000 images; measure its
cost on a root with 1,000 target images, e.g. ``speedpose synth --out lb1000 --train 1 --val 64 --lightbox 1000
--sunlamp 1``, then ``speedpose adapt --root lb1000 ...``).
Data default: the cached stand-in of ``tools/bench_learning.py`` (``--data``/``--prep`` for another root).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_learning import default_root, source_commit  # noqa: E402  (the tools folder is not a package)


def evaluate_once(run_dir: Path, root: Path, prep: Path, domain: str, checkpoint: str, out: Path) -> dict:
    """The metrics of ``run_dir`` on ``domain`` (synthetic: validation), read back when ``out`` holds them."""
    from pipelines import evaluate

    report = out / "report.json"
    if report.is_file():
        return json.loads(report.read_text())["metrics"]
    return evaluate.run(run_dir, root, domain, checkpoint=checkpoint, prep_dir=prep, out=out, n_examples=4,
                        n_distributions=1, progress=False)["metrics"]


def pseudo_label_errors(adapted: Path, root: Path, domain: str) -> list[dict]:
    """Per self-training round: accepted pseudo-labels and their rotation / translation errors against the hidden
    labels (medians, degrees and metres)."""
    import numpy as np
    import pandas as pd

    from speedpose.geometry.rotations import geodesic_angle_quat_wxyz
    from speedpose.labels import label_file, read_labels

    truth = {lab.filename: lab for lab in read_labels(label_file(root, domain))}
    rows = []
    for path in sorted((adapted / "self_train" / "pseudo_labels").glob("round_*.csv")):
        t = pd.read_csv(path)
        sel = t[t.selected.astype(bool)]
        if len(sel) == 0:
            rows.append({"round": path.stem, "accepted": 0})
            continue
        q_true = np.stack([truth[f].q_wxyz for f in sel.filename])
        r_true = np.stack([truth[f].r_cam_m for f in sel.filename])
        e_r = np.degrees(geodesic_angle_quat_wxyz(sel[["q_w", "q_x", "q_y", "q_z"]].to_numpy(), q_true))
        e_t = np.linalg.norm(sel[["r_x_m", "r_y_m", "r_z_m"]].to_numpy() - r_true, axis=1)
        rows.append({"round": path.stem, "accepted": int(len(sel)), "of": int(len(t)),
                     "e_r_median_deg": float(np.median(e_r)), "e_r_max_deg": float(np.max(e_r)),
                     "e_t_median_m": float(np.median(e_t))})
    return rows


def held_out_synthetic(source_eval: Path, adapted_eval: Path, check_images: int) -> dict | None:
    """Synthetic-validation score (mean over images) before and after on the images the synthetic check did not
    score (it scores ``check_images`` evenly spaced ones), or None when it scored them all: the check chooses what
    is kept, so only these are an unbiased read of the synthetic domain."""
    import pandas as pd

    from speedpose.data.subsets import evenly_spaced

    before, after = (pd.read_csv(d / "per_image.csv") for d in (source_eval, adapted_eval))
    seen = set(evenly_spaced(len(before), check_images).tolist()) if check_images else set()
    if len(before) != len(after) or not (before["filename"] == after["filename"]).all():
        raise SystemExit(f"{source_eval} and {adapted_eval}: per_image.csv of different image sets")
    keep = ~before["index"].isin(sorted(seen))  # "index": the record in the split, as the check's indices
    b, a = before[keep], after[keep]
    if len(b) == 0:
        return None
    return {"images": int(len(b)), "score_before": float(b["score"].mean()), "score_after": float(a["score"].mean())}


def _fmt(before: dict, after: dict, key: str) -> str:
    b, a = before.get(key, float("nan")), after.get(key, float("nan"))
    return f"{b:.3f} -> {a:.3f} ({(a - b) / b * 100:+.0f}%)" if b else f"{b:.3f} -> {a:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, type=Path, help="run folder written by `speedpose train`")
    ap.add_argument("--out", required=True, type=Path, help="folder of the adapted runs and evaluations")
    ap.add_argument("--name", default="default", help="tag of these settings (a subfolder of --out)")
    ap.add_argument("--methods", nargs="+", default=["refine", "self-train"], choices=["refine", "self-train"])
    ap.add_argument("--domains", nargs="+", default=["lightbox", "sunlamp"], choices=["lightbox", "sunlamp"])
    ap.add_argument("--checkpoint", default="last", help="source checkpoint: best, last or a file")
    ap.add_argument("--config", default=None, help="adaptation settings (default: configs/adapt.yaml)")
    ap.add_argument("--data", type=Path, default=None, help="SPEED+ root (default: the cached bench stand-in)")
    ap.add_argument("--prep", type=Path, default=None, help="its preprocessed folder")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("overrides", nargs="*", help="dotted adaptation overrides (key=value; after `--` when they "
                    "follow --methods or --domains)")
    args = ap.parse_args()

    import torch

    from pipelines import adapt

    if args.threads:
        torch.set_num_threads(args.threads)
    root = args.data or default_root()
    prep = args.prep or root.parent / (root.name + "-prep")
    if not (root / "camera.json").is_file():
        raise SystemExit(f"{root}: no SPEED+ root (run tools/bench_learning.py --prepare-only, or pass --data)")
    commit = source_commit()  # read before adapting: the code that adapts
    source = {d: evaluate_once(args.run, root, prep, d, args.checkpoint, args.out / "source" / d)
              for d in ("synthetic", *args.domains)}
    results = []
    for domain in args.domains:
        for method in args.methods:
            adapted = args.out / args.name / f"{domain}-{method}"
            record = adapt.run(args.run, root, domain, method, out=adapted, config=args.config,
                               overrides=list(args.overrides), checkpoint=args.checkpoint, prep_dir=prep,
                               progress=False)
            ev = args.out / args.name / "eval" / f"{domain}-{method}"
            row = {"domain": domain, "method": method, "before": source[domain],
                   "after": evaluate_once(adapted, root, prep, domain, "best", ev / domain),
                   "synthetic_before": source["synthetic"],
                   "synthetic_after": evaluate_once(adapted, root, prep, "synthetic", "best", ev / "synthetic"),
                   "adapt_s_per_1000": record["cost"]["seconds_per_1000_target_images"],
                   "check": {k: v for k, v in record["check"].items() if not k.startswith("metrics")},
                   "stopped_early": record.get("refine", {}).get("stopped")}
            row["synthetic_held_out"] = held_out_synthetic(args.out / "source" / "synthetic", ev / "synthetic",
                                                           record["check"]["images"])
            if method == "self-train":
                row["pseudo_labels"] = pseudo_label_errors(adapted, root, domain)
            results.append(row)
            print(f"{domain:<9} {method:<10} score {_fmt(row['before'], row['after'], 'score')}  "
                  f"E_R {_fmt(row['before'], row['after'], 'e_r_median_deg')}  "
                  f"E_T {_fmt(row['before'], row['after'], 'e_t_median_m')}  "
                  f"IoU {_fmt(row['before'], row['after'], 'loc_iou')}  | synthetic score "
                  f"{_fmt(row['synthetic_before'], row['synthetic_after'], 'score')}  | "
                  f"{row['adapt_s_per_1000']} s per 1,000 images", flush=True)
            held = row["synthetic_held_out"]
            if held is not None:
                print(f"    synthetic images the check did not score ({held['images']}): "
                      f"{_fmt({'s': held['score_before']}, {'s': held['score_after']}, 's')}")
            for pl in row.get("pseudo_labels", []):
                print(f"    {pl}")
    out = args.out / args.name / "bench_adapt.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"run": str(args.run), "checkpoint": args.checkpoint, "overrides": args.overrides,
                               "results": results, "threads": torch.get_num_threads(), "commit": commit,
                               "command": " ".join([Path(sys.executable).name, *sys.argv])}, indent=1))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
