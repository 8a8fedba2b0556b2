"""Stage `score`: score a SPEC2021 CSV or per-domain JSON predictions against the labels under a SPEED+ root."""

from __future__ import annotations

from pathlib import Path

from speedpose.errors import InputError
from speedpose.io_utils import atomic_write_json
from speedpose.labels import DOMAINS, label_file, read_labels, stack_poses
from speedpose.scoring import DomainScore, combined_score, default_thresholds, score_poses
from speedpose.submission import check_coverage, read_predictions_json, read_submission_csv


def load_predictions(path: Path, domain: str | None) -> dict[str, list]:
    """``{domain: [PoseLabel]}`` from a CSV submission or a per-domain JSON file (which needs ``domain``)."""
    if path.suffix.lower() == ".json":
        if domain is None:
            raise InputError("a JSON predictions file holds one domain: pass --domain", path)
        return {domain: read_predictions_json(path)}
    preds = read_submission_csv(path)
    if domain is not None:
        if domain not in preds:
            raise InputError(f"no {domain} entries in the submission", path)
        preds = {domain: preds[domain]}
    return preds


def score_predictions(predictions: dict[str, list], root: Path, split: str | None = None,
                      thresholds: bool | None = None) -> dict[str, DomainScore]:
    """Score each domain's predictions against ``root``'s label file (coverage checked 1:1).

    Args:
        predictions: ``{domain: [PoseLabel]}``.
        root: SPEED+ root holding ``<domain>/test.json`` (``synthetic/<split>.json``).
        split: synthetic split (default ``validation``).
        thresholds: force the SPEC2021 thresholds on or off; default per domain (on for lightbox/sunlamp).
    """
    scores: dict[str, DomainScore] = {}
    for domain, preds in predictions.items():
        if domain not in DOMAINS:
            raise InputError(f"unknown domain {domain!r}; expected one of {', '.join(DOMAINS)}")
        lf = label_file(root, domain, split if domain == "synthetic" else None)
        labels = read_labels(lf)
        if not all(lab.labelled for lab in labels):
            raise InputError("the label file carries no poses (unlabelled test set): cannot score", lf)
        check_coverage({domain: preds}, {domain: [lab.filename for lab in labels]})
        by_name = {p.filename: p for p in preds}
        q_gt, r_gt = stack_poses(labels)
        q_est, r_est = stack_poses([by_name[lab.filename] for lab in labels])
        use_thr = default_thresholds(domain) if thresholds is None else thresholds
        scores[domain] = score_poses(q_est, r_est, q_gt, r_gt, thresholds=use_thr)
    return scores


def format_score_table(scores: dict[str, DomainScore]) -> str:
    """A plain-text table: one row per domain, plus the lightbox/sunlamp mean when both are present."""
    head = f"{'domain':<10} {'score':>8} {'orient.':>8} {'position':>9} {'E_T mean [m]':>13} {'E_R mean [deg]':>15} " \
           f"{'E_R med.':>9} {'images':>7}  thresholds"
    lines = [head, "-" * len(head)]
    for d, s in scores.items():
        lines.append(f"{d:<10} {s.score:>8.5f} {s.score_orientation:>8.5f} {s.score_position:>9.5f} "
                     f"{s.mean_e_t_m:>13.4f} {s.mean_e_r_deg:>15.3f} {s.median_e_r_deg:>9.3f} {s.count:>7d}  "
                     f"{'yes' if s.thresholds else 'no'}")
    comb = combined_score(scores)
    if comb is not None:
        lines.append(f"{'mean(lightbox, sunlamp)':<24} {comb:.5f}")
    return "\n".join(lines)


def run(predictions: Path, root: Path, *, domain: str | None = None, json_out: Path | None = None,
        thresholds: bool | None = None) -> dict[str, DomainScore]:
    """Score ``predictions`` against ``root``; write the numbers to ``json_out`` when given."""
    preds = load_predictions(Path(predictions), domain)
    scores = score_predictions(preds, Path(root), thresholds=thresholds)
    if json_out is not None:
        payload = {"predictions": str(predictions), "root": str(root),
                   "domains": {d: s.to_dict() for d, s in scores.items()},
                   "mean_lightbox_sunlamp": combined_score(scores)}
        atomic_write_json(json_out, payload)
    return scores
