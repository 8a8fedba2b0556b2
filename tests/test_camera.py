"""SPEED+ camera: camera.json validation, OpenCV distortion, undistortion, resize/crop intrinsics."""

import json

import cv2
import numpy as np
import pytest

from speedpose.camera import CAMERA_KEYS, Camera, load_camera, speedplus_camera
from speedpose.errors import InputError
from speedpose.geometry.rotations import random_rotation_matrices


@pytest.fixture()
def cam() -> Camera:
    return speedplus_camera()


def test_embedded_camera_equals_released_camera_json(real_sample):
    released = load_camera(real_sample / "camera.json")
    ours = speedplus_camera()
    np.testing.assert_allclose(ours.K, released.K)
    np.testing.assert_allclose(ours.dist, released.dist)
    assert (ours.width, ours.height) == (1920, 1200)


def test_projection_matches_opencv(cam):
    rng = np.random.default_rng(0)
    pts = rng.uniform([-1.5, -1, 3], [1.5, 1, 8], size=(200, 3))
    ours = cam.project(pts)
    ref, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), cam.K, cam.dist)
    np.testing.assert_allclose(ours, ref[:, 0], atol=1e-6)


def test_distortion_matters_at_the_border(cam):
    corner = np.array([[0.3, 0.19, 1.0]])  # near the image corner
    centre = np.array([[0.0, 0.0, 1.0]])
    assert np.linalg.norm(cam.project(corner) - cam.project(corner, distort=False)) > 10
    assert np.linalg.norm(cam.project(centre) - cam.project(centre, distort=False)) < 1e-9


def test_undistort_round_trip_over_the_whole_image(cam):
    u, v = np.meshgrid(np.linspace(0, 1919, 41), np.linspace(0, 1199, 31))
    uv = np.stack([u, v], -1)
    xy = cam.pixels_to_normalized(uv)
    back = cam.normalized_to_pixels(xy)
    assert np.abs(back - uv).max() < 1e-6
    und = cam.undistort_pixels(uv)
    assert np.abs(und - uv).max() > 5  # there is real distortion to undo at the border


def test_resized_intrinsics_follow_cv2_resize(cam):
    # a bright dot at a projected point stays on the projected point after cv2.resize
    img = np.zeros((1200, 1920), np.float32)
    u, v = 1234.0, 345.0
    img[int(v) - 4:int(v) + 5, int(u) - 4:int(u) + 5] = 1.0  # 9x9 square centred on (u, v)
    small = cv2.resize(img, (768, 480), interpolation=cv2.INTER_AREA)
    ys, xs = np.nonzero(small > 0)
    w = small[ys, xs]
    centroid = np.array([(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()])
    rc = cam.resized(768, 480)
    xy = cam.pixels_to_normalized(np.array([u, v]))
    np.testing.assert_allclose(rc.normalized_to_pixels(xy), centroid, atol=0.05)


def test_cropped_intrinsics(cam):
    pts = np.array([[0.1, -0.2, 5.0], [0.3, 0.1, 4.0]])
    c = cam.cropped(100, 50, 800, 600)
    np.testing.assert_allclose(c.project(pts), cam.project(pts) - [100, 50], atol=1e-9)


def test_project_body_points_uses_R_p_plus_r(cam):
    R = random_rotation_matrices(1, np.random.default_rng(1))[0]
    from speedpose.geometry.rotations import matrix_to_quat_wxyz
    q = matrix_to_quat_wxyz(R)
    p = np.array([[0.3, -0.2, 0.1]])
    r = np.array([0.2, -0.1, 6.0])
    np.testing.assert_allclose(cam.project_body_points(p, q, r), cam.project(p @ R.T + r), atol=1e-9)
    assert np.abs(cam.project_body_points(p, q, r) - cam.project(p @ R + r)).max() > 1


def _write_cam(tmp_path, data):
    p = tmp_path / "camera.json"
    p.write_text(json.dumps(data))
    return p


def test_camera_json_missing_key_is_named(tmp_path, cam):
    for key in CAMERA_KEYS:
        d = cam.to_json_dict()
        del d[key]
        with pytest.raises(InputError, match=f"missing key\\(s\\) {key}") as exc:
            load_camera(_write_cam(tmp_path, d))
        assert "camera.json" in str(exc.value)


@pytest.mark.parametrize("key,value,message", [
    ("distCoeffs", [0.1, 0.2], "5 finite numbers"),
    ("cameraMatrix", [[1, 0], [0, 1]], "3x3"),
    ("Nu", "1920", "finite number"),
    ("fx", 0.03, "disagrees with cameraMatrix"),
    ("ccx", 10, "disagree with cameraMatrix"),
])
def test_camera_json_bad_values(tmp_path, cam, key, value, message):
    d = cam.to_json_dict()
    d[key] = value
    with pytest.raises(InputError, match=message):
        load_camera(_write_cam(tmp_path, d))


def test_camera_json_malformed_names_line(tmp_path):
    p = tmp_path / "camera.json"
    p.write_text('{\n "Nu": 1920,\n "Nv": ,\n}')
    with pytest.raises(InputError, match="line 3"):
        load_camera(p)


def test_round_trip_json(tmp_path, cam):
    back = load_camera(_write_cam(tmp_path, cam.to_json_dict()))
    np.testing.assert_allclose(back.K, cam.K)
    np.testing.assert_allclose(back.dist, cam.dist)
