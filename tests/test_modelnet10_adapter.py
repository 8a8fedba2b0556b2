"""ModelNet10-SO(3) adapter on npz fixtures: counts, classes, rotations, memory mapping, samples, bad formats."""

from __future__ import annotations

import numpy as np
import pytest

from speedpose.benchmarks.datasets import ModelNet10Samples
from speedpose.benchmarks.testing import write_modelnet10_npz, write_modelnet10_root
from speedpose.data.modelnet10 import MODELNET10_CLASSES, ModelNet10Adapter, npz_array_ref
from speedpose.errors import InputError
from speedpose.geometry.rotations import quat_wxyz_to_matrix


@pytest.fixture(scope="module")
def mn_root(tmp_path_factory):
    return write_modelnet10_root(tmp_path_factory.mktemp("mn"), n_train=20, n_limited=10, n_test=12, size=64)


def test_counts_classes_and_rotations(mn_root):
    adapter = ModelNet10Adapter(mn_root)
    for split, n in (("train", 20), ("limited_train", 10), ("test", 12)):
        rec = adapter.get_records(split)
        assert len(rec) == n and rec.split == split
        assert rec.category_names == MODELNET10_CLASSES and len(MODELNET10_CLASSES) == 10
        np.testing.assert_array_equal(rec.category_ids, np.arange(n) % 10)
        with np.load(mn_root / f"modelnet10_{split}.npz") as z:
            np.testing.assert_allclose(rec.R_cam_obj, z["rots"], atol=1e-6)
        np.testing.assert_allclose(np.asarray(quat_wxyz_to_matrix(rec.q_wxyz)), rec.R_cam_obj, atol=1e-9)
        np.testing.assert_allclose(np.linalg.det(rec.R_cam_obj), 1.0, atol=1e-9)
        assert rec.class_counts()["bathtub"] == (n + 9) // 10


def test_root_may_be_the_parent_folder(tmp_path):
    write_modelnet10_root(tmp_path / "modelnet10", n_train=2, n_limited=2, n_test=2, size=32)
    assert len(ModelNet10Adapter(tmp_path).get_records("test")) == 2


def test_uncompressed_images_are_memory_mapped_in_place(tmp_path):
    arrays = write_modelnet10_npz(tmp_path / "modelnet10_test.npz", 5, size=40)
    ref = npz_array_ref(tmp_path / "modelnet10_test.npz", "imgs")
    assert ref.offset is not None
    mm = ref.open()
    assert isinstance(mm, np.memmap)
    np.testing.assert_array_equal(np.asarray(mm), arrays["imgs"])


def test_compressed_npz_is_read_with_a_warning(tmp_path):
    arrays = write_modelnet10_npz(tmp_path / "modelnet10_test.npz", 4, size=40, compressed=True)
    with pytest.warns(UserWarning, match="compressed"):
        rec = ModelNet10Adapter(tmp_path).get_records("test")
    sample = ModelNet10Samples(rec, np.arange(4), 40)[3]
    np.testing.assert_array_equal(sample["image"][0].numpy(), arrays["imgs"][3, :, :, 0])


def test_samples_repeat_grey_and_carry_labels(mn_root):
    rec = ModelNet10Adapter(mn_root).get_records("test")
    ds = ModelNet10Samples(rec, np.array([7, 2]), 64)
    s = ds[0]
    with np.load(mn_root / "modelnet10_test.npz") as z:
        img = z["imgs"][7, :, :, 0]
        rots = z["rots"][7]
    assert s["image"].shape == (3, 64, 64) and s["image"].dtype.is_floating_point is False
    for c in range(3):
        np.testing.assert_array_equal(s["image"][c].numpy(), img)
    np.testing.assert_allclose(s["R"].numpy(), rots, atol=1e-6)
    assert int(s["class_id"]) == 7 and int(s["index"]) == 7
    assert ModelNet10Samples(rec, np.array([0]), 32)[0]["image"].shape == (3, 32, 32)


def _bad(tmp_path, **replace):
    write_modelnet10_npz(tmp_path / "modelnet10_test.npz", 6, size=32, **replace)
    with pytest.raises(InputError) as info:
        ModelNet10Adapter(tmp_path).get_records("test")
    return str(info.value)


def test_missing_key_names_file_and_key(tmp_path):
    msg = _bad(tmp_path, rots=None)
    assert "modelnet10_test.npz" in msg and "'rots'" in msg and "missing" in msg


def test_wrong_image_dtype_names_key(tmp_path):
    msg = _bad(tmp_path, imgs=np.zeros((6, 32, 32, 1), np.float32))
    assert "modelnet10_test.npz" in msg and "'imgs'" in msg and "uint8" in msg


def test_wrong_rotation_shape_names_key(tmp_path):
    msg = _bad(tmp_path, rots=np.zeros((6, 4), np.float32))
    assert "'rots'" in msg and "(6, 3, 3)" in msg


def test_non_rotation_names_index(tmp_path):
    rots = np.tile(np.eye(3, dtype=np.float32), (6, 1, 1))
    rots[4] = np.diag([1.0, 1.0, -1.0])  # a reflection
    msg = _bad(tmp_path, rots=rots)
    assert "'rots', index 4" in msg and "rotation" in msg


def test_class_out_of_range_names_index(tmp_path):
    msg = _bad(tmp_path, cat_ids=np.array([0, 1, 2, 10, 3, 4]))
    assert "'cat_ids', index 3" in msg


def test_length_mismatch_is_refused(tmp_path):
    msg = _bad(tmp_path, cat_ids=np.arange(5))
    assert "'cat_ids'" in msg and "(6,)" in msg


def test_missing_file_and_not_a_zip(tmp_path):
    with pytest.raises(InputError, match="modelnet10_train.npz"):
        ModelNet10Adapter(tmp_path).get_records("train")
    (tmp_path / "modelnet10_test.npz").write_text("not a zip")
    with pytest.raises(InputError, match="not an npz"):
        ModelNet10Adapter(tmp_path).get_records("test")
    with pytest.raises(InputError, match="unknown ModelNet10-SO"):
        ModelNet10Adapter(tmp_path).get_records("val")
