"""`speedpose submit`: 1:1 coverage of the test files, refusal when an image could not be predicted (and
--allow-partial), unlabelled test sets, per-domain JSON, and the round trip through `speedpose score`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipelines import evaluate as evaluate_stage
from pipelines import preprocess as preprocess_stage
from pipelines import score as score_stage
from pipelines import submit as submit_stage
from speedpose.errors import InputError
from speedpose.labels import label_file, read_labels
from speedpose.submission import read_predictions_json, read_submission_csv


@pytest.fixture(scope="module")
def submission(smoke_run, tiny_prepared, tmp_path_factory):
    root, prep = tiny_prepared
    out = tmp_path_factory.mktemp("sub") / "submission.csv"
    s = submit_stage.run(smoke_run, root, out, write_json=True, prep_dir=prep, device="cpu", progress=False)
    return s


def test_one_line_per_test_image(submission, tiny_prepared):
    root, _ = tiny_prepared
    lines = submission.csv.read_text().splitlines()
    assert len(lines) == 6 and all(len(ln.split(",")) == 9 for ln in lines)
    parsed = read_submission_csv(submission.csv)
    for d in ("lightbox", "sunlamp"):
        names = [lab.filename for lab in read_labels(label_file(root, d))]
        assert [p.filename for p in parsed[d]] == names
    assert submission.missing == {}
    assert not (submission.csv.parent / f".{submission.csv.name}.cache").exists()


def test_json_files_match_the_csv(submission):
    parsed = read_submission_csv(submission.csv)
    for d in ("lightbox", "sunlamp"):
        js = read_predictions_json(submission.json[d])
        np.testing.assert_allclose([p.q_wxyz for p in js], [p.q_wxyz for p in parsed[d]], atol=1e-12)
        np.testing.assert_allclose([p.r_cam_m for p in js], [p.r_cam_m for p in parsed[d]], atol=1e-12)


def test_round_trip_through_score_reproduces_evaluate(submission, smoke_run, tiny_prepared, tmp_path):
    root, prep = tiny_prepared
    scores = score_stage.run(submission.csv, root)
    rep = evaluate_stage.run(smoke_run, root, "sunlamp", prep_dir=prep, out=tmp_path / "ev", device="cpu",
                             n_examples=0, n_distributions=0, progress=False)
    assert scores["sunlamp"].score == pytest.approx(rep["metrics"]["score"], abs=1e-9)
    assert scores["sunlamp"].mean_e_t_m == pytest.approx(rep["metrics"]["e_t_mean_m"], abs=1e-9)


@pytest.fixture(scope="module")
def broken_unlabelled(tiny_standin, tmp_path_factory):
    """A copy of the stand-in whose test files carry no poses (as during the competition) and whose lightbox
    img000002.jpg is corrupt; preprocessed with --skip-bad, so that image cannot be predicted."""
    base = tmp_path_factory.mktemp("broken")
    root = base / "speedplus"
    shutil.copytree(tiny_standin, root)
    for d in ("lightbox", "sunlamp"):
        f = label_file(root, d)
        f.write_text(json.dumps([{"filename": lab.filename} for lab in read_labels(f)]))
    (root / "lightbox" / "images" / "img000002.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    prep = base / "prep"
    preprocess_stage.run(root, out=prep, domains=("lightbox", "sunlamp"), size=(384, 256), workers=1,
                         skip_bad=True, progress=False)
    return root, prep


def test_refuses_when_an_image_could_not_be_predicted(broken_unlabelled, smoke_run, tmp_path):
    root, prep = broken_unlabelled
    out = tmp_path / "sub.csv"
    with pytest.raises(InputError, match=r"1 test image\(s\) could not be predicted.*img000002\.jpg"):
        submit_stage.run(smoke_run, root, out, prep_dir=prep, device="cpu", progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing written, no cache left


def test_allow_partial_writes_the_rest_and_says_so(broken_unlabelled, smoke_run, tmp_path):
    root, prep = broken_unlabelled
    out = tmp_path / "sub.csv"
    s = submit_stage.run(smoke_run, root, out, prep_dir=prep, device="cpu", allow_partial=True, progress=False)
    parsed = read_submission_csv(out)
    assert [p.filename for p in parsed["lightbox"]] == ["img000001.jpg", "img000003.jpg"]
    assert len(parsed["sunlamp"]) == 3
    assert s.missing == {"lightbox": ["img000002.jpg"]}
    assert "WARNING: 1 lightbox image(s) have no line" in submit_stage.format_summary(s)


def test_cli_submit_exit_codes(broken_unlabelled, smoke_run, tmp_path, capsys):
    from speedpose.cli import main

    root, prep = broken_unlabelled
    out = tmp_path / "s.csv"
    assert main(["submit", "--run", str(smoke_run), "--root", str(root), "--out", str(out), "--prep", str(prep),
                 "--device", "cpu"]) == 2
    assert "could not be predicted" in capsys.readouterr().err and not out.exists()
    assert main(["submit", "--run", str(tmp_path / "nothing"), "--root", str(root)]) == 2


def test_a_non_finite_estimate_is_refused(smoke_run, tiny_prepared, tmp_path, monkeypatch):
    root, prep = tiny_prepared
    real = submit_stage.predict_cached

    def nan_first(*args, **kwargs):
        p = real(*args, **kwargs)
        if args[1].domain == "sunlamp":
            p.r_cam_m[0] = np.nan
        return p

    monkeypatch.setattr(submit_stage, "predict_cached", nan_first)
    with pytest.raises(InputError, match=r"sunlamp: 1 \(e\.g\. img000001\.jpg\)"):
        submit_stage.run(smoke_run, root, tmp_path / "s.csv", prep_dir=prep, device="cpu", progress=False)
    assert list(tmp_path.iterdir()) == []
