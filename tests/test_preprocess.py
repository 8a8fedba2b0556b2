"""`speedpose preprocess` end to end: outputs against independent computations, bad input, cache, resume, loader."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from scipy.spatial.transform import Rotation

import speedpose.data.preprocess as library
from pipelines import preprocess as stage
from speedpose.cli import main
from speedpose.data import open_split
from speedpose.data.index import INDEX_COLUMNS
from speedpose.data.testing import write_tiny_speedplus
from speedpose.errors import InputError

Q = "q_vbs2tango_true"
R = "r_Vo2To_vbs_true"
# the 11 Tango keypoints [m], typed from the SPEED+ facts sheet (independent of speedpose's resource file)
KP_BODY = np.array([[-0.37, -0.385, 0.3215], [-0.37, 0.385, 0.3215], [0.37, 0.385, 0.3215], [0.37, -0.385, 0.3215],
                    [-0.37, -0.264, 0.0], [-0.37, 0.304, 0.0], [0.37, 0.304, 0.0], [0.37, -0.264, 0.0],
                    [-0.5427, 0.4877, 0.2535], [0.5427, 0.4877, 0.2591], [0.305, -0.579, 0.2515]])


def reference_keypoints(cam_json: dict, q_wxyz: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Keypoints with scipy and cv2.projectPoints: (N, 4), (N, 3) -> (N, 11, 2)."""
    K = np.array(cam_json["cameraMatrix"], float)
    dist = np.array(cam_json["distCoeffs"], float)
    out = []
    for q, t in zip(q_wxyz, r):
        Rm = Rotation.from_quat([q[1], q[2], q[3], q[0]]).as_matrix()
        p = KP_BODY @ Rm.T + t
        uv, _ = cv2.projectPoints(p, np.zeros(3), np.zeros(3), K, dist)
        out.append(uv.reshape(-1, 2))
    return np.array(out)


def run_cli(*args: str) -> int:
    return main(["preprocess", *args])


@pytest.fixture(scope="module")
def base_dataset(tmp_path_factory, released_poses) -> Path:
    """8 lightbox images at real poses (the first 8 of the released file: 1 truncated), 3 unlabelled synthetic
    validation images and masks for lightbox."""
    labels = json.loads((released_poses / "lightbox_test.json").read_text())[:8]
    root = tmp_path_factory.mktemp("tiny") / "speedplus"
    write_tiny_speedplus(root, {("lightbox", "test"): labels}, masks=True)
    write_tiny_speedplus(root, {("synthetic", "validation"): [{"filename": f"img{i:06d}.jpg"} for i in (5, 9, 11)]},
                         seed=1)
    return root


@pytest.fixture
def dataset(base_dataset, tmp_path) -> Path:
    """A private copy of the tiny dataset (tests may break it)."""
    return Path(shutil.copytree(base_dataset, tmp_path / "speedplus"))


@pytest.fixture(scope="module")
def prepared(base_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prep") / "out"
    stage.run(base_dataset, out=out, workers=2, progress=False)
    return out


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) if path.exists() else []


# ------------------------------------------------------------------------------------------------ outputs
def test_counts_and_columns(prepared, base_dataset):
    lb = open_split(prepared, "lightbox", "test")
    sy = open_split(prepared, "synthetic", "validation")
    assert len(lb) == 8 and len(sy) == 3
    assert list(lb.records.columns) == INDEX_COLUMNS
    assert lb.size == (768, 512) and lb.images.shape == (8, 512, 768) and lb.images.dtype == np.uint8
    assert lb.manifest["counts"] == {"records": 8, "rejected": 0, "labelled": 8, "truncated": 1, "image_rows": 8}
    assert lb.manifest["has_masks"] and not sy.manifest["has_masks"]
    # unlabelled: NaN poses, labelled False, truncation unknown
    assert not sy.labelled.any() and np.isnan(sy.q_wxyz).all() and np.isnan(sy.kp_uv).all()
    assert sy.records["truncated"].isna().all() and (sy.records["n_kp_inside"] == -1).all()
    assert np.isnan(sy.records["mask_box_x0"]).all()


def test_keypoints_boxes_against_independent_projection(prepared, base_dataset):
    lb = open_split(prepared, "lightbox", "test")
    raw = json.loads((base_dataset / "lightbox" / "test.json").read_text())
    cam = json.loads((base_dataset / "camera.json").read_text())
    q = np.array([r[Q] for r in raw])
    r = np.array([r[R] for r in raw])
    assert lb.filenames == [x["filename"] for x in raw]
    np.testing.assert_allclose(lb.q_wxyz, q / np.linalg.norm(q, axis=1, keepdims=True), atol=1e-12)
    # canonical sign kept apart from the raw one: same rotation, w >= 0
    qc = lb.q_wxyz_canonical
    assert (qc[:, 0] >= 0).all() and (q[:, 0] < 0).any()
    np.testing.assert_allclose(np.abs(np.sum(qc * lb.q_wxyz, axis=1)), 1.0, atol=1e-12)
    np.testing.assert_allclose(lb.r_cam_m, r)
    np.testing.assert_allclose(lb.records["distance_m"], np.linalg.norm(r, axis=1))

    kp = reference_keypoints(cam, q, r)
    np.testing.assert_allclose(lb.kp_uv, kp, atol=1e-6)
    box = np.concatenate([kp.min(axis=1), kp.max(axis=1)], axis=1)
    np.testing.assert_allclose(lb.kp_box(clipped=False), box, atol=1e-6)
    np.testing.assert_allclose(lb.kp_box(clipped=True), np.clip(box, 0, [1919, 1199, 1919, 1199]), atol=1e-6)
    inside = (kp[..., 0] >= -0.5) & (kp[..., 0] < 1919.5) & (kp[..., 1] >= -0.5) & (kp[..., 1] < 1199.5)
    assert lb.records["truncated"].astype(bool).tolist() == (~inside.all(axis=1)).tolist()
    assert lb.records["n_kp_inside"].tolist() == inside.sum(axis=1).tolist()
    assert 0 < (~inside.all(axis=1)).sum() < len(raw)  # both kinds present in the fixture


def test_mask_boxes_match_the_drawn_spacecraft(prepared):
    lb = open_split(prepared, "lightbox", "test")
    mask = lb.records[["mask_box_x0", "mask_box_y0", "mask_box_x1", "mask_box_y1"]].to_numpy()
    # the tiny dataset's mask is the filled hull of the keypoints: its box is the clipped keypoint box (rounded)
    np.testing.assert_allclose(mask, lb.kp_box(clipped=True), atol=1.0)


def test_images_are_the_resized_originals_in_order(prepared, base_dataset):
    lb = open_split(prepared, "lightbox", "test")
    refs = [cv2.resize(cv2.imread(str(base_dataset / "lightbox" / "images" / f), cv2.IMREAD_GRAYSCALE), (768, 512),
                       interpolation=cv2.INTER_AREA).astype(float) for f in lb.filenames]
    for i in range(len(lb)):
        stored = lb.image(i).astype(float)
        assert stored.shape == (512, 768)
        errs = [np.abs(stored - ref).mean() for ref in refs]
        assert int(np.argmin(errs)) == i and errs[i] < 2.0
    full = lb.full_image(3)
    assert full.shape == (1200, 1920) and full.dtype == np.uint8
    crop, cam = lb.full_crop(3, (-10, 100, 90, 150))
    assert crop.shape == (50, 100) and (crop[:, :10] == 0).all()
    np.testing.assert_array_equal(crop[:, 10:], full[100:150, 0:90])
    assert cam.cx == pytest.approx(lb.camera.cx + 10) and cam.cy == pytest.approx(lb.camera.cy - 100)
    assert lb.camera_small.width == 768 and lb.camera_small.fx == pytest.approx(lb.camera.fx * 0.4)


def test_split_pickles_without_its_images(prepared):
    import pickle

    lb = open_split(prepared, "lightbox", "test")
    first = lb.image(0)
    blob = pickle.dumps(lb)  # what a DataLoader worker receives
    assert len(blob) < lb.images.nbytes / 4
    again = pickle.loads(blob)
    np.testing.assert_array_equal(again.image(0), first)


def test_real_sample(real_sample, tmp_path):
    out = tmp_path / "out"
    assert run_cli("--root", str(real_sample), "--out", str(out), "--workers", "2") == 0
    sp = open_split(out, "lightbox", "test")
    assert len(sp) == 10 and sp.labelled.all()
    raw = json.loads((real_sample / "lightbox" / "test.json").read_text())
    cam = json.loads((real_sample / "camera.json").read_text())
    kp = reference_keypoints(cam, np.array([r[Q] for r in raw]), np.array([r[R] for r in raw]))
    np.testing.assert_allclose(sp.kp_uv, kp, atol=1e-6)
    trunc = dict(zip(sp.filenames, sp.records["truncated"].astype(bool)))
    assert trunc["img000001.jpg"] and not trunc["img000002.jpg"]  # 2.7 m truncated / 7.5 m whole (sample README)
    for i in (0, 1):  # stored rows are the right (3-channel, R=G=B) files, grayscale
        ref = cv2.resize(cv2.imread(str(sp.image_path(i)), cv2.IMREAD_GRAYSCALE), (768, 512),
                         interpolation=cv2.INTER_AREA)
        assert np.abs(sp.image(i).astype(float) - ref).mean() < 2.0
    assert sp.full_image(1).shape == (1200, 1920)
    assert not (real_sample / "preprocessed").exists()


def test_workers_do_not_change_the_result(base_dataset, prepared, tmp_path):
    out1 = tmp_path / "one"
    stage.run(base_dataset, out=out1, workers=1, progress=False)
    for d, s in (("lightbox", "test"), ("synthetic", "validation")):
        a, b = open_split(out1, d, s), open_split(prepared, d, s)
        np.testing.assert_array_equal(np.asarray(a.images), np.asarray(b.images))
        pd.testing.assert_frame_equal(a.records, b.records)


# ------------------------------------------------------------------------------------------------ bad input
def _edit_labels(root: Path, fn) -> None:
    path = root / "lightbox" / "test.json"
    recs = json.loads(path.read_text())
    fn(recs)
    path.write_text(json.dumps(recs))


def _set(i, key, value):
    def fn(recs):
        recs[i][key] = value
    return fn


def _truncate_image(root):
    p = root / "lightbox" / "images" / "img000003.jpg"
    p.write_bytes(p.read_bytes()[:20000])


def _wrong_size(root):
    cv2.imwrite(str(root / "lightbox" / "images" / "img000003.jpg"), np.zeros((600, 960), np.uint8))


def _undecodable(root):
    """Header, size and end marker fine, but bogus sampling factors: only decoding finds it (in a worker)."""
    p = root / "lightbox" / "images" / "img000003.jpg"
    b = bytearray(p.read_bytes())
    sof = b.find(b"\xff\xc0")
    b[sof + 11] = 0
    p.write_bytes(bytes(b))


def _camera_missing_key(root):
    cam = json.loads((root / "camera.json").read_text())
    del cam["cameraMatrix"]
    (root / "camera.json").write_text(json.dumps(cam))


BAD_INPUTS = {
    "path in file name": (lambda root: _edit_labels(root, _set(2, "filename", "../img000003.jpg")),
                          "not a plain name", True),
    "truncated jpeg": (_truncate_image, "truncated JPEG", True),
    "missing image": (lambda root: (root / "lightbox" / "images" / "img000003.jpg").unlink(), "image file missing",
                      True),
    "wrong image size": (_wrong_size, "image is 960x600, expected the camera's 1920x1200", True),
    "undecodable jpeg": (_undecodable, "the JPEG does not decode", True),
    "nan quaternion": (lambda root: _edit_labels(root, _set(2, Q, [float("nan"), 0, 0, 1])), "non-finite", True),
    "non-unit quaternion": (lambda root: _edit_labels(root, _set(2, Q, [0.9, 0.0, 0.0, 0.0])), "norm 0.900000",
                            True),
    "z <= 0": (lambda root: _edit_labels(root, _set(2, R, [0.1, 0.2, -5.0])), "z = -5.0 m must be > 0", True),
    "duplicate file name": (lambda root: _edit_labels(root, _set(2, "filename", "img000001.jpg")),
                            "duplicate file name", True),
    "malformed json": (lambda root: (root / "lightbox" / "test.json").write_text('[{"filename": "x.jpg"'),
                       "malformed JSON", False),
    "camera.json missing a key": (_camera_missing_key, "missing key(s) cameraMatrix", False),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exit_2_and_no_output(dataset, tmp_path, capsys, case):
    breaker, expect, per_record = BAD_INPUTS[case]
    breaker(dataset)
    out = tmp_path / "out"
    assert run_cli("--root", str(dataset), "--out", str(out), "--workers", "2") == 2
    err = capsys.readouterr().err
    assert expect in err and "Traceback" not in err
    assert err.count("\n") == 1  # one line
    if per_record:  # names the domain/split, the label file, the record index and the file
        assert "lightbox/test index 2 (" in err and "test.json" in err
    # nothing of the failing split, not even partial work; a split finished before the failure (only possible for
    # problems that need decoding to be found) is complete: it has its manifest and opens
    assert files_under(out / "lightbox") == []
    for d in out.glob("*/*") if out.exists() else []:
        assert (d / "manifest.json").is_file() and not (d / ".partial").exists()
        assert len(open_split(out, d.parent.name, d.name)) == 3
    if case != "undecodable jpeg":  # found before anything is written
        assert files_under(out) == []


@pytest.mark.parametrize("case", [c for c in BAD_INPUTS if BAD_INPUTS[c][2]])
def test_skip_bad_processes_the_good_and_lists_the_bad(dataset, tmp_path, case):
    breaker, expect, _ = BAD_INPUTS[case]
    breaker(dataset)
    out = tmp_path / "out"
    assert run_cli("--root", str(dataset), "--out", str(out), "--workers", "2", "--skip-bad") == 0
    sp = open_split(out, "lightbox", "test")
    rejects = pd.read_csv(out / "lightbox" / "test" / "rejects.csv")
    assert rejects[["domain", "split", "index"]].values.tolist() == [["lightbox", "test", 2]]
    assert expect in rejects["reason"].iat[0]
    assert len(sp) == 7 and 2 not in sp.records["source_index"].tolist()
    assert sp.manifest["counts"]["rejected"] == 1
    for i in range(len(sp)):  # the kept images are still the right ones
        full = cv2.resize(sp.full_image(i), (768, 512), interpolation=cv2.INTER_AREA).astype(float)
        assert np.abs(sp.image(i) - full).mean() < 2.0
    assert len(open_split(out, "synthetic", "validation")) == 3  # other splits unaffected


def test_bad_cli_values(dataset, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert run_cli("--root", str(dataset), "--out", out, "--size", "768by512") == 2
    assert run_cli("--root", str(dataset), "--out", out, "--domains", "lightbox,moon") == 2
    assert run_cli("--root", str(dataset), "--out", out, "--domains", "sunlamp") == 2  # no sunlamp/test.json
    assert run_cli("--root", str(tmp_path / "nowhere"), "--out", out) == 2
    err = capsys.readouterr().err
    assert "768by512" in err and "moon" in err and "sunlamp" in err and "Traceback" not in err
    assert files_under(tmp_path / "out") == []


# ------------------------------------------------------------------------------------------------ cache
def _actions(summaries) -> dict:
    return {(s.domain, s.split): s.action for s in summaries}


def test_cache_noop_touch_size_force(dataset, tmp_path, capsys):
    out = tmp_path / "out"
    first = _actions(stage.run(dataset, out=out, workers=2, progress=False))
    assert set(first.values()) == {"computed"}
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}

    import speedpose.data.speedplus as reader

    def no_image_reads(*args):  # an up-to-date split costs label parsing and stat calls, no image is opened
        raise AssertionError("image opened during a no-op run")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reader, "jpeg_header_problem", no_image_reads)
        assert run_cli("--root", str(dataset), "--out", str(out)) == 0
    text = capsys.readouterr().out
    assert "nothing to do" in text and text.count("up to date") >= 2
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamp  # nothing rewritten

    label = dataset / "lightbox" / "test.json"
    os.utime(label, ns=(label.stat().st_atime_ns, label.stat().st_mtime_ns + 10**9))  # touch
    acts = _actions(stage.run(dataset, out=out, workers=2, progress=False))
    assert acts == {("lightbox", "test"): "index rebuilt", ("synthetic", "validation"): "up to date"}
    assert (out / "lightbox/test/images.npy").stat().st_mtime_ns == stamp[out / "lightbox/test/images.npy"]

    _edit_labels(dataset, _set(0, R, [0.0, 0.0, 9.0]))  # a changed pose changes the index
    stage.run(dataset, out=out, workers=2, progress=False)
    assert open_split(out, "lightbox", "test").records["distance_m"].iat[0] == pytest.approx(9.0)

    acts = _actions(stage.run(dataset, out=out, size=(384, 256), workers=2, progress=False))
    assert set(acts.values()) == {"computed"}
    sp = open_split(out, "lightbox", "test")
    assert sp.size == (384, 256) and sp.images.shape == (8, 256, 384)

    img = dataset / "synthetic" / "images" / "img000009.jpg"
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 10**9))
    acts = _actions(stage.run(dataset, out=out, size=(384, 256), workers=2, progress=False))
    assert acts == {("lightbox", "test"): "up to date", ("synthetic", "validation"): "computed"}

    acts = _actions(stage.run(dataset, out=out, size=(384, 256), workers=2, force=True, progress=False))
    assert set(acts.values()) == {"computed"}


def test_interrupted_run_resumes(dataset, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(library, "CHUNK", 2)  # 8 lightbox images -> 4 chunks
    calls = []
    real = library.prepare_chunk

    def flaky(store, offset, first_row, *args):
        calls.append(first_row)
        if first_row == 4 and len(calls) == 3:
            raise KeyboardInterrupt
        return real(store, offset, first_row, *args)

    monkeypatch.setattr(library, "prepare_chunk", flaky)
    with pytest.raises(KeyboardInterrupt):
        stage.run(dataset, out=out, domains=("lightbox",), workers=1, progress=False)
    assert not (out / "lightbox/test/manifest.json").exists()
    assert len(list((out / "lightbox/test/.partial/chunks").glob("*.json"))) == 2
    with pytest.raises(InputError, match="no preprocessed lightbox/test here"):
        open_split(out, "lightbox", "test")  # an unfinished split is refused

    calls.clear()
    stage.run(dataset, out=out, domains=("lightbox",), workers=1, progress=False)
    assert calls == [4, 6]  # only the unfinished chunks
    assert not (out / "lightbox/test/.partial").exists()
    fresh = tmp_path / "fresh"
    stage.run(dataset, out=fresh, domains=("lightbox",), workers=1, progress=False)
    np.testing.assert_array_equal(np.asarray(open_split(out, "lightbox", "test").images),
                                  np.asarray(open_split(fresh, "lightbox", "test").images))


def test_empty_and_all_rejected_splits(dataset, tmp_path):
    (dataset / "synthetic" / "validation.json").write_text("[]")
    _edit_labels(dataset, lambda recs: [r.update({R: [0.0, 0.0, -1.0]}) for r in recs])
    out = tmp_path / "out"
    summaries = stage.run(dataset, out=out, workers=1, skip_bad=True, progress=False)
    assert {(s.domain, s.records, s.rejected) for s in summaries} == {("synthetic", 0, 0), ("lightbox", 0, 8)}
    for d, s in (("synthetic", "validation"), ("lightbox", "test")):
        sp = open_split(out, d, s)
        assert len(sp) == 0 and sp.kp_uv.shape == (0, 11, 2) and sp.q_wxyz.shape == (0, 4)
