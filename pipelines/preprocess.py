"""Stage `preprocess`: validate a SPEED+ root and write, per domain/split, an index table, resized images and a
manifest (layout in :mod:`speedpose.data.loader`).

Inputs: ``camera.json``, the label files, the images (and ``<domain>/masks/`` when present).
Parameters: ``size`` (W, H of the stored images), ``domains``, ``workers``, ``skip_bad``, ``force``.
Outputs: ``<out>/<domain>/<split>/`` (index.parquet, images.npy, scan.parquet, rejects.csv, manifest.json).
Caching, resuming and failure handling: :mod:`speedpose.data.preprocess` (a re-run with the same inputs does nothing;
an interrupted run resumes from its finished chunks; a bad image leaves nothing of its split behind).
"""

from __future__ import annotations

from pathlib import Path

from speedpose.data.preprocess import DEFAULT_SIZE, SplitSummary, preprocess_speedplus
from speedpose.errors import InputError
from speedpose.labels import DOMAINS


# ------------------------------------------------------------------------------------------------ parameters
def parse_size(text: str) -> tuple[int, int]:
    """``"768x512"`` -> (768, 512)."""
    parts = text.lower().split("x")
    try:
        w, h = (int(p) for p in parts)
    except ValueError:
        raise InputError(f"--size: expected WIDTHxHEIGHT such as 768x512, got {text!r}") from None
    if not (8 <= w <= 8192 and 8 <= h <= 8192):
        raise InputError(f"--size: width and height must be within 8..8192, got {w}x{h}")
    return w, h


def parse_domains(text: str | None) -> tuple[str, ...] | None:
    """``"synthetic,lightbox"`` -> ("synthetic", "lightbox"); None -> None (every domain present)."""
    if text is None:
        return None
    out = tuple(d.strip() for d in text.split(",") if d.strip())
    bad = [d for d in out if d not in DOMAINS]
    if bad or not out:
        raise InputError(f"--domains: unknown domain(s) {', '.join(bad) or '(none given)'}; "
                         f"expected a comma-separated subset of {', '.join(DOMAINS)}")
    return out


# ------------------------------------------------------------------------------------------------ the stage
def run(root: str | Path, *, out: str | Path | None = None, domains: tuple[str, ...] | None = None,
        size: tuple[int, int] = DEFAULT_SIZE, workers: int | None = None, skip_bad: bool = False,
        force: bool = False, progress: bool = True) -> list[SplitSummary]:
    """The stage: :func:`speedpose.data.preprocess.preprocess_speedplus` (its arguments, results and errors)."""
    return preprocess_speedplus(root, out=out, domains=domains, size=size, workers=workers, skip_bad=skip_bad,
                                force=force, progress=progress)


def format_summary(summaries: list[SplitSummary]) -> str:
    """A plain-text table of what :func:`run` did."""
    head = f"{'domain':<10} {'split':<11} {'images':>7} {'rejected':>9} {'labelled':>9} {'truncated':>10} " \
           f"{'seconds':>8}  action"
    lines = [head, "-" * len(head)]
    for s in summaries:
        lines.append(f"{s.domain:<10} {s.split:<11} {s.records:>7d} {s.rejected:>9d} {s.labelled:>9d} "
                     f"{s.truncated:>10d} {s.seconds:>8.2f}  {s.action}")
    if summaries and all(s.action == "up to date" for s in summaries):
        lines.append("nothing to do: every split is up to date (use --force to recompute)")
    if summaries:
        lines.append(f"output: {summaries[0].directory.parent.parent}")
    if any(s.rejected for s in summaries):
        lines.append("rejected records are listed in <domain>/<split>/rejects.csv")
    return "\n".join(lines)
