"""PASCAL3D+ adapter on a generated release-1.1 tree: splits, filtering, the viewpoint convention, the
virtual-camera warp (dots of a known object land where the label says), mirroring, RenderForCNN, bad formats."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from speedpose.benchmarks.datasets import MixedSamples, Pascal3DSamples
from speedpose.benchmarks.testing import (
    OBJECT_POINTS,
    dot_centroids,
    make_object,
    pascal_project,
    write_annotation,
    write_pascal3d_tree,
    write_renderforcnn,
)
from speedpose.data.pascal3d import PASCAL3D_CLASSES, Pascal3DAdapter, read_rgb, viewpoint_to_R_cam_obj
from speedpose.errors import InputError

VP_KEYS = ("azimuth", "elevation", "theta", "distance", "focal", "viewport", "px", "py")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("p3d")
    return root, write_pascal3d_tree(root)


def test_splits_counts_classes_and_filtering(tree):
    root, kept = tree
    adapter = Pascal3DAdapter(root)
    train, test = adapter.get_records("train"), adapter.get_records("test")
    # per class (aeroplane, car, chair): 1 VOC train + 1 ImageNet train + 1 ImageNet val kept; 2 VOC val
    assert len(train) == 9 and len(test) == 6
    assert train.filenames == [r["file"] for r in kept["train"]]
    assert test.filenames == [r["file"] for r in kept["test"]]
    assert len(PASCAL3D_CLASSES) == 12
    assert [PASCAL3D_CLASSES[c] for c in test.category_ids] == [r["class"] for r in kept["test"]]
    assert train.class_counts()["car"] == 3 and train.class_counts()["sofa"] == 0
    # dropped: a truncated first object, and an occluded first object although a good one follows (first object
    # only, as the reference); the VOC id without a PASCAL3D+ image is skipped silently
    reasons = sorted(r.reason for r in train.rejects)
    assert reasons == ["hard (occluded)"] * 3 + ["hard (truncated)"] * 3
    assert not test.rejects
    np.testing.assert_allclose(np.linalg.det(train.R_cam_obj), 1.0, atol=1e-12)


def test_label_reproduces_pascal3d_projection_in_the_full_image(tree):
    """K (R_cam_obj p + (0, 0, d)) must equal project_3d.m's pixels (minus 1: 0-based)."""
    root, kept = tree
    rec = Pascal3DAdapter(root).get_records("test")
    for i, r in enumerate(kept["test"]):
        vp = {k: r["object"]["viewpoint"][k] for k in VP_KEYS}
        expected = pascal_project(OBJECT_POINTS, **vp) - 1.0
        p = (OBJECT_POINTS @ rec.R_cam_obj[i].T + [0, 0, rec.extras["distance"][i]]) @ rec.extras["K"][i].T
        np.testing.assert_allclose(p[:, :2] / p[:, 2:], expected, atol=1e-6)
        # and the image drawn by the fixture has its dots there
        np.testing.assert_allclose(dot_centroids(read_rgb(rec.image_paths[i])), expected, atol=0.3)


def test_theta_sign_matters():
    R = viewpoint_to_R_cam_obj(30, 10, 20)
    assert not np.allclose(R, viewpoint_to_R_cam_obj(30, 10, -20), atol=1e-3)
    # theta is a roll about the optical axis: R(theta) = Rz(-theta) R(0)
    c, s = np.cos(np.radians(-20)), np.sin(np.radians(-20))
    np.testing.assert_allclose(R, np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ viewpoint_to_R_cam_obj(30, 10, 0),
                               atol=1e-12)


def _check_view(image, R_virt, vc, distance, points=OBJECT_POINTS, tol=0.6):
    t_virt = vc.R_cam_virt.T @ np.array([0.0, 0.0, distance])
    expected = vc.project(points @ R_virt.T + t_virt)
    np.testing.assert_allclose(dot_centroids(image), expected, atol=tol)


def test_warp_centres_the_object_with_the_virtual_camera_rotation(tree):
    root, _ = tree
    rec = Pascal3DAdapter(root).get_records("test")
    ds = Pascal3DSamples(rec, np.arange(len(rec)), image_size=224, margin=1.0)
    for i in range(len(rec)):
        image, R_virt, vc = ds.view(i)
        assert image.shape == (224, 224, 3)
        _check_view(image, R_virt, vc, rec.extras["distance"][i])
        # the virtual camera looks at the box centre: the drawn object is centred and fills the view
        ys, xs = np.nonzero(image.max(axis=2) > 60)
        assert abs((xs.min() + xs.max()) / 2 - 111.5) < 3 and abs((ys.min() + ys.max()) / 2 - 111.5) < 3
        assert max(xs.max() - xs.min(), ys.max() - ys.min()) > 200
        # the label is the full-image rotation seen from the rotated camera, not the full-image one
        assert not np.allclose(R_virt, rec.R_cam_obj[i], atol=1e-4)
        sample = ds[i]
        np.testing.assert_allclose(sample["R"].numpy(), R_virt, atol=1e-6)
        np.testing.assert_array_equal(sample["image"].numpy().transpose(1, 2, 0), image)


class _Rng:
    """Augmentation choices fixed: mirror on, no jitter (or a given roll)."""

    def __init__(self, roll_sigma: float = 0.0):
        self.roll_sigma = roll_sigma

    def rand(self):
        return 0.0

    def uniform(self, lo, hi, n):
        return np.zeros(n)

    def randn(self):
        return self.roll_sigma


def test_mirror_and_roll_keep_image_and_label_consistent(tree):
    """A left-right mirrored photo shows the x-mirrored object seen with azimuth and theta negated."""
    root, _ = tree
    rec = Pascal3DAdapter(root).get_records("test")
    ds = Pascal3DSamples(rec, np.arange(len(rec)), 224, 1.0, train=True, mirror=True, roll_std_deg=10.0,
                         box_jitter=0.1)
    mirrored_points = OBJECT_POINTS * np.array([-1.0, 1.0, 1.0])
    for i in range(len(rec)):
        image, R_virt, vc = ds.view(i, _Rng(roll_sigma=1.5))
        _check_view(image, R_virt, vc, rec.extras["distance"][i], mirrored_points)


def test_renderforcnn_split_and_mixing(tmp_path, tree):
    syn = write_renderforcnn(tmp_path, classes=("aeroplane", "car"), n_per_class=2, size=128)
    root, _ = tree
    adapter = Pascal3DAdapter(root, synthetic_root=tmp_path)
    rec = adapter.get_records("synthetic")
    assert len(rec) == 4 and [PASCAL3D_CLASSES[c] for c in rec.category_ids] == ["aeroplane"] * 2 + ["car"] * 2
    ds = Pascal3DSamples(rec, np.arange(4), 224, 1.0)
    for i, s in enumerate(syn):
        image, R_virt, vc = ds.view(i)
        _check_view(image, R_virt, vc, 4.0, s["points"], tol=0.8)
    mixed = MixedSamples(Pascal3DSamples(adapter.get_records("train"), np.arange(9), 64), ds, 0.75)
    assert len(mixed) == 9 + 27
    assert int(mixed[30]["index"]) == -1 and mixed[30]["image"].shape == (3, 224, 224)


def test_bad_names_in_renderforcnn_are_refused(tmp_path, tree):
    root, _ = tree
    bad = tmp_path / "syn_images_cropped_bkg_overlaid" / "02691156" / "m0" / "oops.png"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"")
    with pytest.raises(InputError, match="oops.png"):
        Pascal3DAdapter(root, synthetic_root=tmp_path).get_records("synthetic")


# ------------------------------------------------------------------------------------------------ bad input
def _small_tree(tmp_path):
    """A tree with one test record (car); returns (root, its annotation file)."""
    write_pascal3d_tree(tmp_path, classes=("car",), n_pascal_train=1, n_imagenet_train=0, n_imagenet_val=0,
                        n_test=1)
    test_id = (tmp_path / "PASCAL/VOCdevkit/VOC2012/ImageSets/Main/car_val.txt").read_text().split()[0]
    return tmp_path, tmp_path / "Annotations" / "car_pascal" / f"{test_id}.mat"


def test_missing_list_file_names_it(tmp_path):
    root, _ = _small_tree(tmp_path)
    (root / "Image_sets" / "sofa_imagenet_val.txt").unlink()
    with pytest.raises(InputError, match="sofa_imagenet_val.txt"):
        Pascal3DAdapter(root).get_records("train")


def test_missing_field_names_file_and_field(tmp_path):
    root, target = _small_tree(tmp_path)
    obj = make_object("car", np.random.default_rng(5), 320, 240)
    del obj["bbox"]
    write_annotation(target, target.stem + ".jpg", 320, 240, [obj])
    with pytest.raises(InputError) as info:
        Pascal3DAdapter(root).get_records("test")
    msg = str(info.value)
    assert target.name in msg and "'bbox'" in msg and "record.objects(1)" in msg


def test_non_numeric_viewpoint_field_is_refused(tmp_path):
    root, target = _small_tree(tmp_path)
    obj = make_object("car", np.random.default_rng(6), 320, 240)
    obj["viewpoint"]["azimuth"] = "north"
    write_annotation(target, target.stem + ".jpg", 320, 240, [obj])
    with pytest.raises(InputError, match=r"viewpoint.*'azimuth'"):
        Pascal3DAdapter(root).get_records("test")


def test_corrupt_mat_names_the_file(tmp_path):
    root, target = _small_tree(tmp_path)
    target.write_bytes(b"MATLAB garbage")
    with pytest.raises(InputError, match=target.name):
        Pascal3DAdapter(root).get_records("test")


def test_missing_imagenet_image_names_list_and_id(tmp_path):
    write_pascal3d_tree(tmp_path, classes=("car",), n_pascal_train=1, n_imagenet_train=1, n_imagenet_val=0,
                        n_test=1)
    for img in (tmp_path / "Images" / "car_imagenet").glob("*.JPEG"):
        img.unlink()
    with pytest.raises(InputError, match=r"car_imagenet_train.txt.*id n0000_"):
        Pascal3DAdapter(tmp_path).get_records("train")


def test_image_size_mismatch_is_refused(tmp_path):
    root, _ = _small_tree(tmp_path)
    rec = Pascal3DAdapter(root).get_records("test")
    cv2.imwrite(str(rec.image_paths[0]), np.zeros((10, 12, 3), np.uint8))
    with pytest.raises(InputError, match="12x10"):
        Pascal3DSamples(rec, np.arange(1))[0]


def test_viewpoint_absent_or_distance_zero_is_dropped(tmp_path):
    root, target = _small_tree(tmp_path)
    obj = make_object("car", np.random.default_rng(7), 320, 240)
    obj["viewpoint"] = np.zeros((0, 0))
    write_annotation(target, target.stem + ".jpg", 320, 240, [obj])
    rec = Pascal3DAdapter(root).get_records("test")
    assert len(rec) == 0 and rec.rejects[0].reason == "no viewpoint"
    obj = make_object("car", np.random.default_rng(7), 320, 240)
    obj["viewpoint"]["distance"] = 0.0
    write_annotation(target, target.stem + ".jpg", 320, 240, [obj])
    assert Pascal3DAdapter(root).get_records("test").rejects[0].reason == "distance 0"


@pytest.mark.parametrize("shrink", [1.0, 0.3])
def test_fast_pinhole_warp_equals_the_general_warp(tree, shrink):
    """The homography fast path gives the virtual camera's general (per-pixel map) warp, pyramid included."""
    from speedpose.benchmarks.datasets import warp_pinhole
    from speedpose.data.pascal3d import object_view, resolve_camera_and_box

    root, _ = tree
    rec = Pascal3DAdapter(root).get_records("test")
    for i in range(len(rec)):
        image = read_rgb(rec.image_paths[i])
        camera, box = resolve_camera_and_box(rec.extras["K"][i], rec.extras["box_xyxy"][i], image.shape[1],
                                             image.shape[0])
        vc = object_view(camera, box, int(224 * shrink), 1.0, 0.2)
        fast, ref = warp_pinhole(image, camera, vc).astype(int), vc.warp(image, camera).astype(int)
        assert np.abs(fast - ref).max() <= 2 and np.abs(fast - ref).mean() < 0.05
