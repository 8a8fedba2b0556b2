"""Stage `evaluate`: score a trained run on one labelled domain and write a report.

Inputs: a run folder (``speedpose train``), a SPEED+ root (preprocessed on demand: ``speedpose preprocess`` is run
for the domain when its split is not preprocessed yet; it is cached, so this is a no-op the second time).
Outputs in ``out`` (default ``<run>/eval/<domain>-<split>-<checkpoint>``):

* ``report.json``: run, checkpoint, step, config hash, dataset root and fingerprint, the SPEC2021 score (thresholds on
  lightbox/sunlamp, none on synthetic, as :mod:`speedpose.scoring`), E_T [m] and E_R [deg] means and medians,
  Acc@2/5/10 deg, localisation IoU, and the same per distance bin and per truncation;
* ``per_image.csv``: one row per image (:func:`speedpose.report.per_image_table`, plus ``index``, ``loc_score`` and
  ``branch``, how the pose was obtained: ``model.pose_solver``);
* ``predictions.json``: the estimates in the label schema (``speedpose score predictions.json --domain D`` gives
  the same score);
* ``figures/``: error histograms, errors versus distance, overlays of the worst and best images, SO(3)
  distribution plots; ``report.html`` shows them all.

Inference runs in resumable chunks kept in ``out/.cache`` (:func:`speedpose.pose.split_inference.predict_cached`,
keyed by run, checkpoint file, config, dataset fingerprint, domain, split and batch size): an interrupted evaluation
resumes, and a re-run with the same inputs reuses every prediction and only redraws the report; a change of any of
them discards the cache.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from speedpose.data.loader import PreprocessedSplit
from speedpose.data.preprocess import open_or_preprocess
from speedpose.devices import resolve_device
from speedpose.errors import InputError, SpeedposeError
from speedpose.geometry.rotations import quat_wxyz_to_matrix
from speedpose.io_utils import atomic_path, atomic_write_json
from speedpose.labels import DOMAINS, PoseLabel
from speedpose.pose.split_inference import distributions_in_camera, inference_key, predict_cached
from speedpose.runs import load_run
from speedpose.scoring import default_thresholds, score_poses
from speedpose.submission import write_predictions_json

DEFAULT_SPLIT = {"synthetic": "validation", "lightbox": "test", "sunlamp": "test"}


def _frame(split: PreprocessedSplit, i: int) -> np.ndarray:
    """The full-resolution frame; the preprocessed image scaled up when the original JPEG is not available."""
    try:
        return split.full_image(i)
    except InputError:
        return cv2.resize(split.image(i), (split.camera.width, split.camera.height), interpolation=cv2.INTER_LINEAR)


def select_examples(df, n: int) -> tuple[list[int], list[int]]:
    """Row positions of the ``n`` worst and ``n`` best images by score (ties broken by position)."""
    order = np.lexsort((np.arange(len(df)), df["score"].to_numpy()))
    n = min(n, len(df))
    return [int(k) for k in order[::-1][:n]], [int(k) for k in order[:n]]


def run(run_dir: Path, root: Path, domain: str, *, split: str | None = None, checkpoint: str = "best",
        out: Path | None = None, prep_dir: Path | None = None, device: str | None = "auto",
        batch_size: int | None = None, n_examples: int = 6, n_distributions: int = 4,
        progress: bool = True) -> dict:
    """Evaluate ``run_dir`` on ``domain`` (see the module docstring); returns the content of report.json."""
    from speedpose.report import (breakdowns, error_histograms, errors_vs_distance, keypoint_errors, per_image_table,
                                  pose_overlay, reliability, reliability_diagram, summarise, write_png,
                                  write_report_html)
    from speedpose.viz.so3_plot import plot_so3_distribution

    if domain not in DOMAINS:
        raise InputError(f"--domain: expected one of {', '.join(DOMAINS)}, got {domain!r}")
    split = split or DEFAULT_SPLIT[domain]
    if domain != "synthetic" and split != "test":
        raise InputError(f"--split: domain {domain} has only the split 'test', got {split!r}")
    if domain == "synthetic" and split not in ("train", "validation"):
        raise InputError(f"--split: synthetic has the splits train and validation, got {split!r}")
    root = Path(root)
    loaded = load_run(run_dir, checkpoint)
    data = open_or_preprocess(root, domain, split, prep_dir, progress)
    if len(data) == 0:
        raise InputError(f"{domain}/{split} holds no usable image", data.directory)
    if not data.labelled.all():
        raise InputError(f"{domain}/{split} has {int((~data.labelled).sum())} unlabelled image(s): evaluate needs "
                         "poses (use `speedpose submit` for unlabelled test sets)", data.directory)
    dev = resolve_device(device)
    bs = int(batch_size or loaded.cfg.train.batch_size)
    if bs < 1:
        raise InputError(f"--batch-size: expected at least 1, got {bs}")
    out = Path(out) if out is not None else Path(run_dir) / "eval" / f"{domain}-{split}-{loaded.checkpoint.stem}"
    model = loaded.model.to(dev)
    idx = np.arange(len(data))
    pred = predict_cached(model, data, idx, loaded.kind, dev, bs, out / ".cache",
                          inference_key(loaded, data, bs), progress, desc=f"evaluate {domain}")
    thresholds = default_thresholds(domain)
    names = data.filenames
    df = per_image_table(names, pred.q_wxyz, pred.r_cam_m, data.q_wxyz, data.r_cam_m, thresholds,
                         truncated=data.records["truncated"].fillna(False).to_numpy(dtype=bool),
                         box_pred_xyxy=pred.box_xyxy, box_true_xyxy=data.kp_box(clipped=False),
                         confidence=pred.confidence)
    df.insert(1, "index", idx)
    df["loc_score"] = pred.loc_score
    df["branch"] = pred.branch  # how the pose was obtained (model.pose_solver)
    if pred.kp_uv is not None:  # a keypoint head: its error against the label's projected keypoints
        df["kp_err_px"], df["kp_confident"] = keypoint_errors(pred.kp_uv, pred.kp_conf, data.camera, data.q_wxyz,
                                                              data.r_cam_m, loaded.kind.inference.kp_min_confidence)
    finite = np.isfinite(pred.q_wxyz).all(axis=1) & np.isfinite(pred.r_cam_m).all(axis=1)
    if not finite.all():
        raise SpeedposeError(f"{int((~finite).sum())} non-finite prediction(s) in {domain}/{split}, e.g. "
                             f"{names[int(np.flatnonzero(~finite)[0])]}: the checkpoint is broken")
    official = score_poses(pred.q_wxyz, pred.r_cam_m, data.q_wxyz, data.r_cam_m, thresholds)

    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "per_image.csv") as tmp:
        df.to_csv(tmp, index=False)
    write_predictions_json(out / "predictions.json",
                           [PoseLabel(n, q, r) for n, q, r in zip(names, pred.q_wxyz, pred.r_cam_m)])
    figures = [(str(error_histograms(df, figs / "error_histograms.png", f"{domain}/{split}: {len(df)} images")
                    .relative_to(out)), "rotation and translation errors"),
               (str(errors_vs_distance(df, figs / "errors_vs_distance.png", f"{domain}/{split}")
                    .relative_to(out)), "errors versus the true distance (red triangles: truncated spacecraft)")]
    calibration = reliability(df)
    if calibration:
        figures.append((str(reliability_diagram(calibration, figs / "reliability.png").relative_to(out)),
                        "reliability: observed accuracy against the predicted rotation confidence (calibrated "
                        "for Acc@15 on the diagonal)"))
    worst, best = select_examples(df, n_examples)
    examples = {"worst": [], "best": []}
    for kind, rows in (("worst", worst), ("best", best)):
        for rank, k in enumerate(rows):
            r = df.iloc[k]
            text = (f"{r['filename']}  score {r['score']:.3f}  E_R {r['e_r_deg']:.1f} deg  E_T {r['e_t_m']:.2f} m\n"
                    f"|r| {r['distance_m']:.2f} m{'  truncated' if r.get('truncated') else ''}")
            if pred.kp_uv is not None:
                text += f"  keypoints {r['kp_err_px']:.1f} px ({int(r['kp_confident'])} confident)"
            img = pose_overlay(_frame(data, k), data.camera, pred.q_wxyz[k], pred.r_cam_m[k], data.q_wxyz[k],
                               data.r_cam_m[k], pred.box_xyxy[k], text=text,
                               kp_pred_uv=None if pred.kp_uv is None else pred.kp_uv[k],
                               kp_pred_conf=None if pred.kp_conf is None else pred.kp_conf[k])
            f = figs / f"{kind}_{rank:02d}_{Path(r['filename']).stem}.png"
            write_png(f, img)
            examples[kind].append((str(f.relative_to(out)), f"{kind} #{rank + 1}: {r['filename']}, score "
                                   f"{r['score']:.4f}, E_R {r['e_r_deg']:.2f} deg, E_T {r['e_t_m']:.3f} m"))
    # distributions: the best and the worst images, then from the middle of the ranking
    order = np.argsort(df["score"].to_numpy(), kind="stable")
    picks = list(dict.fromkeys([int(order[0]), int(order[-1]), int(order[len(order) // 2]),
                                int(order[len(order) // 4])]))[:n_distributions]
    dists = []
    if picks:
        _, R_grid, probs = distributions_in_camera(model, data, picks, loaded.kind, dev)
        for j, k in enumerate(picks):
            r = df.iloc[k]
            f = figs / f"so3_{Path(r['filename']).stem}.png"
            plot_so3_distribution(R_grid[j], probs[j], f, R_true=quat_wxyz_to_matrix(data.q_wxyz[k]),
                                  title=f"{r['filename']}: E_R {r['e_r_deg']:.1f} deg, confidence "
                                        f"{r['confidence']:.2f}", max_points=5000)
            dists.append((str(f.relative_to(out)), f"{r['filename']} (score {r['score']:.3f}): predicted "
                          "distribution in the camera frame (open circle: the truth)"))

    report = {
        "domain": domain, "split": split, "thresholds": thresholds,
        "run": {"dir": str(Path(run_dir).resolve()), "checkpoint": str(loaded.checkpoint.resolve()),
                "step": loaded.step, "config_hash": loaded.config_hash, "config_name": loaded.cfg.description},
        "dataset": {"root": str(root.resolve()), "preprocessed": str(data.directory),
                    "fingerprint": data.manifest["fingerprints"]["inputs"],
                    "images": len(data), "rejected_by_preprocess": int(data.manifest["counts"]["rejected"])},
        "device": str(dev), "batch_size": bs,
        "metrics": summarise(df), "spec2021": official.to_dict(), "breakdowns": breakdowns(df),
        "by_branch": {str(b): summarise(g) for b, g in df.groupby("branch")},
        "reliability": calibration,
        "files": {"per_image": "per_image.csv", "predictions": "predictions.json", "html": "report.html",
                  "figures": [f for f, _ in figures], "worst": [f for f, _ in examples["worst"]],
                  "best": [f for f, _ in examples["best"]], "distributions": [f for f, _ in dists]},
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_report_html(out / "report.html", report, figures, examples["worst"], examples["best"], dists)
    atomic_write_json(out / "report.json", report)
    report["out"] = str(out)
    return report


def format_report(report: dict) -> str:
    """A few lines for the terminal."""
    m = report["metrics"]
    lines = [f"{report['domain']}/{report['split']}: {m['count']} images, checkpoint "
             f"{Path(report['run']['checkpoint']).name} (step {report['run']['step']})",
             f"score {m['score']:.4f} (orientation {m['score_orientation']:.4f} + position {m['score_position']:.4f}; "
             f"thresholds {'on' if report['thresholds'] else 'off'})",
             f"E_T mean {m['e_t_mean_m']:.3f} m, median {m['e_t_median_m']:.3f} m; E_R mean {m['e_r_mean_deg']:.2f} "
             f"deg, median {m['e_r_median_deg']:.2f} deg",
             "Acc@2/5/10 deg " + "/".join(f"{m[k]:.3f}" for k in ("acc@2", "acc@5", "acc@10"))
             + (f"; localisation IoU {m['loc_iou']:.3f}" if "loc_iou" in m else ""),
             f"report: {Path(report['out']) / 'report.html'}"]
    return "\n".join(lines)
