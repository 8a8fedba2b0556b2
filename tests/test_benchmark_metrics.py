"""Benchmark metrics against hand-computed values (per class, class average, pooled, log-likelihood)."""

from __future__ import annotations

import numpy as np
import pytest

from speedpose.benchmarks.metrics import benchmark_metrics, flat_metrics, format_metrics_table, rotation_errors_deg
from speedpose.errors import ShapeError
from speedpose.geometry.rotations import axis_angle_to_matrix


def test_rotation_errors_are_geodesic_angles_in_degrees():
    rng = np.random.default_rng(0)
    axes = rng.normal(size=(4, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.array([0.0, 10.0, 90.0, 179.0])
    R_true = np.asarray(axis_angle_to_matrix(rng.normal(size=(4, 3))))
    R_pred = np.asarray(axis_angle_to_matrix(axes * np.radians(angles)[:, None])) @ R_true
    np.testing.assert_allclose(rotation_errors_deg(R_pred, R_true), angles, atol=1e-6)


def test_per_class_and_class_average_by_hand():
    # class 0: errors 5, 20, 40 -> acc15 1/3, acc30 2/3, median 20
    # class 1: error 10 -> acc15 1, acc30 1, median 10
    # class 2: no image -> left out of the averages
    err = np.array([5.0, 20.0, 40.0, 10.0])
    cls = np.array([0, 0, 0, 1])
    m = benchmark_metrics(err, cls, ["a", "b", "c"])
    assert set(m["per_class"]) == {"a", "b"}
    a, b = m["per_class"]["a"], m["per_class"]["b"]
    assert (a["count"], a["acc15"], a["acc30"], a["median_deg"]) == (3, pytest.approx(1 / 3), pytest.approx(2 / 3),
                                                                      20.0)
    assert (b["count"], b["acc15"], b["acc30"], b["median_deg"]) == (1, 1.0, 1.0, 10.0)
    # the papers' number: plain mean over classes, NOT over images
    assert m["class_mean"]["acc15"] == pytest.approx((1 / 3 + 1) / 2)
    assert m["class_mean"]["acc30"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["class_mean"]["median_deg"] == pytest.approx(15.0)
    assert m["class_mean"]["classes"] == 2
    # pooled over the 4 images: acc15 2/4, median of (5, 10, 20, 40) = 15
    assert m["pooled"]["acc15"] == pytest.approx(0.5)
    assert m["pooled"]["acc30"] == pytest.approx(0.75)
    assert m["pooled"]["median_deg"] == pytest.approx(15.0)
    assert m["pooled"]["mean_deg"] == pytest.approx(18.75)
    flat = flat_metrics(m)
    assert flat["acc15"] == pytest.approx(2 / 3) and flat["pooled_acc15"] == pytest.approx(0.5)


def test_threshold_is_inclusive():
    m = benchmark_metrics(np.array([15.0, 30.0, 30.0001]), np.zeros(3, int), ["a"])
    assert m["pooled"]["acc15"] == pytest.approx(1 / 3)
    assert m["pooled"]["acc30"] == pytest.approx(2 / 3)


def test_log_likelihood_is_averaged_per_class_then_over_classes():
    m = benchmark_metrics(np.zeros(3), np.array([0, 0, 1]), ["a", "b"], log_likelihood=np.array([1.0, 3.0, -2.0]))
    assert m["per_class"]["a"]["log_likelihood"] == pytest.approx(2.0)
    assert m["class_mean"]["log_likelihood"] == pytest.approx(0.0)
    assert m["pooled"]["log_likelihood"] == pytest.approx(2.0 / 3)
    assert "loglik" in format_metrics_table(m)


@pytest.mark.parametrize("err, cls, names", [
    (np.zeros(2), np.zeros(3, int), ["a"]),          # length mismatch
    (np.zeros(2), np.array([0, 2]), ["a", "b"]),     # class out of range
    (np.zeros(0), np.zeros(0, int), ["a"]),          # nothing to score
    (np.zeros(2), np.array([0.0, 1.0]), ["a", "b"]), # float classes
])
def test_bad_inputs_raise_shape_error(err, cls, names):
    with pytest.raises(ShapeError):
        benchmark_metrics(err, cls, names)


def test_table_lists_every_class_and_both_averages():
    m = benchmark_metrics(np.array([1.0, 50.0]), np.array([0, 1]), ["bathtub", "bed"])
    text = format_metrics_table(m)
    for word in ("bathtub", "bed", "class mean", "all images"):
        assert word in text
