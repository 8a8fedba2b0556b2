"""SPEC2021 submissions: the challenge CSV and per-domain JSON in the label schema.

CSV: one file for both test domains, no header, one line per test image and nothing else::

    category,filename,q0,q1,q2,q3,r0,r1,r2

``category`` is ``lightbox`` or ``sunlamp``; ``q`` scalar-first as in the labels; ``r`` in metres.
Readers refuse, naming the line: wrong field count, unknown category, a file name with a directory part,
non-finite numbers, a quaternion whose norm is off by more than 1e-3 (smaller deviations are renormalised) and
duplicate (category, filename).  :func:`check_coverage` refuses missing and extra images.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from speedpose.errors import InputError
from speedpose.io_utils import atomic_write_text
from speedpose.labels import QUAT_NORM_TOLERANCE, PoseLabel, check_plain_filename, read_labels, write_labels

SUBMISSION_DOMAINS = ("lightbox", "sunlamp")
N_FIELDS = 9

Predictions = dict[str, list[PoseLabel]]


def parse_submission_csv(text: str, path: str | Path | None = None,
                         domains: Sequence[str] = SUBMISSION_DOMAINS) -> Predictions:
    """Parse and validate CSV text; returns ``{domain: [PoseLabel, ...]}`` in file order."""
    out: Predictions = {}
    seen: dict[tuple[str, str], int] = {}
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        where = f"line {lineno}"
        if not row or all(not c.strip() for c in row):
            raise InputError("empty line (the submission has one line per image and no other lines)", path, where)
        if len(row) != N_FIELDS:
            raise InputError(f"expected {N_FIELDS} comma-separated fields "
                             f"(category,filename,q0,q1,q2,q3,r0,r1,r2), got {len(row)}", path, where)
        category, filename = row[0].strip(), row[1].strip()
        if category not in domains:
            raise InputError(f"unknown category {category!r}; expected one of {', '.join(domains)}", path, where)
        check_plain_filename(filename, where, path)
        try:
            values = [float(v) for v in row[2:]]
        except ValueError:
            raise InputError(f"expected 7 numbers after the file name, got {row[2:]}", path, where) from None
        if not all(math.isfinite(v) for v in values):
            raise InputError(f"non-finite number in {row[2:]}", path, where)
        q = np.asarray(values[:4])
        norm = float(np.linalg.norm(q))
        if abs(norm - 1) > QUAT_NORM_TOLERANCE:
            raise InputError(f"quaternion norm {norm:.6f} is not 1 (tolerance {QUAT_NORM_TOLERANCE})", path, where)
        key = (category, filename)
        if key in seen:
            raise InputError(f"duplicate entry {category}/{filename} (first on line {seen[key]})", path, where)
        seen[key] = lineno
        out.setdefault(category, []).append(PoseLabel(filename, q / norm, np.asarray(values[4:])))
    return out


def read_submission_csv(path: str | Path, domains: Sequence[str] = SUBMISSION_DOMAINS) -> Predictions:
    """Read a SPEC2021 CSV (see module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found (expected a SPEC2021 submission CSV)", path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError("not a UTF-8 text file (expected a SPEC2021 submission CSV)", path) from None
    return parse_submission_csv(text, path, domains)


def format_submission_csv(predictions: Mapping[str, Sequence[PoseLabel]]) -> str:
    """CSV text for predictions (lightbox first, then sunlamp; order within a domain kept)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for domain in SUBMISSION_DOMAINS:
        for p in predictions.get(domain, []):
            if p.q_wxyz is None:
                raise InputError(f"no pose for {domain}/{p.filename}")
            writer.writerow([domain, p.filename, *(repr(float(v)) for v in p.q_wxyz),
                             *(repr(float(v)) for v in p.r_cam_m)])
    return buf.getvalue()


def check_coverage(predictions: Mapping[str, Sequence[PoseLabel]], expected: Mapping[str, Sequence[str]],
                   path: str | Path | None = None) -> None:
    """Refuse a submission that is not exactly one entry per expected (domain, filename).

    Args:
        predictions: ``{domain: [PoseLabel, ...]}``.
        expected: ``{domain: [filename, ...]}`` of the test images (the domains to cover).
    """
    for domain in predictions:
        if domain not in expected:
            raise InputError(f"entries for domain {domain!r}, which is not among the expected domains "
                             f"({', '.join(expected) or 'none'})", path)
    for domain, names in expected.items():
        got = [p.filename for p in predictions.get(domain, [])]
        dup = _first_duplicate(got)
        if dup:
            raise InputError(f"duplicate entry {domain}/{dup}", path)
        missing = sorted(set(names) - set(got))
        extra = sorted(set(got) - set(names))
        if missing:
            raise InputError(f"{len(missing)} {domain} image(s) missing, e.g. {', '.join(missing[:3])} "
                             f"(expected {len(names)} entries, got {len(got)})", path)
        if extra:
            raise InputError(f"{len(extra)} {domain} entr(ies) not in the test set, e.g. {', '.join(extra[:3])}", path)


def write_submission_csv(path: str | Path, predictions: Mapping[str, Sequence[PoseLabel]],
                         expected: Mapping[str, Sequence[str]] | None = None) -> None:
    """Validate (coverage too when ``expected`` is given) and write a SPEC2021 CSV atomically."""
    text = format_submission_csv(predictions)
    parsed = parse_submission_csv(text, path)  # the same validation a reader applies
    if expected is not None:
        check_coverage(parsed, expected, path)
    atomic_write_text(path, text)


def write_predictions_json(path: str | Path, predictions: Sequence[PoseLabel]) -> None:
    """Write one domain's predictions in the label schema (readable by :func:`read_predictions_json`)."""
    write_labels(path, predictions)


def read_predictions_json(path: str | Path) -> list[PoseLabel]:
    """Read one domain's predictions in the label schema (every record must carry a pose)."""
    return read_labels(path, require_poses=True, require_positive_z=False)


def _first_duplicate(names: Sequence[str]) -> str | None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            return n
        seen.add(n)
    return None
