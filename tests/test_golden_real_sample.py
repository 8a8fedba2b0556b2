"""Golden test on REAL SPEED+ lightbox images: the released labels, projected with our conventions, land on Tango.

The pixel positions below were read by eye from the images in ../shared/speedplus-real-sample (zoomed crops made
with tools/overlay_keypoints.py --zoom; solar-panel corners where the cell face meets the rim, antenna tips at the
centre of the rod's end).  Reading precision is about 2-3 px, so the tolerance is 5 px.  The same readings show that
ignoring the lens distortion or transposing R(q) misses them by more than the tolerance.
"""

import numpy as np
import pytest

from speedpose.camera import load_camera
from speedpose.geometry.rotations import quat_wxyz_to_matrix
from speedpose.labels import read_labels
from speedpose.tango import project_keypoints, tango_keypoints_body

TOLERANCE_PX = 5.0

# (image, keypoint number 1..11, u, v) read from the real images
GOLDEN = [
    ("img000001.jpg", 1, 857.0, 225.5),    # panel corner, 2.7 m, Earth background
    ("img000001.jpg", 4, 192.0, 739.0),    # panel corner near the left border
    ("img000001.jpg", 9, 1707.0, 993.0),   # antenna tip near the right border
    ("img000002.jpg", 1, 1158.0, 708.5),   # panel corner, 7.5 m, dark background
    ("img000002.jpg", 9, 836.0, 591.0),    # antenna tip
    ("img000002.jpg", 11, 1151.0, 920.0),  # antenna tip (faint)
    ("img000014.jpg", 11, 1188.0, 355.0),  # antenna tip against a bright cloud
    ("img000017.jpg", 11, 1551.0, 1057.0),  # antenna end cap near the bottom-right corner
    ("img000028.jpg", 1, 1227.0, 197.0),   # panel corner
    ("img000028.jpg", 9, 875.0, 116.0),    # antenna tip near the top border
    ("img000028.jpg", 11, 1365.0, 525.5),  # antenna tip
]


@pytest.fixture(scope="module")
def projections(real_sample):
    cam = load_camera(real_sample / "camera.json")
    labels = {lab.filename: lab for lab in read_labels(real_sample / "lightbox" / "test.json")}
    kp = tango_keypoints_body()
    out = {"read": [], "ours": [], "no_distortion": [], "transposed": []}
    for name, k, u, v in GOLDEN:
        lab = labels[name]
        R = quat_wxyz_to_matrix(lab.q_wxyz)
        out["read"].append([u, v])
        out["ours"].append(project_keypoints(cam, lab.q_wxyz, lab.r_cam_m)[k - 1])
        out["no_distortion"].append(project_keypoints(cam, lab.q_wxyz, lab.r_cam_m, distort=False)[k - 1])
        out["transposed"].append(cam.project(kp[k - 1] @ R + lab.r_cam_m))
    return {key: np.asarray(val) for key, val in out.items()}


def test_released_labels_project_onto_the_spacecraft(projections):
    err = np.linalg.norm(projections["ours"] - projections["read"], axis=1)
    assert err.max() < TOLERANCE_PX, dict(zip([g[:2] for g in GOLDEN], err.round(2)))


def test_ignoring_distortion_misses_the_border_keypoints(projections):
    err = np.linalg.norm(projections["no_distortion"] - projections["read"], axis=1)
    assert err.max() > TOLERANCE_PX
    assert (err > TOLERANCE_PX).sum() >= 2


def test_transposed_rotation_misses_everything(projections):
    err = np.linalg.norm(projections["transposed"] - projections["read"], axis=1)
    assert err.min() > TOLERANCE_PX
