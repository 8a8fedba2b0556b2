"""The SPEC2021 score against hand-computed values."""

import math

import numpy as np
import pytest

from speedpose.geometry.rotations import axis_angle_to_matrix, matrix_to_quat_wxyz
from speedpose.scoring import (
    ORIENTATION_THRESHOLD_DEG,
    POSITION_THRESHOLD,
    DomainScore,
    accuracy_at_deg,
    box_iou,
    combined_score,
    default_thresholds,
    fraction_within_deg,
    per_image_scores,
    score_poses,
    summarise_pose_errors,
)
from speedpose.errors import ShapeError

Q0 = np.array([[1.0, 0.0, 0.0, 0.0]])
R0 = np.array([[0.0, 0.0, 5.0]])


def q_about_z(deg: float) -> np.ndarray:
    return matrix_to_quat_wxyz(axis_angle_to_matrix(np.array([0.0, 0.0, math.radians(deg)])))[None]


def test_constants_are_the_spec2021_ones():
    assert ORIENTATION_THRESHOLD_DEG == 0.169
    assert POSITION_THRESHOLD == 2.173e-3
    assert default_thresholds("lightbox") and default_thresholds("sunlamp") and not default_thresholds("synthetic")


def test_perfect_is_zero_and_sign_flip_changes_nothing():
    s = score_poses(Q0, R0, Q0, R0, thresholds=True)
    assert s.score == 0.0
    s2 = score_poses(-q_about_z(10), R0, q_about_z(10), R0, thresholds=False)
    assert s2.score == pytest.approx(0.0, abs=1e-7)


def test_one_degree_contributes_0_017453_rad():
    s = score_poses(q_about_z(1.0), R0, Q0, R0, thresholds=True)
    assert s.score_orientation == pytest.approx(0.017453, abs=1e-6)
    assert s.score == pytest.approx(0.017453, abs=1e-6)
    assert s.mean_e_r_deg == pytest.approx(1.0)


def test_orientation_threshold_is_in_degrees():
    below = score_poses(q_about_z(0.168), R0, Q0, R0, thresholds=True)
    above = score_poses(q_about_z(0.170), R0, Q0, R0, thresholds=True)
    assert below.score == 0.0
    assert above.score == pytest.approx(math.radians(0.170), rel=1e-6)
    # without thresholds the small error counts
    assert score_poses(q_about_z(0.168), R0, Q0, R0, thresholds=False).score == pytest.approx(
        math.radians(0.168), rel=1e-6)


def test_position_threshold_is_relative_and_per_component():
    # |r| = 5 m: 2.173e-3 * 5 = 10.865 mm
    just_below = np.array([[0.0, 0.0108, 5.0]])
    just_above = np.array([[0.0, 0.0109, 5.0]])
    assert score_poses(Q0, just_below, Q0, R0, thresholds=True).score == 0.0
    assert score_poses(Q0, just_above, Q0, R0, thresholds=True).score == pytest.approx(0.0109 / 5)
    # per component: a position error below threshold is zeroed even with a large orientation error
    s = score_poses(q_about_z(2.0), just_below, Q0, R0, thresholds=True)
    assert s.score == pytest.approx(math.radians(2.0), rel=1e-6)
    assert s.score_position == 0.0


def test_translation_only():
    s = score_poses(Q0, np.array([[0.3, 0.4, 5.0]]), Q0, R0, thresholds=True)
    assert s.score == pytest.approx(0.5 / 5)
    assert s.mean_e_t_m == pytest.approx(0.5)
    assert s.score_orientation == 0.0


def test_domain_mean_and_medians():
    q_est = np.concatenate([q_about_z(1.0), q_about_z(3.0), Q0])
    r_est = np.array([[0.0, 0.0, 5.0], [0.0, 0.0, 6.0], [0.0, 0.5, 5.0]])
    q_gt = np.repeat(Q0, 3, axis=0)
    r_gt = np.repeat(R0, 3, axis=0)
    s = score_poses(q_est, r_est, q_gt, r_gt, thresholds=True)
    expected = (math.radians(1) + (math.radians(3) + 0.2) + 0.1) / 3
    assert s.score == pytest.approx(expected, rel=1e-9)
    assert s.median_e_r_deg == pytest.approx(1.0)
    assert s.median_e_t_m == pytest.approx(0.5)
    assert s.count == 3
    per = per_image_scores(q_est, r_est, q_gt, r_gt, thresholds=True)
    assert per["score"].shape == (3,)


def test_combined_mean():
    a = DomainScore(0.2, 0.1, 0.1, 0, 0, 0, 0, 1, True)
    b = DomainScore(0.4, 0.3, 0.1, 0, 0, 0, 0, 10, True)
    assert combined_score({"lightbox": a, "sunlamp": b}) == pytest.approx(0.3)
    assert combined_score({"lightbox": a}) is None


def test_accuracy_at_degrees():
    acc = accuracy_at_deg(np.radians([1.0, 4.0, 9.0, 20.0]))
    assert acc == {"acc@2": 0.25, "acc@5": 0.5, "acc@10": 0.75}


def test_acc_at_k_counts_an_error_of_exactly_k_degrees():
    assert fraction_within_deg(np.array([10.0]), 10.0) == 1.0
    assert fraction_within_deg(np.array([np.nextafter(10.0, 11.0)]), 10.0) == 0.0
    assert fraction_within_deg(np.array([9.0, 10.0, 10.5, 30.0]), 10.0) == 0.5
    assert math.isnan(fraction_within_deg(np.array([]), 10.0))
    # radians in, degrees as thresholds: 2, 5 and 10 degrees survive the round trip exactly
    acc = accuracy_at_deg(np.radians([2.0, 5.0, 10.0, 10.5]))
    assert acc == {"acc@2": 0.25, "acc@5": 0.5, "acc@10": 0.75}


def test_benchmark_and_speedplus_acc_share_the_rule():
    from speedpose.benchmarks.metrics import benchmark_metrics

    err = np.array([15.0, 30.0, 30.0001])
    m = benchmark_metrics(err, np.zeros(3, int), ["a"])["pooled"]
    s = summarise_pose_errors(np.zeros(3), np.zeros(3), np.zeros(3), err, thresholds_deg=(15.0, 30.0))
    assert (m["acc15"], m["acc30"]) == (s["acc@15"], s["acc@30"]) == (pytest.approx(1 / 3), pytest.approx(2 / 3))


def test_box_iou():
    a = np.array([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [np.nan, 0, 10, 10]])
    b = np.array([[0.0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    iou = box_iou(a, b)
    np.testing.assert_allclose(iou[:3], [1.0, 1 / 3, 0.0])
    assert np.isnan(iou[3])
    with pytest.raises(ShapeError, match=r"\(N, 4\)"):
        box_iou(a[:, :3], b[:, :3])


def test_summary_of_errors_by_hand():
    s = summarise_pose_errors(score_q=np.array([0.1, 0.3]), score_t=np.array([0.0, 0.2]),
                              e_t_m=np.array([1.0, 3.0]), e_r_deg=np.array([2.0, 30.0]),
                              loc_iou=np.array([0.5, np.nan]))
    assert s == {"count": 2, "score": pytest.approx(0.3), "score_orientation": pytest.approx(0.2),
                 "score_position": pytest.approx(0.1), "e_t_mean_m": 2.0, "e_t_median_m": 2.0,
                 "e_r_mean_deg": 16.0, "e_r_median_deg": 16.0, "acc@2": 0.5, "acc@5": 0.5, "acc@10": 0.5,
                 "acc@30": 1.0, "loc_iou": 0.5}
    no_box = summarise_pose_errors(np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2), np.full(2, np.nan))
    assert "loc_iou" not in no_box and "loc_iou" not in summarise_pose_errors(*np.zeros((4, 2)))
    assert summarise_pose_errors(*np.zeros((4, 0))) == {"count": 0}
    with pytest.raises(ShapeError):
        summarise_pose_errors(np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(3))
