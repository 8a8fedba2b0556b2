"""Stage `submit`: the SPEC2021 submission of a trained run, one line per lightbox and sunlamp test image.

Inputs: a run folder and a SPEED+ root whose ``lightbox/test.json`` and ``sunlamp/test.json`` list the test images
(labels are not needed: the competition's test files had none); each domain is preprocessed on demand (cached).
Output: the CSV (``category,filename,q0..q3,r0..r2``, no header), validated by :mod:`speedpose.submission` (format
and 1:1 coverage of the test files) before it is written atomically; optionally one JSON per domain in the label
schema next to it (``<stem>_lightbox.json``, ``<stem>_sunlamp.json``).
An image that could not be predicted (left out by ``preprocess --skip-bad``, or a non-finite estimate) makes the
stage refuse to write anything, unless ``allow_partial``: then those images get no line and the summary lists them.
Inference runs in resumable chunks (``.<csv name>.cache/`` next to the CSV, removed once the CSV is written).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speedpose.data.preprocess import open_or_preprocess
from speedpose.devices import resolve_device
from speedpose.errors import InputError
from speedpose.labels import PoseLabel, label_file, read_labels
from speedpose.pose.split_inference import inference_key, predict_cached
from speedpose.runs import load_run
from speedpose.submission import SUBMISSION_DOMAINS, write_predictions_json, write_submission_csv


@dataclass
class SubmitSummary:
    """What :func:`run` wrote.

    Attributes:
        csv: the submission file.
        json: per-domain JSON files (empty unless asked for).
        lines: lines per domain.
        missing: per domain, the test images without a line (only with ``allow_partial``).
    """

    csv: Path
    json: dict[str, Path] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)


def run(run_dir: Path, root: Path, out: Path = Path("submission.csv"), *, write_json: bool = False,
        checkpoint: str = "best", prep_dir: Path | None = None, device: str | None = "auto",
        batch_size: int | None = None, allow_partial: bool = False, progress: bool = True) -> SubmitSummary:
    """Predict every lightbox and sunlamp test image and write the submission (see the module docstring)."""
    root, out = Path(root), Path(out)
    loaded = load_run(run_dir, checkpoint)
    dev = resolve_device(device)
    model = loaded.model.to(dev)
    bs = int(batch_size or loaded.cfg.train.batch_size)
    if bs < 1:
        raise InputError(f"--batch-size: expected at least 1, got {bs}")
    expected: dict[str, list[str]] = {}
    preds: dict[str, list[PoseLabel]] = {}
    missing: dict[str, list[str]] = {}
    cache = out.parent / f".{out.name}.cache"
    splits = {}
    for domain in SUBMISSION_DOMAINS:
        expected[domain] = [lab.filename for lab in read_labels(label_file(root, domain))]
        splits[domain] = open_or_preprocess(root, domain, "test", prep_dir, progress)
        have = set(splits[domain].filenames)
        missing[domain] = [n for n in expected[domain] if n not in have]
    if any(missing.values()) and not allow_partial:  # known before any inference: refuse at once
        _refuse(missing, out)
    for domain, data in splits.items():
        p = predict_cached(model, data, np.arange(len(data)), loaded.kind, dev, bs, cache / domain,
                           inference_key(loaded, data, bs), progress, desc=f"submit {domain}")
        ok = np.isfinite(p.q_wxyz).all(axis=1) & np.isfinite(p.r_cam_m).all(axis=1)
        by_name = {n: PoseLabel(n, q, r) for n, q, r, good in zip(data.filenames, p.q_wxyz, p.r_cam_m, ok) if good}
        preds[domain] = [by_name[n] for n in expected[domain] if n in by_name]
        missing[domain] = [n for n in expected[domain] if n not in by_name]
    n_missing = sum(len(v) for v in missing.values())
    if n_missing and not allow_partial:
        shutil.rmtree(cache, ignore_errors=True)
        _refuse(missing, out)
    cover = expected if not n_missing else {d: [p.filename for p in preds[d]] for d in SUBMISSION_DOMAINS}
    write_submission_csv(out, preds, cover)
    summary = SubmitSummary(out, lines={d: len(v) for d, v in preds.items()},
                            missing={d: v for d, v in missing.items() if v})
    if write_json:
        for d in SUBMISSION_DOMAINS:
            jf = out.with_name(f"{out.stem}_{d}.json")
            write_predictions_json(jf, preds[d])
            summary.json[d] = jf
    shutil.rmtree(cache, ignore_errors=True)
    return summary


def _refuse(missing: dict[str, list[str]], out: Path) -> None:
    n = sum(len(v) for v in missing.values())
    detail = "; ".join(f"{d}: {len(v)} (e.g. {', '.join(v[:3])})" for d, v in missing.items() if v)
    raise InputError(f"{n} test image(s) could not be predicted ({detail}): nothing written; they were left out "
                     "by preprocessing (see rejects.csv) or got a non-finite estimate. Pass --allow-partial to "
                     "write the others", out)


def format_summary(s: SubmitSummary) -> str:
    """A few lines for the terminal."""
    lines = [f"submission written to {s.csv}: " + ", ".join(f"{d} {n} lines" for d, n in s.lines.items())]
    for d, v in s.missing.items():
        lines.append(f"WARNING: {len(v)} {d} image(s) have no line (--allow-partial), e.g. {', '.join(v[:5])}")
    for d, f in s.json.items():
        lines.append(f"{d} predictions (label schema): {f}")
    return "\n".join(lines)
