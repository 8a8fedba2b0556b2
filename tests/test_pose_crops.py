"""Crop geometry of the pose pipeline: exact labels under in-plane rotation, jitter, translation encoding."""

import numpy as np
import pytest

from speedpose.camera import speedplus_camera
from speedpose.geometry.rotations import random_rotation_matrices
from speedpose.pose.crops import CropSpec, crop_camera, decode_translation, encode_translation, jitter_box, scale_boxes
from speedpose.tango import keypoint_box, tango_keypoints_body

CAM = speedplus_camera()
KP = tango_keypoints_body()
SPEC = CropSpec(224, 1.3)


def _poses(n, seed=0):
    rng = np.random.default_rng(seed)
    R = random_rotation_matrices(n, rng)
    r = np.stack([rng.uniform(-0.6, 0.6, n), rng.uniform(-0.5, 0.5, n), rng.uniform(2.5, 10, n)], 1)
    return R, r


def test_in_plane_rotation_keeps_keypoints_consistent_with_the_updated_label():
    """Keypoints projected with the label in the rotated virtual camera land where the warp puts the real keypoints."""
    R, r = _poses(20)
    worst = 0.0
    for k in range(20):
        uv = CAM.project(KP @ R[k].T + r[k])
        box = keypoint_box(uv, 1920, 1200).unclipped
        theta = np.radians(np.random.default_rng(k).uniform(-180, 180))
        vc = crop_camera(CAM, box, SPEC, theta)
        R_v, r_v = vc.pose_to_virtual(R[k], r[k])
        from_label = vc.project(KP @ R_v.T + r_v)
        from_image = vc.real_to_virtual_pixels(CAM, uv)  # where the warped image shows the keypoints
        worst = max(worst, np.abs(from_label - from_image).max())
    assert worst < 1e-6


def test_in_plane_rotation_rotates_the_crop_content():
    R, r = _poses(1, 3)
    uv = CAM.project(KP @ R[0].T + r[0])
    box = keypoint_box(uv, 1920, 1200).unclipped
    a = crop_camera(CAM, box, SPEC, 0.0).real_to_virtual_pixels(CAM, uv) - 111.5
    b = crop_camera(CAM, box, SPEC, np.pi / 2).real_to_virtual_pixels(CAM, uv) - 111.5
    # rotating the camera by +90 deg about its axis turns the image content by -90 deg: (x, y) -> (y, -x)
    np.testing.assert_allclose(b, np.stack([a[:, 1], -a[:, 0]], 1), atol=1e-6)


def test_box_jitter_keeps_the_target_inside_the_crop():
    R, r = _poses(200, 1)
    rng = np.random.default_rng(7)
    for k in range(200):
        uv = CAM.project(KP @ R[k].T + r[k])
        box = keypoint_box(uv, 1920, 1200).unclipped
        jb = jitter_box(box, rng, SPEC, (0.8, 1.3), 0.3)
        vc = crop_camera(CAM, jb, SPEC)
        p = vc.real_to_virtual_pixels(CAM, uv)
        assert (p > -0.5).all() and (p < 223.5).all(), (k, p.min(), p.max())


def test_scale_boxes_keeps_the_centre():
    b = np.array([[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 2.0, 4.0]])
    s = scale_boxes(b, 1.5)
    np.testing.assert_allclose(s[0], [0.0, 15.0, 60.0, 45.0])
    np.testing.assert_allclose((s[:, :2] + s[:, 2:]) / 2, (b[:, :2] + b[:, 2:]) / 2)
    np.testing.assert_allclose(s[:, 2:] - s[:, :2], 1.5 * (b[:, 2:] - b[:, :2]))


def test_jitter_changes_the_box():
    box = np.array([800.0, 500.0, 1000.0, 650.0])
    rng = np.random.default_rng(0)
    boxes = np.stack([jitter_box(box, rng, SPEC) for _ in range(50)])
    assert boxes.std(axis=0).min() > 1.0


def test_translation_round_trip_and_prior():
    R, r = _poses(50, 2)
    for k in range(50):
        uv = CAM.project(KP @ R[k].T + r[k])
        vc = crop_camera(CAM, keypoint_box(uv, 1920, 1200).unclipped, SPEC, 0.7)
        enc = encode_translation(vc, r[k], SPEC)
        np.testing.assert_allclose(decode_translation(vc, enc, SPEC), r[k], atol=1e-9)
        assert abs(enc[0]) < 0.5 and abs(enc[1]) < 0.5
        assert abs(enc[2]) < 1.0  # the box-size prior is within a factor e of the true depth


def test_translation_error_scales_with_depth_error():
    R, r = _poses(1, 4)
    uv = CAM.project(KP @ R[0].T + r[0])
    vc = crop_camera(CAM, keypoint_box(uv, 1920, 1200).unclipped, SPEC)
    enc = encode_translation(vc, r[0], SPEC)
    off = decode_translation(vc, enc + [0, 0, np.log(1.01)], SPEC)
    assert np.linalg.norm(off - r[0]) == pytest.approx(0.01 * np.linalg.norm(r[0]), rel=1e-6)


def test_untrained_depth_output_still_decodes_to_a_finite_pose():
    R, r = _poses(1, 5)
    uv = CAM.project(KP @ R[0].T + r[0])
    vc = crop_camera(CAM, keypoint_box(uv, 1920, 1200).unclipped, SPEC)
    far = decode_translation(vc, np.array([0.0, 0.0, 1e4]), SPEC)
    ref = decode_translation(vc, np.array([0.0, 0.0, 5.0]), SPEC)
    assert np.isfinite(far).all() and np.allclose(far, ref)


def test_virtual_to_real_pixels_inverts_real_to_virtual():
    """Virtual crop pixels map back to the real, distorted image exactly (the predicted keypoints' way home)."""
    R, r = _poses(8, 5)
    worst = 0.0
    for k in range(8):
        uv = CAM.project(KP @ R[k].T + r[k])
        vc = crop_camera(CAM, keypoint_box(uv, 1920, 1200).unclipped, SPEC, np.radians(37.0 * k))
        back = vc.virtual_to_real_pixels(CAM, vc.real_to_virtual_pixels(CAM, uv))
        worst = max(worst, np.abs(back - uv).max())
    assert worst < 1e-6
