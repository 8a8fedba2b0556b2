"""SPEED+ reader and validation: layout, record checks, JPEG header checks, rejects (no image decoding here)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from speedpose.data import SpeedplusAdapter, available_splits, read_split
from speedpose.data.speedplus import jpeg_header_problem
from speedpose.errors import InputError

Q = "q_vbs2tango_true"
R = "r_Vo2To_vbs_true"


def _jpeg(path: Path, w: int = 1920, h: int = 1200) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w), 30, np.uint8))


def _root(tmp_path: Path, records: list, domain: str = "lightbox", split: str = "test",
          images: bool = True) -> Path:
    """A SPEED+ root with a blank image per plain file name of ``records``."""
    from speedpose.camera import speedplus_camera

    root = tmp_path / "ds"
    root.mkdir(exist_ok=True)
    (root / "camera.json").write_text(json.dumps(speedplus_camera().to_json_dict()))
    label = root / domain / f"{split}.json"
    label.parent.mkdir(parents=True, exist_ok=True)
    label.write_text(json.dumps(records))
    if images:
        for r in records:
            name = r.get("filename") if isinstance(r, dict) else None
            if isinstance(name, str) and "/" not in name and ".." not in name:
                _jpeg(root / domain / "images" / name)
    return root


def _rec(name: str, q=(0.5, 0.5, 0.5, 0.5), r=(0.1, -0.2, 6.0)) -> dict:
    return {"filename": name, Q: list(q), R: list(r)}


# ------------------------------------------------------------------------------------------------ good input
def test_reads_real_sample(real_sample):
    recs = read_split(real_sample, "lightbox", "test")
    raw = json.loads((real_sample / "lightbox" / "test.json").read_text())
    assert len(recs) == 10 and recs.labelled.all()
    assert recs.filenames == [r["filename"] for r in raw]
    q = np.array([r[Q] for r in raw])
    np.testing.assert_allclose(recs.q_wxyz, q / np.linalg.norm(q, axis=1, keepdims=True), atol=1e-12)
    np.testing.assert_allclose(recs.r_cam_m, [r[R] for r in raw], atol=0)
    assert recs.camera.width == 1920 and recs.camera.height == 1200
    assert available_splits(real_sample) == [("lightbox", "test")]


def test_unlabelled_and_renormalised(tmp_path):
    q_off = np.array([0.5, 0.5, 0.5, 0.5]) * 1.0005  # norm 1.0005: inside the tolerance, renormalised
    root = _root(tmp_path, [{"filename": "a.jpg"}, _rec("b.jpg", q=q_off)])
    recs = read_split(root, "lightbox", "test")
    assert recs.labelled.tolist() == [False, True]
    assert np.isnan(recs.q_wxyz[0]).all() and np.isnan(recs.r_cam_m[0]).all()
    assert np.linalg.norm(recs.q_wxyz[1]) == pytest.approx(1.0, abs=1e-12)
    assert recs.q_wxyz[1] == pytest.approx([0.5, 0.5, 0.5, 0.5])


def test_key_order_does_not_matter(tmp_path):
    root = _root(tmp_path, [{R: [0.0, 0.0, 5.0], Q: [1.0, 0.0, 0.0, 0.0], "filename": "a.jpg"}])
    recs = read_split(root, "lightbox", "test")
    assert recs.r_cam_m[0].tolist() == [0, 0, 5] and recs.q_wxyz[0].tolist() == [1, 0, 0, 0]


# ------------------------------------------------------------------------------------------------ bad records
BAD = {
    "path in name": ({"filename": "../evil.jpg", Q: [1, 0, 0, 0], R: [0, 0, 5]}, "not a plain name"),
    "dir in name": ({"filename": "sub/x.jpg", Q: [1, 0, 0, 0], R: [0, 0, 5]}, "not a plain name"),
    "nan quaternion": (_rec("x.jpg", q=(float("nan"), 0, 0, 1)), "non-finite"),
    "non-unit quaternion": (_rec("x.jpg", q=(1, 1, 0, 0)), "norm 1.414214 is not 1"),
    "z negative": (_rec("x.jpg", r=(0, 0, -3.0)), "must be > 0"),
    "z zero": (_rec("x.jpg", r=(0, 0, 0.0)), "must be > 0"),
    "only q": ({"filename": "x.jpg", Q: [1, 0, 0, 0]}, "need both or neither"),
    "not an object": (["x.jpg"], "expected an object"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_record_fails_fast_naming_everything(tmp_path, case):
    bad, expect = BAD[case]
    root = _root(tmp_path, [_rec("ok1.jpg"), bad, _rec("ok2.jpg")])
    with pytest.raises(InputError) as exc:
        read_split(root, "lightbox", "test")
    msg = str(exc.value)
    assert expect in msg
    assert "lightbox/test index 1" in msg and "test.json" in msg


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_record_skipped_and_listed(tmp_path, case):
    bad, expect = BAD[case]
    root = _root(tmp_path, [_rec("ok1.jpg"), bad, _rec("ok2.jpg")])
    recs = read_split(root, "lightbox", "test", skip_bad=True)
    assert recs.filenames == ["ok1.jpg", "ok2.jpg"]
    assert recs.source_index.tolist() == [0, 2]
    assert len(recs.rejects) == 1 and recs.rejects[0].index == 1 and expect in recs.rejects[0].reason


def test_duplicate_within_file(tmp_path):
    root = _root(tmp_path, [_rec("a.jpg"), _rec("b.jpg"), _rec("a.jpg")])
    with pytest.raises(InputError, match=r"index 2 \(a.jpg\).*duplicate file name.*first at index 0"):
        read_split(root, "lightbox", "test")


def test_duplicate_across_synthetic_splits(tmp_path):
    root = _root(tmp_path, [_rec("a.jpg"), _rec("b.jpg")], "synthetic", "train")
    (root / "synthetic" / "validation.json").write_text(json.dumps([_rec("c.jpg"), _rec("b.jpg")]))
    _jpeg(root / "synthetic" / "images" / "c.jpg")
    adapter = SpeedplusAdapter(root, "synthetic")
    assert len(adapter.get_records("train")) == 2
    with pytest.raises(InputError, match=r"synthetic/validation index 1 \(b.jpg\).*earlier split"):
        adapter.get_records("validation")
    same_name_other_domain = _root(tmp_path, [_rec("a.jpg")], "lightbox", "test")
    assert len(read_split(same_name_other_domain, "lightbox", "test")) == 1  # names are keyed per domain


def test_malformed_json_is_fatal_even_when_skipping(tmp_path):
    root = _root(tmp_path, [_rec("a.jpg")])
    (root / "lightbox" / "test.json").write_text('[{"filename": "a.jpg",}')
    with pytest.raises(InputError, match=r"test.json, line 1 column \d+: malformed JSON"):
        read_split(root, "lightbox", "test", skip_bad=True)


def test_camera_missing_key(tmp_path):
    root = _root(tmp_path, [_rec("a.jpg")])
    cam = json.loads((root / "camera.json").read_text())
    del cam["distCoeffs"]
    (root / "camera.json").write_text(json.dumps(cam))
    with pytest.raises(InputError, match=r"camera.json: missing key\(s\) distCoeffs"):
        read_split(root, "lightbox", "test", skip_bad=True)


# ------------------------------------------------------------------------------------------------ image headers
def test_missing_image(tmp_path):
    root = _root(tmp_path, [_rec("a.jpg"), _rec("b.jpg")])
    (root / "lightbox" / "images" / "b.jpg").unlink()
    with pytest.raises(InputError, match=r"index 1 \(b.jpg\): image file missing: .*b.jpg"):
        read_split(root, "lightbox", "test")
    assert [r.filename for r in read_split(root, "lightbox", "test", skip_bad=True).rejects] == ["b.jpg"]


def test_jpeg_header_checks(tmp_path):
    good = tmp_path / "good.jpg"
    _jpeg(good)
    assert jpeg_header_problem(good, 1920, 1200) is None
    small = tmp_path / "small.jpg"
    _jpeg(small, 960, 600)
    assert jpeg_header_problem(small, 1920, 1200) == "image is 960x600, expected the camera's 1920x1200"
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "truncated" in jpeg_header_problem(cut, 1920, 1200)
    png = tmp_path / "png.jpg"
    png.write_bytes(cv2.imencode(".png", np.zeros((1200, 1920), np.uint8))[1].tobytes())
    assert "not a JPEG" in jpeg_header_problem(png, 1920, 1200)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert "not a JPEG" in jpeg_header_problem(empty, 1920, 1200)
    # a 3-channel file of the right size is fine (the real sample's copies are R=G=B)
    rgb = tmp_path / "rgb.jpg"
    cv2.imwrite(str(rgb), np.zeros((1200, 1920, 3), np.uint8))
    assert jpeg_header_problem(rgb, 1920, 1200) is None


def test_masks_required_when_folder_exists(tmp_path):
    root = _root(tmp_path, [_rec("a.jpg"), _rec("b.jpg")])
    mdir = root / "lightbox" / "masks"
    mdir.mkdir()
    cv2.imwrite(str(mdir / "a.jpg"), np.zeros((1200, 1920), np.uint8))
    with pytest.raises(InputError, match=r"index 1 \(b.jpg\): mask file missing"):
        read_split(root, "lightbox", "test")
    recs = read_split(root, "lightbox", "test", skip_bad=True)
    assert recs.mask_paths == [mdir / "a.jpg"]
