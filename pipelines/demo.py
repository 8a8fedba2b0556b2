"""Stage `demo`: the whole chain on a small rendered stand-in, within a time budget, in one command.

1. render a stand-in SPEED+ dataset (``pipelines.synth``; sizes scaled to the budget, see :func:`plan`) and, when
   the config trains on a crop set (``data.crop_set``), the crop set at the config's crop size
   (``pipelines.synth_crops``);
2. preprocess the frames (``pipelines.preprocess``);
3. train ``configs/standin_cpu.yaml`` (GPU when present) for the minutes left after the measured cost of steps 1-2
   and the estimated cost of step 4 (``train.max_time_min``);
4. evaluate on synthetic validation, lightbox and sunlamp (``pipelines.evaluate``), write the SPEC2021 submission
   (``pipelines.submit``) and score it (``pipelines.score``);
5. with ``adapt``: adaptation (``pipelines.adapt``, ``adapt_method``: refine by default, or self-train;
   ``configs/adapt.yaml`` + ``adapt_overrides``) of the trained run to the lightbox and to the sunlamp images, their
   labels unused, each adapted run evaluated on its domain and on synthetic validation (outside the time budget:
   about 1.5 minutes per domain for refine, 2-5 for self-train on a 2-core CPU; the submission stays the source
   run's);
6. write ``demo_summary.json`` and return a summary.

Re-running with the same ``out`` and budget reuses everything: rendering and preprocessing are resumable and
no-ops when done; training resumes an interrupted run and is skipped when its ``summary.json`` exists; evaluation
and submission are redone (a few minutes at most).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from speedpose.errors import InputError
from speedpose.io_utils import atomic_write_json, read_json
from speedpose.training.checkpoint import load_checkpoint

#: seconds of inference per image on a 2-core CPU (standin_cpu: localiser, Lite0 on 8 rolled crops, mode search at
#: level 5): the whole step 4 (700 images, three reports with figures, the submission) took 12 s on a 2-core EPYC
#: with one crop per image (0.017 s per image); 8 crops take 2.4 times as long (0.019 -> 0.046 s per image in
#: tools/compare_inference.py); with the overheads below it reserves a minute. The keypoint head and the fused
#: solver (standin_cpu since commit 0cea500) add 4-7% per image (63-64 -> 67 ms in tools/compare_inference.py, one
#: process, 2 threads); the demo still ends within its budget (14.6-14.7 min measured)
EVAL_S_PER_IMAGE = 0.05
#: share of the training stage's wall budget given to training steps (the rest: set-up, validations, checkpoints;
#: measured: 3 s over the training time on a 10-minute run)
TRAIN_SHARE = 0.95
#: a short run starts its photometric augmentation (and ramps it up) over this many steps per minute of budget, when
#: earlier than the config's augment.start_step / ramp_steps: a 15-minute demo ends near step 1,600, and standin_cpu's
#: 1,000 / 1,000 left most of it unaugmented. Measured side by side (README): 400 / 400 against 1,000 / 1,000 on the
#: demo's stand-in, sunlamp 22.3 vs 25.8 deg, lightbox 10.6 vs 13.4; in a 40-minute run 1,000 / 1,000 was ahead
AUGMENT_START_PER_MIN = 400 / 15
#: fixed overhead of each evaluation (model loading, figures, HTML) [s]
EVAL_OVERHEAD_S = 5.0


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of the demo's stand-in and its training budget."""

    minutes: float
    train: int
    val: int
    lightbox: int
    sunlamp: int
    config: str
    crops: int = 0
    seed: int = 0
    augment_start: int | None = None

    @property
    def eval_images(self) -> int:
        return self.val + 2 * (self.lightbox + self.sunlamp)  # evaluate lightbox/sunlamp, then submit them

    @property
    def eval_seconds(self) -> float:
        return self.eval_images * EVAL_S_PER_IMAGE + 5 * EVAL_OVERHEAD_S


def plan(minutes: float, config: str = "standin_cpu") -> DemoPlan:
    """Dataset sizes for a budget (15 minutes: 450 training frames, 100 images per evaluation domain, 15,000 crops)
    and the step at which its photometric augmentation starts (:data:`AUGMENT_START_PER_MIN`).

    Per minute of budget: 30 training frames (the localiser's data) within [8, 1000], 1,000 crops (the crop
    network's data, when the config trains on a crop set) within [64, 40000], and 100/15 images per evaluation
    domain within [3, 200].  A frame costs 0.1-0.25 s to render on 2 cores, a crop 4-10 ms: together about a
    sixth of the budget."""
    if not minutes > 0:
        raise InputError(f"--minutes: expected a positive number, got {minutes}")
    n_train = int(min(1000, max(8, round(30 * minutes))))
    n_eval = int(min(200, max(3, round(100 * minutes / 15))))
    n_crops = int(min(40000, max(64, round(1000 * minutes))))
    return DemoPlan(minutes, n_train, n_eval, n_eval, n_eval, config, n_crops,
                    augment_start=int(round(AUGMENT_START_PER_MIN * minutes)))


def augment_schedule(augment, p: DemoPlan) -> list[tuple[str, int]]:
    """The overrides of ``augment.start_step`` and ``ramp_steps`` for the plan's budget: ``p.augment_start`` each,
    where earlier than the config's ``augment`` section (never later); none without a planned start."""
    if p.augment_start is None:
        return []
    return [("augment.start_step", min(p.augment_start, augment.start_step)),
            ("augment.ramp_steps", min(p.augment_start, augment.ramp_steps))]


def _train(root: Path, prep: Path, runs: Path, p: DemoPlan, cfg, minutes_left: float, overrides: Sequence[str],
           progress: bool) -> dict:
    """Train ``cfg`` (the demo's experiment, ``overrides`` applied) within ``minutes_left``."""
    from pipelines import train
    from speedpose.pose.kinds import model_kind

    name = f"{p.config}-{p.minutes:g}min"
    run_dir = runs / name
    summary_file = run_dir / "summary.json"
    if summary_file.is_file():
        s = read_json(summary_file)
        return {"run_dir": str(run_dir), "action": "reused (finished earlier)", "stopped": s.get("stopped"),
                "global_step": s.get("global_step"), "best_value": s.get("best_value")}
    resume = (run_dir / "last.pt").is_file()
    budget = max(0.2, minutes_left)
    # the training-time budget (validation and set-up excluded; a resumed run's time so far counts too): the
    # config's cosine, when fitted to it (schedule.fit_time_budget), anneals to 0 as the wall budget ends
    spent_s = float(load_checkpoint(run_dir / "last.pt").get("train_time_s") or 0.0) if resume else 0.0
    train_budget = spent_s / 60 + TRAIN_SHARE * budget
    # a tiny budget renders fewer training images than the config's batch: shrink the batch to fit
    n_data = p.crops if model_kind(cfg).crop_set else p.train  # the crop network's data, or the frames
    extra = [("data.prep_dir", prep), ("train.max_train_time_min", round(train_budget, 3)),
             *([("train.batch_size", n_data)] if n_data < cfg.train.batch_size else []),
             *augment_schedule(cfg.augment, p), *overrides]
    s = train.run(root, p.config, extra, out=runs, name=name, resume=resume, max_time_min=budget,
                  progress=progress)
    return {"run_dir": str(s.run_dir), "action": "resumed" if resume else "trained", "stopped": s.stopped,
            "global_step": s.global_step, "best_value": s.best_value, "budget_min": round(budget, 2)}


def _adapt(run_dir: Path, root: Path, prep: Path, out: Path, before: dict, method: str, overrides: Sequence[str],
           n_examples: int, n_distributions: int, progress: bool) -> dict:
    """Adapt ``run_dir`` to each target domain with ``method``; per domain the adapted run's metrics next to
    ``before``."""
    from pipelines import adapt, evaluate

    result = {}
    for domain in ("lightbox", "sunlamp"):
        adapted = out / "runs" / f"{run_dir.name}-adapt-{domain}-{method}"
        record = adapt.run(run_dir, root, domain, method, out=adapted, overrides=list(overrides),
                           prep_dir=prep, progress=progress)
        after = {d: evaluate.run(adapted, root, d, prep_dir=prep, out=out / "eval" / f"{domain}-adapted" / d,
                                 n_examples=n_examples, n_distributions=n_distributions, progress=progress)
                 for d in (domain, "synthetic")}
        result[domain] = {"method": method, "run_dir": str(adapted), "before": before[domain]["metrics"],
                          "after": after[domain]["metrics"], "synthetic_before": before["synthetic"]["metrics"],
                          "synthetic_after": after["synthetic"]["metrics"],
                          "report": str(Path(after[domain]["out"]) / "report.html"),
                          "rounds": [{k: r.get(k) for k in ("round", "selected", "passed")}
                                     for r in record.get("self_train", {}).get("rounds", [])],
                          "minutes": round(record["cost"]["seconds"] / 60, 2)}
    return result


def run(out: Path = Path("demo"), minutes: float = 15.0, *, config: str = "standin_cpu",
        overrides: Sequence[str] = (), sizes: DemoPlan | None = None, n_examples: int = 4,
        n_distributions: int = 2, adapt: bool = False, adapt_method: str = "refine",
        adapt_overrides: Sequence[str] = (), progress: bool = True) -> dict:
    """Run the demo into ``out`` (see the module docstring); returns the summary also written to
    ``out/demo_summary.json``.

    Args:
        minutes: total budget (rendering, preprocessing, training, evaluation, submission).
        config: the experiment trained (``standin_cpu``; tests use ``smoke``).
        overrides: extra dotted config overrides for training.
        sizes: dataset sizes (default :func:`plan` of ``minutes``).
        n_examples, n_distributions: worst/best overlays and distribution plots per evaluation report.
        adapt: adapt the run to lightbox and to sunlamp afterwards (step 5, outside the budget).
        adapt_method: ``refine`` (the default: 1.4 minutes per domain on the demo's run, which it moved by -1% on
            lightbox and -13% on sunlamp with synthetic kept; self-training took longer and gained nothing on
            another demo run, -27% on lightbox on an older one; README) or ``self-train``.
        adapt_overrides: dotted overrides of the adaptation settings.
    """
    from speedpose.adapt.config import METHODS

    if adapt_method not in METHODS:
        raise InputError(f"--adapt-method: expected one of {', '.join(METHODS)}, got {adapt_method!r}")
    from pipelines import evaluate, preprocess, score, submit, synth, synth_crops, train
    from speedpose.config import load_config, resolve_config
    from speedpose.pose.kinds import model_kind
    from speedpose.pose.task import resolve_crop_set

    t0 = time.monotonic()
    p = sizes or plan(minutes, config)
    out = Path(out)
    # the renderer's format version is part of the name: a newer speedpose renders into a new folder
    version = getattr(synth, "FORMAT_VERSION", 0)
    root = out / f"standin-v{version}-{p.train}-{p.val}-{p.lightbox}-{p.sunlamp}-seed{p.seed}"
    if p.crops:
        root = root.with_name(root.name + f"-crops{p.crops}")
    prep = out / "preprocessed"
    say = print if progress else (lambda *a, **k: None)
    say(f"[demo] 1/4 stand-in dataset -> {root}")
    synth.run(root, p.train, p.val, p.lightbox, p.sunlamp, seed=p.seed, progress=progress)
    cfg = load_config(resolve_config(p.config, "speedplus"), list(overrides))
    crop_set = model_kind(cfg).crop_set
    if crop_set and not Path(crop_set).is_absolute():
        crops = resolve_crop_set(crop_set, str(root))
        say(f"[demo]     crop set ({p.crops} crops of {cfg.data.crop_size} px) -> {crops}")
        synth_crops.run(crops, synth_crops.CropSetParams(p.crops, cfg.data.crop_size, cfg.data.crop_margin,
                                                         seed=p.seed), progress=progress)
    say(f"[demo] 2/4 preprocess -> {prep}")
    preprocess.run(root, out=prep, progress=progress)
    spent = (time.monotonic() - t0) / 60
    left = p.minutes - spent - p.eval_seconds / 60
    say(f"[demo] 3/4 train {p.config}: up to {max(0.2, left):.1f} min ({spent:.1f} min spent so far); a finished "
        "run is reused")
    trained = _train(root, prep, out / "runs", p, cfg, left, overrides, progress)
    say(f"[demo]     training {trained['action']}: {trained['global_step']} steps, stopped by {trained['stopped']}")
    run_dir = Path(trained["run_dir"])
    say("[demo] 4/4 evaluate and submit")
    reports = {}
    for domain in ("synthetic", "lightbox", "sunlamp"):
        rep = evaluate.run(run_dir, root, domain, prep_dir=prep, out=out / "eval" / domain,
                           n_examples=n_examples, n_distributions=n_distributions, progress=progress)
        reports[domain] = {"metrics": rep["metrics"], "report": str(Path(rep["out"]) / "report.html")}
    sub = submit.run(run_dir, root, out / "submission.csv", prep_dir=prep, progress=progress)
    scores = score.run(sub.csv, root)
    summary = {
        "out": str(out), "plan": asdict(p), "dataset": str(root), "training": trained,
        "evaluation": reports, "submission": str(sub.csv),
        "submission_scores": {d: s.to_dict() for d, s in scores.items()},
    }
    if adapt:
        say(f"[demo] 5/5 adapt ({adapt_method}) to lightbox and to sunlamp (their labels unused; outside the "
            "budget)")
        t_adapt = time.monotonic()
        summary["adaptation"] = _adapt(run_dir, root, prep, out, reports, adapt_method, adapt_overrides,
                                       n_examples, n_distributions, progress)
        summary["adapt_minutes"] = round((time.monotonic() - t_adapt) / 60, 2)
    summary["wall_minutes"] = round((time.monotonic() - t0) / 60, 2)
    atomic_write_json(out / "demo_summary.json", summary)
    return summary


def format_summary(s: dict) -> str:
    """The lines `speedpose demo` prints."""
    t = s["training"]
    lines = [f"speedpose demo finished in {s['wall_minutes']:.1f} min (budget {s['plan']['minutes']:g} min)",
             f"training: {t['action']}, {t['global_step']} steps, stopped by {t['stopped']} -> {t['run_dir']}",
             f"{'domain':<10} {'images':>6} {'score':>7} {'E_T med [m]':>12} {'E_R med [deg]':>14} {'Acc@10':>7}  "
             "report"]
    for d, r in s["evaluation"].items():
        m = r["metrics"]
        lines.append(f"{d:<10} {m['count']:>6d} {m['score']:>7.4f} {m['e_t_median_m']:>12.3f} "
                     f"{m['e_r_median_deg']:>14.2f} {m['acc@10']:>7.3f}  {r['report']}")
    lines.append("learned: " + "; ".join(
        f"{d} median rotation error {r['metrics']['e_r_median_deg']:.1f} deg, "
        f"{100 * r['metrics']['acc@10']:.0f}% within 10 deg" for d, r in s["evaluation"].items()))
    for d, a in s.get("adaptation", {}).items():
        b, f = a["before"], a["after"]
        lines.append(f"adapted to {d} ({a['method']}, labels unused, {a['minutes']:.1f} min): score "
                     f"{b['score']:.4f} -> {f['score']:.4f}, E_R med {b['e_r_median_deg']:.2f} -> "
                     f"{f['e_r_median_deg']:.2f} deg, E_T med "
                     f"{b['e_t_median_m']:.3f} -> {f['e_t_median_m']:.3f} m; synthetic score "
                     f"{a['synthetic_before']['score']:.4f} -> {a['synthetic_after']['score']:.4f}  {a['report']}")
    sc = s["submission_scores"]
    if "lightbox" in sc and "sunlamp" in sc:
        lines.append(f"submission {s['submission']}: mean(lightbox, sunlamp) score "
                     f"{(sc['lightbox']['score'] + sc['sunlamp']['score']) / 2:.4f} (SPEC2021 thresholds on)")
    lines.append("(a stand-in rendered by speedpose, trained for minutes on this machine: lightbox and sunlamp here "
                 "are the stand-in's imitations of the real domains, not SPEED+'s; see the README's Results)")
    return "\n".join(lines)


__all__ = ["DemoPlan", "format_summary", "plan", "run"]
