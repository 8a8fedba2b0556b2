"""`speedpose synth`: layout, labels, masks against labels, determinism, resume after a kill, refusals, pose files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines import synth
from speedpose.camera import load_camera, speedplus_camera
from speedpose.errors import InputError
from speedpose.labels import label_file, read_labels, stack_poses
from speedpose.tango import keypoint_box, project_keypoints

TINY = dict(train=6, val=3, lightbox=3, sunlamp=3, seed=0)
REPO = Path(__file__).resolve().parents[1]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    """The tiny set, rendered by a pool of two worker processes (forced even for so few images)."""
    out = tmp_path_factory.mktemp("synth") / "tiny"
    t0 = time.perf_counter()
    mp = pytest.MonkeyPatch()
    mp.setattr(synth, "MIN_IMAGES_PER_WORKER", 1)
    try:
        summary = synth.run(out, **TINY, workers=2, progress=False)
    finally:
        mp.undo()
    summary["wall"] = time.perf_counter() - t0
    return out, summary


def test_tiny_set_renders_in_seconds(tiny):
    _, summary = tiny
    assert summary["rendered"] == 15 and summary["skipped"] == 0
    # a regression guard, not a benchmark (tools/bench_synth.py measures throughput): 15 images on a busy 2-core
    # machine take well under a minute
    assert summary["wall"] < 60


def test_layout_images_and_masks(tiny):
    root, _ = tiny
    assert (root / "camera.json").is_file()
    for domain, files in (("synthetic", ("train.json", "validation.json")), ("lightbox", ("test.json",)),
                          ("sunlamp", ("test.json",))):
        for f in files:
            assert (root / domain / f).is_file()
    names = {p.name for p in (root / "synthetic" / "images").iterdir()}
    assert len(names) == 9
    for domain in ("synthetic", "lightbox", "sunlamp"):
        for p in sorted((root / domain / "images").iterdir()):
            img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            assert img.shape == (1200, 1920) and img.dtype == np.uint8, p  # 8-bit single-channel JPEG
            assert p.read_bytes()[:2] == b"\xff\xd8"
            mask = cv2.imread(str(root / domain / "masks" / p.name), cv2.IMREAD_GRAYSCALE)
            grey = ((mask > 20) & (mask < 235)).mean()
            assert grey < 0.002, f"mask {p.name} is not binary ({grey:.4f} of pixels grey)"
            assert (mask >= 128).sum() > 100


def test_labels_pass_validation_and_score_zero(tiny):
    root, _ = tiny
    from pipelines import score

    cam = load_camera(root / "camera.json")
    np.testing.assert_allclose(cam.K, speedplus_camera().K)
    np.testing.assert_allclose(cam.dist, speedplus_camera().dist)
    all_syn = []
    for domain, split in (("synthetic", "train"), ("synthetic", "validation"), ("lightbox", None),
                          ("sunlamp", None)):
        labels = read_labels(label_file(root, domain, split), require_poses=True)
        assert len(labels) == (TINY["train"] if split == "train" else 3)
        if domain == "synthetic":
            all_syn += [lab.filename for lab in labels]
    assert len(set(all_syn)) == 9
    for domain in ("lightbox", "sunlamp"):
        scores = score.run(label_file(root, domain), root, domain=domain)
        assert scores[domain].score == 0.0
    from speedpose.cli import main

    assert main(["score", str(label_file(root, "lightbox")), "--root", str(root), "--domain", "lightbox"]) == 0


def test_masks_agree_with_labels(tiny):
    """The written mask lies where the labels and camera.json put the keypoints (boxes, untruncated images)."""
    root, _ = tiny
    cam = load_camera(root / "camera.json")
    checked = 0
    for domain, split in (("synthetic", "train"), ("lightbox", None), ("sunlamp", None)):
        for lab in read_labels(label_file(root, domain, split), require_poses=True):
            uv = project_keypoints(cam, lab.q_wxyz, lab.r_cam_m)
            box = keypoint_box(uv, cam.width, cam.height)
            mask = cv2.imread(str(root / domain / "masks" / lab.filename), cv2.IMREAD_GRAYSCALE) >= 128
            ys, xs = np.nonzero(mask)
            if box.truncated:
                continue
            kb, mb = box.unclipped, np.array([xs.min(), ys.min(), xs.max(), ys.max()])
            tol = 0.06 * cam.fx / (lab.r_cam_m[2] - 0.8) + 2  # see test_render: model parts beyond the keypoints
            assert np.all(mb[:2] <= kb[:2] + 2) and np.all(mb[2:] >= kb[2:] - 2), (lab.filename, mb, kb)
            assert np.all(kb[:2] - mb[:2] <= tol) and np.all(mb[2:] - kb[2:] <= tol), (lab.filename, mb, kb)
            checked += 1
    assert checked >= 5


def test_same_seed_same_bytes_any_worker_count(tiny, tmp_path):
    root, _ = tiny
    again = tmp_path / "again"
    synth.run(again, **TINY, workers=1, progress=False)
    a, b = _files(root), _files(again)
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]][:5]


def test_different_seeds_differ(tmp_path):
    params = dict(train=1, val=0, lightbox=1, sunlamp=0)
    synth.run(tmp_path / "s1", **params, seed=1, workers=1, progress=False)
    synth.run(tmp_path / "s2", **params, seed=2, workers=1, progress=False)
    a, b = _files(tmp_path / "s1"), _files(tmp_path / "s2")
    assert a["lightbox/test.json"] != b["lightbox/test.json"]
    assert a["lightbox/images/img000001.jpg"] != b["lightbox/images/img000001.jpg"]


def test_resume_after_kill_gives_the_same_dataset(tiny, tmp_path):
    root, _ = tiny
    out = tmp_path / "killed"
    code = (f"from pipelines import synth; synth.run({str(out)!r}, train={TINY['train']}, val={TINY['val']}, "
            f"lightbox={TINY['lightbox']}, sunlamp={TINY['sunlamp']}, seed={TINY['seed']}, workers=1, "
            f"progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if len(list((out / "synthetic" / "images").glob("img*.jpg"))) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    assert not (out / "lightbox" / "test.json").exists()  # labels come last: an interrupted run has none
    before = {p.name: p.stat().st_mtime_ns for p in (out / "synthetic" / "images").glob("img*.jpg")}
    summary = synth.run(out, **TINY, workers=1, progress=False)
    assert summary["skipped"] >= len(before) - 1  # the image being written at the kill may lack its mask
    after = {p.name: p.stat().st_mtime_ns for p in (out / "synthetic" / "images").glob("img*.jpg")}
    assert sum(after[k] == v for k, v in before.items()) >= len(before) - 1  # finished images not re-rendered
    a, b = _files(root), _files(out)
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a)
    # a completed run is a no-op: nothing rendered, nothing rewritten (preprocessing stays up to date)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert synth.run(out, **TINY, workers=1, progress=False)["rendered"] == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps


def test_refuses_foreign_or_different_folders(tiny, tmp_path):
    root, _ = tiny
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a `speedpose synth` output"):
        synth.run(foreign, train=1, val=0, lightbox=0, sunlamp=0, progress=False)
    with pytest.raises(InputError, match="other parameters"):
        synth.run(root, train=1, val=0, lightbox=0, sunlamp=0, progress=False)
    with pytest.raises(InputError, match="expected an integer >= 0"):
        synth.run(tmp_path / "neg", train=-1, val=0, lightbox=0, sunlamp=0, progress=False)
    from speedpose.cli import main

    assert main(["synth", "--out", str(foreign), "--train", "1"]) == 2


def test_render_at_given_poses(real_sample, tmp_path):
    src = real_sample / "lightbox" / "test.json"
    out = tmp_path / "at_real"
    synth.run(out, train=0, val=0, lightbox=2, sunlamp=0, poses={"lightbox": src}, workers=1, progress=False)
    given = read_labels(src)[:2]
    written = read_labels(out / "lightbox" / "test.json")
    assert [g.filename for g in given] == [w.filename for w in written]
    q1, r1 = stack_poses(given)
    q2, r2 = stack_poses(written)
    np.testing.assert_allclose(q1, q2, atol=1e-12)  # signs kept as given
    np.testing.assert_allclose(r1, r2, atol=1e-12)
    with pytest.raises(InputError, match="holds 10 labels"):
        synth.run(tmp_path / "too_many", train=0, val=0, lightbox=11, sunlamp=0, poses={"lightbox": src},
                  progress=False)
    with pytest.raises(InputError, match="unknown split"):
        synth.run(tmp_path / "bad_key", train=0, val=0, lightbox=1, sunlamp=0, poses={"test": src}, progress=False)


def test_bad_pose_file_names_file_and_record(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"filename": "img000001.jpg", "q_vbs2tango_true": [1, 0, 0], "r_Vo2To_vbs_true": [0, 0, 5]}]')
    with pytest.raises(InputError) as exc:
        synth.run(tmp_path / "o", train=0, val=0, lightbox=1, sunlamp=0, poses={"lightbox": bad}, progress=False)
    assert "bad.json" in str(exc.value) and "index 0" in str(exc.value)
