"""Virtual cameras: look-at rotation, homography, distortion-aware warp, pose transfer."""

import cv2
import numpy as np
import pytest

from speedpose.camera import speedplus_camera
from speedpose.geometry.rotations import geodesic_angle_matrix, quat_wxyz_to_matrix, random_rotation_matrices
from speedpose.tango import tango_keypoints_body
from speedpose.virtual_camera import VirtualCamera, rotation_z_to_ray


def test_look_at_pixel_puts_that_pixel_at_the_centre():
    cam = speedplus_camera()
    for uv in ([100.0, 80.0], [1800.0, 1100.0], [960.0, 600.0]):
        vc = VirtualCamera.look_at_pixel(cam, np.array(uv), 224, 1500.0)
        np.testing.assert_allclose(vc.real_to_virtual_pixels(cam, np.array(uv)), [111.5, 111.5], atol=1e-6)
        src = vc.source_pixels(cam)
        # the centre of the virtual image samples the chosen real pixel
        centre = (src[111, 111] + src[112, 112] + src[111, 112] + src[112, 111]) / 4
        np.testing.assert_allclose(centre, uv, atol=0.05)


def test_rotation_z_to_ray_is_a_rotation():
    R = rotation_z_to_ray(np.array([0.3, -0.2, 1.0]))
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(R[:, 2], np.array([0.3, -0.2, 1.0]) / np.linalg.norm([0.3, -0.2, 1.0]))


def test_homography_warp_matches_undistorted_camera():
    cam = speedplus_camera().undistorted()
    rng = np.random.default_rng(0)
    img = (rng.random((1200, 1920)) * 255).astype(np.uint8)
    img = cv2.GaussianBlur(img, (0, 0), 3)
    vc = VirtualCamera.look_at_pixel(cam, np.array([1500.0, 300.0]), 200, 3000.0)
    a = cv2.warpPerspective(img, vc.homography(cam), (200, 200), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    b = vc.warp(img, cam)
    assert np.abs(a.astype(int) - b.astype(int))[2:-2, 2:-2].max() <= 1


def test_pose_in_virtual_camera_projects_like_the_warped_image():
    cam = speedplus_camera()
    kp = tango_keypoints_body()
    R = random_rotation_matrices(1, np.random.default_rng(3))[0]
    r = np.array([1.2, -0.8, 5.0])
    uv_real = cam.project(kp @ R.T + r)
    vc = VirtualCamera.covering_box(cam, np.r_[uv_real.min(0), uv_real.max(0)], 256)
    R_v, r_v = vc.pose_to_virtual(R, r)
    uv_virt = vc.project(kp @ R_v.T + r_v)
    np.testing.assert_allclose(uv_virt, vc.real_to_virtual_pixels(cam, uv_real), atol=1e-6)
    assert (uv_virt > 0).all() and (uv_virt < 256).all()
    R_back, r_back = vc.pose_from_virtual(R_v, r_v)
    np.testing.assert_allclose(R_back, R, atol=1e-12)
    np.testing.assert_allclose(r_back, r, atol=1e-12)


def test_same_object_at_two_image_positions_has_the_same_virtual_rotation():
    """The crop model's premise: after the virtual-camera correction, an object seen at different places in the
    image (same attitude relative to the line of sight) gets the same rotation label; the raw label differs."""
    cam = speedplus_camera()
    R_virt = quat_wxyz_to_matrix(np.array([0.8, 0.2, -0.3, 0.45]))
    labels = []
    for uv in ([300.0, 200.0], [960.0, 600.0], [1700.0, 1050.0]):
        vc = VirtualCamera.look_at_pixel(cam, np.array(uv), 224, 2000.0)
        R_cam, r_cam = vc.pose_from_virtual(R_virt, np.array([0.0, 0.0, 6.0]))  # object on the ray through uv
        labels.append((vc, R_cam, r_cam))
    raw = [geodesic_angle_matrix(labels[0][1], lab[1]) for lab in labels[1:]]
    assert min(np.degrees(raw)) > 5  # the camera-frame rotations differ ...
    for vc, R_cam, r_cam in labels:  # ... the virtual-camera ones do not
        R_v, _ = vc.pose_to_virtual(R_cam, r_cam)
        assert np.degrees(geodesic_angle_matrix(R_v, R_virt)) < 1e-9


def test_pixels_in_maps_between_rolled_views_of_one_box():
    """Two virtual cameras on one box, the second rolled 70 deg about the optical axis: a point's projection in one
    maps to its projection in the other (the roll turns the crop about its centre)."""
    cam = speedplus_camera()
    a = VirtualCamera.look_at_pixel(cam, np.array([1400.0, 300.0]), 96, 150.0)
    b = VirtualCamera.look_at_pixel(cam, np.array([1400.0, 300.0]), 96, 150.0, in_plane_rad=np.radians(70))
    rng = np.random.default_rng(2)
    ray = np.linalg.solve(cam.K, [1400.0, 300.0, 1.0])
    pts = 8.0 * ray / np.linalg.norm(ray) + rng.normal(0, 0.4, (11, 3))  # camera frame [m], around the box
    uv_a, uv_b = a.project(pts @ a.R_cam_virt), b.project(pts @ b.R_cam_virt)
    np.testing.assert_allclose(a.pixels_in(b, uv_a), uv_b, atol=1e-9)
    np.testing.assert_allclose(b.pixels_in(a, uv_b), uv_a, atol=1e-9)
    centre = np.array([[47.5, 47.5]])  # the principal point
    np.testing.assert_allclose(a.pixels_in(b, centre), centre, atol=1e-9)  # the roll's fixed point
    assert np.linalg.norm(a.pixels_in(b, uv_a) - centre, axis=1) == pytest.approx(np.linalg.norm(uv_a - centre, axis=1))

    # the crops of a box rolled 45 deg cover it with another focal length: the mapping still holds
    from speedpose.pose.crops import CropSpec, crop_camera

    box = np.array([1300.0, 200.0, 1500.0, 330.0])
    c0, c45 = (crop_camera(cam, box, CropSpec(96, 1.3), np.radians(deg)) for deg in (0, 45))
    assert abs(c0.focal_px - c45.focal_px) > 1.0
    np.testing.assert_allclose(c0.pixels_in(c45, c0.project(pts @ c0.R_cam_virt)), c45.project(pts @ c45.R_cam_virt),
                               atol=1e-9)
