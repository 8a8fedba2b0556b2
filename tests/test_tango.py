"""Tango keypoints and their 2D box."""

import numpy as np
import pytest

from speedpose.camera import speedplus_camera
from speedpose.tango import TANGO_SIZE_M, keypoint_box, project_keypoints, tango_keypoints_body


def test_keypoints_are_the_published_set():
    kp = tango_keypoints_body()
    assert kp.shape == (11, 3)
    np.testing.assert_allclose(kp[0], [-0.37, -0.385, 0.3215])
    np.testing.assert_allclose(kp[10], [0.305, -0.579, 0.2515])
    assert not kp.flags.writeable
    assert 1.0 < TANGO_SIZE_M < 1.5


def test_box_clipped_unclipped_and_truncation():
    uv = np.array([[[10.0, 20.0], [100.0, 50.0]], [[-30.0, 20.0], [2000.0, 1300.0]]])
    box = keypoint_box(uv, 1920, 1200)
    np.testing.assert_allclose(box.unclipped, [[10, 20, 100, 50], [-30, 20, 2000, 1300]])
    np.testing.assert_allclose(box.clipped, [[10, 20, 100, 50], [0, 20, 1919, 1199]])
    assert box.truncated.tolist() == [False, True]


def test_truncation_rate_of_released_lightbox_labels(released_poses):
    """SPEEDPLUS.md: about 15% of images have at least one keypoint outside the frame."""
    from speedpose.labels import read_labels, stack_poses
    q, r = stack_poses(read_labels(released_poses / "lightbox_test.json"))
    uv = project_keypoints(speedplus_camera(), q, r)
    rate = keypoint_box(uv, 1920, 1200).truncated.mean()
    assert 0.08 < rate < 0.25, rate


@pytest.mark.parametrize("distance", [3.0, 9.0])
def test_box_size_scales_with_inverse_distance(distance):
    cam = speedplus_camera()
    q = np.array([1.0, 0, 0, 0])
    uv = project_keypoints(cam, q, np.array([0.0, 0.0, distance]))
    box = keypoint_box(uv, 1920, 1200).unclipped
    width = box[2] - box[0]
    assert width == pytest.approx(cam.fx * (0.5427 * 2) / (distance + 0.2591 - 0.0) * 1.0, rel=0.1)
