"""The image store and decoding helpers of preprocessing (speedpose.data.image_store)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from speedpose.camera import speedplus_camera
from speedpose.data.image_store import (create_store, decode_scale, load_resized, mask_box, open_store, store_offset,
                                        write_rows)


@pytest.mark.parametrize("target, scale", [((768, 512), 2), ((960, 600), 2), ((961, 600), 1), ((480, 300), 4),
                                           ((240, 150), 8), ((100, 60), 8), ((1920, 1200), 1), ((3000, 2000), 1)])
def test_decode_scale_never_below_target(target, scale):
    assert decode_scale((1920, 1200), target) == scale


def test_store_round_trip_disjoint_writers(tmp_path):
    path = tmp_path / "s.npy"
    create_store(path, 5, (7, 3))
    offset, shape = store_offset(path)
    assert shape == (5, 3, 7)
    rows = np.arange(5 * 3 * 7, dtype=np.uint8).reshape(5, 3, 7)
    import os

    for order in ([4, 1], [0, 2, 3]):  # two "workers" writing rows in any order
        fd = os.open(path, os.O_WRONLY)
        for r in order:
            write_rows(fd, offset, r, rows[r:r + 1])
        os.close(fd)
    np.testing.assert_array_equal(np.load(path), rows)  # a plain .npy
    mm = open_store(path)
    assert isinstance(mm, np.memmap) and not mm.flags.writeable
    np.testing.assert_array_equal(mm[3], rows[3])
    create_store(tmp_path / "empty.npy", 0, (7, 3))
    assert open_store(tmp_path / "empty.npy").shape == (0, 3, 7)


def test_load_resized_matches_full_decode(tmp_path):
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 255, (1200, 1920), dtype=np.uint8), (0, 0), 3)
    path = tmp_path / "a.jpg"
    cv2.imwrite(str(path), np.dstack([img] * 3), [cv2.IMWRITE_JPEG_QUALITY, 95])  # 3-channel R=G=B decodes gray
    small, problem = load_resized(path, (1920, 1200), (768, 512))
    assert problem == "" and small.shape == (512, 768) and small.dtype == np.uint8
    ref = cv2.resize(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), (768, 512), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(float) - ref).mean() < 1.0
    # the intrinsics of the stored image follow Camera.resized: a bright dot lands where the resized camera says
    dot = np.zeros((1200, 1920), np.uint8)
    cv2.circle(dot, (1500, 300), 12, 255, -1)
    cv2.imwrite(str(path), dot, [cv2.IMWRITE_JPEG_QUALITY, 100])
    small, _ = load_resized(path, (1920, 1200), (768, 512))
    ys, xs = np.nonzero(small > 60)
    w = small[ys, xs].astype(float)
    cam = speedplus_camera()
    u_full, v_full = 1500.0, 300.0
    K = cam.resized(768, 512).K
    u_exp = K[0, 0] / cam.fx * (u_full - cam.cx) + K[0, 2]
    v_exp = K[1, 1] / cam.fy * (v_full - cam.cy) + K[1, 2]
    assert np.average(xs, weights=w) == pytest.approx(u_exp, abs=0.15)
    assert np.average(ys, weights=w) == pytest.approx(v_exp, abs=0.15)


def test_load_resized_problems(tmp_path):
    small = tmp_path / "small.jpg"
    cv2.imwrite(str(small), np.zeros((600, 960), np.uint8))
    img, problem = load_resized(small, (1920, 1200), (768, 512))
    assert img is None and "expected 1920x1200" in problem
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8 not really")
    assert load_resized(junk, (1920, 1200), (768, 512)) == (None, "the JPEG does not decode")


def test_mask_box(tmp_path):
    m = np.zeros((1200, 1920), np.uint8)
    m[100:201, 300:451] = 255
    path = tmp_path / "m.png"
    cv2.imwrite(str(path), m)
    box, problem = mask_box(path, (1920, 1200))
    assert problem == "" and box.tolist() == [300, 100, 450, 200]
    cv2.imwrite(str(path), np.zeros((1200, 1920), np.uint8))
    box, problem = mask_box(path, (1920, 1200))
    assert problem == "" and np.isnan(box).all()
