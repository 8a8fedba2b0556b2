"""SPEC2021 CSV and JSON submissions: round trips, every refusal, scoring the released labels."""

import json
import math

import numpy as np
import pytest

from pipelines.score import score_predictions
from speedpose.errors import InputError
from speedpose.labels import PoseLabel, read_labels
from speedpose.submission import (
    check_coverage,
    format_submission_csv,
    parse_submission_csv,
    read_predictions_json,
    read_submission_csv,
    write_predictions_json,
    write_submission_csv,
)

GOOD = "lightbox,img000001.jpg,1,0,0,0,0.1,0.2,5\nsunlamp,img000001.jpg,0,1,0,0,0,0,7\n"


def test_parse_and_round_trip(tmp_path):
    preds = parse_submission_csv(GOOD)
    assert list(preds) == ["lightbox", "sunlamp"]
    assert preds["sunlamp"][0].filename == "img000001.jpg"
    np.testing.assert_allclose(preds["lightbox"][0].r_cam_m, [0.1, 0.2, 5])
    path = tmp_path / "sub.csv"
    write_submission_csv(path, preds, {"lightbox": ["img000001.jpg"], "sunlamp": ["img000001.jpg"]})
    assert read_submission_csv(path)["lightbox"][0].filename == "img000001.jpg"
    assert path.read_text().count("\n") == 2
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("text,message", [
    ("lightbox,img1.jpg,1,0,0,0,0,0\n", "line 1: expected 9 comma-separated fields"),
    ("lightbox,img1.jpg,1,0,0,0,0,0,5\nspace,img2.jpg,1,0,0,0,0,0,5\n", "line 2: unknown category 'space'"),
    ("lightbox,../etc/passwd,1,0,0,0,0,0,5\n", "not a plain name"),
    ("lightbox,img1.jpg,nan,0,0,0,0,0,5\n", "non-finite"),
    ("lightbox,img1.jpg,1,0,0,0,inf,0,5\n", "non-finite"),
    ("lightbox,img1.jpg,1,0,0,0.1,0,0,5\n", "quaternion norm 1.004988"),
    ("lightbox,img1.jpg,1,0,0,0,0,0,5\nlightbox,img1.jpg,1,0,0,0,0,0,5\n", "line 2: duplicate entry"),
    ("lightbox,img1.jpg,a,0,0,0,0,0,5\n", "expected 7 numbers"),
    ("lightbox,img1.jpg,1,0,0,0,0,0,5\n\n", "line 2: empty line"),
])
def test_refusals_name_the_line(text, message):
    with pytest.raises(InputError, match=message):
        parse_submission_csv(text, "sub.csv")


def test_small_norm_deviation_is_renormalised():
    p = parse_submission_csv("lightbox,img1.jpg,1.0005,0,0,0,0,0,5\n")
    assert np.linalg.norm(p["lightbox"][0].q_wxyz) == pytest.approx(1.0)


def test_coverage_missing_extra_and_unknown_domain():
    preds = parse_submission_csv(GOOD)
    with pytest.raises(InputError, match="1 lightbox image\\(s\\) missing, e.g. img000002.jpg"):
        check_coverage(preds, {"lightbox": ["img000001.jpg", "img000002.jpg"], "sunlamp": ["img000001.jpg"]})
    with pytest.raises(InputError, match="not in the test set"):
        check_coverage(preds, {"lightbox": [], "sunlamp": ["img000001.jpg"]})
    with pytest.raises(InputError, match="not among the expected domains"):
        check_coverage(preds, {"lightbox": ["img000001.jpg"]})


def test_writer_refuses_incomplete_and_writes_nothing(tmp_path):
    path = tmp_path / "sub.csv"
    with pytest.raises(InputError):
        write_submission_csv(path, parse_submission_csv(GOOD), {"lightbox": ["a.jpg"], "sunlamp": ["img000001.jpg"]})
    assert not path.exists() and not list(tmp_path.iterdir())


def test_json_round_trip(tmp_path):
    preds = [PoseLabel("img1.jpg", np.array([0.0, 1.0, 0.0, 0.0]), np.array([0.1, -0.2, -3.0]))]
    write_predictions_json(tmp_path / "p.json", preds)
    back = read_predictions_json(tmp_path / "p.json")
    np.testing.assert_allclose(back[0].q_wxyz, preds[0].q_wxyz)
    np.testing.assert_allclose(back[0].r_cam_m, preds[0].r_cam_m)  # z < 0 accepted in predictions
    (tmp_path / "bad.json").write_text(json.dumps([{"filename": "img1.jpg"}]))
    with pytest.raises(InputError, match="index 0 \\(img1.jpg\\): missing pose"):
        read_predictions_json(tmp_path / "bad.json")


@pytest.fixture(scope="module")
def released_root(released_poses, tmp_path_factory):
    root = tmp_path_factory.mktemp("released")
    for domain, name in (("lightbox", "lightbox_test.json"), ("sunlamp", "sunlamp_test.json")):
        (root / domain).mkdir()
        (root / domain / "test.json").write_text((released_poses / name).read_text())
    return root


def test_released_labels_score_zero_against_themselves(released_root, tmp_path):
    preds = {d: read_labels(released_root / d / "test.json") for d in ("lightbox", "sunlamp")}
    path = tmp_path / "sub.csv"
    write_submission_csv(path, preds, {d: [p.filename for p in v] for d, v in preds.items()})
    assert len(path.read_text().splitlines()) == 6740 + 2791
    scores = score_predictions(read_submission_csv(path), released_root)
    assert scores["lightbox"].score == 0.0 and scores["sunlamp"].score == 0.0
    assert scores["lightbox"].count == 6740 and scores["sunlamp"].count == 2791


def test_released_labels_against_a_perturbed_copy(released_root):
    """Every lightbox prediction rotated by 1 deg about its own z axis and moved 5 cm along x:
    score = radians(1) + mean(0.05 / |r_gt|) (both parts above their thresholds for every image)."""
    from speedpose.geometry.rotations import axis_angle_to_matrix, matrix_to_quat_wxyz, quat_wxyz_to_matrix
    labels = read_labels(released_root / "lightbox" / "test.json")
    dR = axis_angle_to_matrix(np.array([0.0, 0.0, math.radians(1.0)]))
    preds = [PoseLabel(lab.filename, matrix_to_quat_wxyz(quat_wxyz_to_matrix(lab.q_wxyz) @ dR),
                       lab.r_cam_m + [0.05, 0.0, 0.0]) for lab in labels]
    s = score_predictions({"lightbox": preds}, released_root)["lightbox"]
    expected = math.radians(1.0) + np.mean([0.05 / np.linalg.norm(lab.r_cam_m) for lab in labels])
    assert s.score == pytest.approx(expected, rel=1e-9)
    assert s.mean_e_t_m == pytest.approx(0.05)
    assert s.mean_e_r_deg == pytest.approx(1.0, rel=1e-6)
    assert format_submission_csv({"lightbox": preds[:1]}).startswith("lightbox,img000001.jpg,")
