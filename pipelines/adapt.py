"""Stage `adapt`: adapt a trained run to the unlabelled lightbox or sunlamp images; the result is a new run folder.

Inputs: a run folder (``speedpose train``), a SPEED+ root (each split preprocessed on demand, cached), the target
domain, the method and the adaptation settings (``configs/adapt.yaml`` + dotted overrides, ``task: adapt``).
Target images are read through :func:`speedpose.adapt.targets.unlabelled_view`: labels in the target file are
never used (preprocessing caches the whole file, poses included, as for any split; the view drops them).  Methods:

* ``refine``: test-time refinement of the BatchNorm layers by entropy minimisation
  (:mod:`speedpose.adapt.norm_refine`);
* ``self-train``: rounds of pseudo-labelling and fine-tuning on synthetic + pseudo-labelled target images
  (:mod:`speedpose.adapt.self_training`).

Both are guarded by the held-out synthetic check (:mod:`speedpose.adapt.check`).  The synthetic images (the check,
self-training's mixture) come from the root when it has a ``synthetic/`` folder, otherwise from the source run's own
training data (``data.root`` / ``data.prep_dir`` of its config): a folder of target images alone, such as the real
lightbox sample, is a valid root.

Outputs in ``out`` (default ``<run>-adapt-<domain>-<method>`` next to the run), usable by ``evaluate``, ``submit``
and ``predict`` like any run: ``config.yaml`` (the source run's, copied), ``best.pt`` = ``last.pt`` (the adapted
weights), ``adapt.json`` (source run and checkpoint, method, domain, settings, steps, images used, pseudo-labels
per round, the synthetic check before/after, time and CPU time of the adaptation itself, also per 1,000 target
images, the set-up time (loading the run, preprocessing splits on demand) apart, peak memory),
``metrics.csv`` (refine: per-step entropies and images used), ``self_train/`` (pseudo-label tables and the rounds'
training logs).  Resumable: ``.adapt/`` holds the inputs' key and the latest state; the same command continues an
interrupted adaptation, and is a no-op once ``adapt.json`` exists.  Nothing a resumption needs is deleted before
``adapt.json`` is written (the rounds' checkpoints and ``.adapt/`` go last).
"""

from __future__ import annotations

import resource
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from speedpose.adapt.check import SyntheticCheck
from speedpose.adapt.config import METHODS, TARGET_DOMAINS, AdaptExperiment
from speedpose.adapt.norm_refine import refinable_keys, refine
from speedpose.adapt.self_training import self_train
from speedpose.adapt.targets import unlabelled_view
from speedpose.config import RESOLVED_NAME, Override, config_hash, config_to_dict, load_config, with_options
from speedpose.config.shipped import find_config
from speedpose.data.loader import PreprocessedSplit, open_split
from speedpose.data.preprocess import open_or_preprocess
from speedpose.data.subsets import evenly_spaced
from speedpose.devices import resolve_device
from speedpose.errors import InputError
from speedpose.io_utils import atomic_write_json, read_json, sha256_file
from speedpose.labels import label_file
from speedpose.resumable import KEY_NAME, open_keyed
from speedpose.runs import load_run
from speedpose.training import BEST_NAME, LAST_NAME, MetricsLog, load_checkpoint, save_checkpoint

RECORD_NAME = "adapt.json"
WORK = ".adapt"
ADAPTED_FORMAT = "speedpose-adapted"


def default_out(run_dir: Path, domain: str, method: str) -> Path:
    """``<run>-adapt-<domain>-<method>`` next to the run folder."""
    run_dir = Path(run_dir)
    return run_dir.parent / f"{run_dir.name}-adapt-{domain}-{method}"


def load_adapt_config(config: str | Path | None, overrides: Sequence[Override] = ()) -> AdaptExperiment:
    """The adaptation settings: ``configs/adapt.yaml`` by default, a shipped name, or a file; plus overrides."""
    return load_config(find_config("adapt" if config is None else config), overrides, schema=AdaptExperiment)


def _open(root: Path, domain: str, split: str, prep_dir: Path | None, progress: bool) -> PreprocessedSplit:
    """A preprocessed split, preprocessed on demand; a clear error when the root lacks the domain."""
    try:
        return open_split(prep_dir if prep_dir is not None else root, domain, split, root=root)
    except InputError:
        labels = label_file(root, domain, split if domain == "synthetic" else None)
        if not labels.is_file():
            raise InputError(f"{domain}/{split} is not in this SPEED+ root (expected {labels}) and is not "
                             "preprocessed", root) from None
        return open_or_preprocess(root, domain, split, prep_dir, progress)


def synthetic_source(root: Path, prep_dir: Path | None, source_cfg) -> tuple[Path, Path | None]:
    """(root, preprocessed folder) of the synthetic images: ``root`` when it has ``synthetic/``, else the source
    run's ``data.root`` / ``data.prep_dir``; an :class:`InputError` when neither has them."""
    if (root / "synthetic").is_dir():
        return root, prep_dir
    d = source_cfg.data
    if d.root and (Path(d.root) / "synthetic").is_dir():
        return Path(d.root), Path(d.prep_dir) if d.prep_dir else None
    raise InputError("has no synthetic/ folder, and neither has the source run's data.root "
                     f"({d.root or 'not set'}): the synthetic check and self-training need synthetic images (or "
                     "set check.images=0 for refine)", root)


def _rusage() -> tuple[float, float]:
    """(CPU seconds of this process and its finished children, peak RSS [MiB] of either)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return (me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
            max(me.ru_maxrss, kids.ru_maxrss) / 1024.0)


def _prepare_out(out: Path, key: dict) -> dict | None:
    """Check ``out`` against ``key``: the finished record (a no-op), None (start or resume), or an error."""
    record = out / RECORD_NAME
    if record.is_file():
        done = read_json(record)
        if done.get("key") == key:
            return done
        raise InputError(f"already holds an adaptation with other inputs or settings ({RECORD_NAME}); choose "
                         "another --out", out)
    if not (out / WORK / KEY_NAME).is_file() and out.exists() and any(out.iterdir()):
        raise InputError("exists and is not an adaptation folder of `speedpose adapt`; choose another --out", out)
    open_keyed(out / WORK, key, on_mismatch="error",
               hint="re-run the command of that interrupted adaptation to finish it, or choose another --out")
    return None


def _clean_up(out: Path) -> None:
    """Remove what only a resumption needs, once ``adapt.json`` is written (a re-run of a finished adaptation
    finishes an interrupted clean-up): the rounds' checkpoints (the kept weights are in best.pt/last.pt; their logs
    stay) and the work folder."""
    for pt in (out / "self_train" / "rounds").glob("round_*/*.pt"):
        pt.unlink(missing_ok=True)
    shutil.rmtree(out / WORK, ignore_errors=True)


def run(run_dir: Path, root: Path, domain: str, method: str, *, out: Path | None = None,
        config: str | Path | None = None, overrides: Sequence[str] = (), seed: int | None = None,
        device: str | None = None, checkpoint: str = "best", prep_dir: Path | None = None,
        progress: bool = True) -> dict:
    """Adapt ``run_dir`` to ``domain`` with ``method`` (see the module docstring); returns adapt.json's content
    (with ``"skipped": True`` when the adaptation was already done)."""
    t_setup = time.perf_counter()
    if method not in METHODS:
        raise InputError(f"--method: expected one of {', '.join(METHODS)}, got {method!r}")
    if domain not in TARGET_DOMAINS:
        raise InputError(f"--domain: expected one of {', '.join(TARGET_DOMAINS)} (the unlabelled target "
                         f"domains), got {domain!r}")
    run_dir, root = Path(run_dir), Path(root)
    loaded = load_run(run_dir, checkpoint)
    acfg = load_adapt_config(config, with_options(overrides, {"train.seed": seed, "train.device": device}))
    if not root.is_dir():
        raise InputError("--root: not a folder (expected a SPEED+ root)", root)
    out = Path(out) if out is not None else default_out(run_dir, domain, method)
    if out.resolve() == run_dir.resolve():
        raise InputError("--out: the adapted run must go to a new folder, not the source run", out)
    if out.exists() and not out.is_dir():
        raise InputError("--out: exists and is not a folder (expected a new folder or an adaptation folder of "
                         "`speedpose adapt`)", out)

    if method == "self-train" and acfg.self_train.networks == "localiser" and loaded.model.localiser is None:
        raise InputError("self_train.networks=localiser: this run's model has no localiser (crop models have one); "
                         "use self_train.networks=all", run_dir)
    target_split = _open(root, domain, "test", prep_dir, progress)
    target = unlabelled_view(target_split)
    if len(target) == 0:
        raise InputError(f"{domain}/test holds no usable image", target_split.directory)
    key = {"source_run": str(run_dir.resolve()), "checkpoint": loaded.checkpoint.name,
           "checkpoint_sha256": sha256_file(loaded.checkpoint), "method": method, "domain": domain,
           "adapt_config_hash": config_hash(acfg, exclude=("description", "train.workers", "train.channels_last")),
           "target_fingerprint": target_split.manifest["fingerprints"]["inputs"]}
    needs_synthetic = bool(acfg.check.images) or method == "self-train"
    syn_root, syn_prep = synthetic_source(root, prep_dir, loaded.cfg) if needs_synthetic else (root, prep_dir)
    if syn_root != root:
        key["synthetic_root"] = str(syn_root.resolve())
    done = _prepare_out(out, key)
    if done is not None:
        _clean_up(out)
        return {**done, "skipped": True, "out": str(out)}
    check_split = _open(syn_root, "synthetic", "validation", syn_prep, progress) if acfg.check.images else None
    if method == "self-train":
        _open(syn_root, "synthetic", "train", syn_prep, progress)  # preprocessed before the rounds open it
    # the adaptation's own cost starts here: loading the run and preprocessing the splits are reported apart
    t0 = time.perf_counter()
    cpu0, _ = _rusage()

    dev = resolve_device(acfg.train.device, option="train.device")
    torch.manual_seed(acfg.train.seed)
    cfg = loaded.cfg
    check_idx = evenly_spaced(len(check_split), acfg.check.images) if check_split is not None else np.arange(0)
    check = SyntheticCheck(check_split, check_idx, loaded.kind, acfg.check.tolerance, dev, acfg.train.batch_size)
    model = loaded.model.to(dev)
    work = out / WORK
    if method == "refine":
        state_file = work / "refine_state.pt"
        state = load_checkpoint(state_file)["state"] if state_file.is_file() else None
        resumed = state is not None
        log = MetricsLog(out, tensorboard=False)
        log.truncate_after(int(state["step"]) if state is not None else 0)
        outcome = refine(model, target, loaded.kind, acfg.refine, check, acfg.check.every_steps, dev, acfg.train.seed,
                         state=state, on_checkpoint=lambda s: save_checkpoint(state_file, {"model": {}, "state": s}),
                         on_step=lambda step, m: log.log(step, 0, "adapt", m), progress=progress)
        log.close()
        details = {"refine": outcome.to_dict(), "refinable_keys": refinable_keys(model, acfg.refine.localiser,
                                                                                   acfg.refine.encoder)}
        images_used = outcome.used
        before, after = outcome.metrics_before, outcome.metrics_after
    else:
        resumed = (out / "self_train" / "state.json").is_file()
        outcome_st = self_train(model.cpu(), cfg, acfg, target, check, out / "self_train", syn_root.resolve(),
                                syn_prep, dev, progress)
        details = {"self_train": outcome_st.to_dict()}
        images_used = {"pseudo_labelled_per_round": [rec["selected"] for rec in outcome_st.rounds]}
        before, after = outcome_st.metrics_before, outcome_st.metrics_after
    model = model.to(dev).eval()

    shutil.copyfile(run_dir / RESOLVED_NAME, out / RESOLVED_NAME)
    ckpt = {"format": ADAPTED_FORMAT, "version": 1, "model": {k: v.cpu() for k, v in model.state_dict().items()},
            "global_step": loaded.step, "adapt": {"method": method, "domain": domain,
                                                   "source_run": str(run_dir.resolve()),
                                                   "source_checkpoint": str(loaded.checkpoint.resolve())}}
    save_checkpoint(out / LAST_NAME, ckpt)
    save_checkpoint(out / BEST_NAME, ckpt)

    seconds = time.perf_counter() - t0
    cpu1, peak = _rusage()
    n = len(target)
    record = {
        "format": "speedpose-adapt", "version": 1, "key": key, "method": method, "domain": domain,
        "source": {"run": str(run_dir.resolve()), "checkpoint": str(loaded.checkpoint.resolve()),
                   "step": loaded.step, "config_hash": loaded.config_hash},
        "target": {"images": n, "preprocessed": str(target_split.directory)},
        "synthetic_root": str(syn_root.resolve()) if needs_synthetic else None,
        "settings": config_to_dict(acfg),
        "images_used": images_used,
        "check": {"images": int(len(check.indices)), "tolerance": acfg.check.tolerance,
                  "score_before": None if before is None else before["score"],
                  "score_after": None if after is None else after["score"], "metrics_before": before,
                  "metrics_after": after},
        **details,
        "cost": {"device": str(dev), "seconds": round(seconds, 3), "cpu_seconds": round(cpu1 - cpu0, 3),
                 "seconds_per_1000_target_images": round(seconds / n * 1000, 3),
                 "cpu_seconds_per_1000_target_images": round((cpu1 - cpu0) / n * 1000, 3),
                 "setup_seconds": round(t0 - t_setup, 3), "peak_rss_mib": round(peak, 1), "resumed": resumed,
                 "note": "seconds and cpu_seconds: the adaptation itself, this session only (a resumed run's "
                         "earlier sessions are not counted); setup_seconds: loading the run and opening (on demand "
                         "preprocessing) the splits; peak_rss_mib: the whole process, set-up included; "
                         "*_per_1000_target_images: seconds / images x 1,000, which overstates refine on fewer "
                         "than 1,000 images and understates it on more (its refine.steps are fixed; only its "
                         "calibration, at most refine.calibration_images, grows with the images)"},
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(out / RECORD_NAME, record)
    _clean_up(out)  # only now: until adapt.json exists, a re-run resumes from these
    record["out"] = str(out)
    return record


def format_summary(record: dict) -> str:
    """A few lines for the terminal."""
    out = record.get("out", "")
    if record.get("skipped"):
        return f"already adapted ({record['method']} on {record['domain']}): {out}"
    lines = [f"{record['method']} on {record['domain']}: {record['target']['images']} target images, labels not used"]
    if "refine" in record:
        r = record["refine"]
        lines.append(f"refine: {r['steps_done']} steps; images that contributed (rotation/localisation) "
                     f"{r['used'].get('rotation', 0)}/{r['used'].get('localisation', 0)}; deployed statistics "
                     f"{100 * r.get('stats_mix', record['settings']['refine']['stats_mix']):.0f}% the target's")
        if r["stopped"] == "check_failed":
            lines.append(f"the synthetic check failed at step {r['checks'][-1]['step']} (score "
                         f"{r['checks'][-1]['score']:.4f}): kept the state of step {r['kept_step']}")
    if "self_train" in record:
        s = record["self_train"]
        sel = ", ".join(str(rec["selected"]) for rec in s["rounds"]) or "-"
        kept = "the source model" if s["kept_round"] is None else f"round {s['kept_round']}"
        why = {"completed": "", "check_failed": "; the synthetic check failed after the last round, discarded",
               "too_few_pseudo_labels": "; too few images passed the pseudo-label filters in the last round"}
        lines.append(f"self-train: pseudo-labelled per round {sel}; kept {kept}{why.get(s['stopped'], '')}")
    c = record["check"]
    if c["images"]:
        lines.append(f"synthetic check on {c['images']} images: score {c['score_before']:.4f} -> "
                     f"{c['score_after']:.4f} (tolerance +{100 * c['tolerance']:.0f}%)")
    cost = record["cost"]
    lines.append(f"{cost['seconds']:.1f} s ({cost['seconds_per_1000_target_images']:.0f} s per 1,000 target images), "
                 f"peak RSS {cost['peak_rss_mib']:.0f} MiB -> {out}")
    return "\n".join(lines)
