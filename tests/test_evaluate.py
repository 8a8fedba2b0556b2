"""`speedpose evaluate` on a tiny stand-in with a smoke-trained run: report fields, consistency with per_image.csv
and with `speedpose score`, independent error recomputation, pictures and the HTML page."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines import evaluate as evaluate_stage
from pipelines import score as score_stage
from speedpose.data.preprocess import open_or_preprocess
from speedpose.geometry.rotations import quat_wxyz_to_matrix
from speedpose.labels import label_file, read_labels
from speedpose.report import breakdowns, per_image_table, project_wireframe, summarise
from speedpose.report.overlays import pose_overlay
from speedpose.submission import write_predictions_json
from speedpose.tango import project_keypoints


@pytest.fixture(scope="module")
def lightbox_report(smoke_run, tiny_prepared, tmp_path_factory):
    root, prep = tiny_prepared
    out = tmp_path_factory.mktemp("eval") / "lightbox"
    rep = evaluate_stage.run(smoke_run, root, "lightbox", prep_dir=prep, out=out, device="cpu", n_examples=2,
                             n_distributions=1, progress=False)
    return rep, out


def test_report_fields_and_files(lightbox_report, smoke_run, tiny_prepared):
    rep, out = lightbox_report
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["domain"] == "lightbox" and on_disk["split"] == "test" and on_disk["thresholds"] is True
    assert Path(on_disk["run"]["checkpoint"]).name in ("best.pt", "last.pt")
    assert on_disk["run"]["config_hash"] and on_disk["run"]["step"] == 2
    root, prep = tiny_prepared
    manifest = json.loads((prep / "lightbox" / "test" / "manifest.json").read_text())
    assert on_disk["dataset"]["fingerprint"] == manifest["fingerprints"]["inputs"]
    for k in ("score", "score_orientation", "score_position", "e_t_mean_m", "e_t_median_m", "e_r_mean_deg",
              "e_r_median_deg", "acc@2", "acc@5", "acc@10", "loc_iou", "count"):
        assert k in on_disk["metrics"], k
    assert set(on_disk["breakdowns"]) == {"distance", "truncation"}
    assert sum(b["count"] for b in on_disk["reliability"]["bins"]) == on_disk["metrics"]["count"]
    assert "figures/reliability.png" in on_disk["files"]["figures"]
    for rel in on_disk["files"]["figures"] + on_disk["files"]["worst"] + on_disk["files"]["best"] + \
            on_disk["files"]["distributions"]:
        assert (out / rel).is_file() and (out / rel).stat().st_size > 1000, rel
    assert len(on_disk["files"]["worst"]) == 2 and len(on_disk["files"]["distributions"]) == 1
    assert (out / ".cache" / "key.json").is_file()  # kept: a re-run reuses the predictions


def test_rerun_reuses_the_inference_cache(smoke_run, tiny_prepared, tmp_path, monkeypatch):
    """Same run, checkpoint and split: no image is predicted again; another batch size (a new key): all are."""
    import speedpose.pose.split_inference as predict_module

    root, prep = tiny_prepared
    calls = []
    real = predict_module.predict_split

    def counting(model, split, indices, *args, **kwargs):
        if not kwargs.get("keep_coeffs"):  # the distribution plots always run; count the chunked inference only
            calls.append(len(indices))
        return real(model, split, indices, *args, **kwargs)

    monkeypatch.setattr(predict_module, "predict_split", counting)
    kw = dict(prep_dir=prep, out=tmp_path / "ev", device="cpu", n_examples=1, n_distributions=0, progress=False)
    first = evaluate_stage.run(smoke_run, root, "lightbox", batch_size=2, **kw)
    assert calls == [3]
    again = evaluate_stage.run(smoke_run, root, "lightbox", batch_size=2, **kw)
    assert calls == [3] and again["metrics"] == first["metrics"]
    evaluate_stage.run(smoke_run, root, "lightbox", batch_size=3, **kw)
    assert calls == [3, 3]


def test_report_agrees_with_per_image_csv(lightbox_report, tiny_prepared):
    rep, out = lightbox_report
    df = pd.read_csv(out / "per_image.csv")
    m = rep["metrics"]
    assert m["count"] == len(df) == 3
    assert m["score"] == pytest.approx(df["score"].mean(), abs=1e-9)
    assert m["score"] == pytest.approx(df["score_orientation"].mean() + df["score_position"].mean(), abs=1e-9)
    assert m["e_r_median_deg"] == pytest.approx(df["e_r_deg"].median(), abs=1e-6)
    assert m["e_t_mean_m"] == pytest.approx(df["e_t_m"].mean(), abs=1e-9)
    assert m["acc@10"] == pytest.approx((df["e_r_deg"] <= 10).mean())
    assert rep["spec2021"]["score"] == pytest.approx(m["score"], abs=1e-9)  # the Foundation's scorer
    n_bins = sum(b["count"] for b in rep["breakdowns"]["distance"].values())
    assert n_bins == len(df)
    # ground truth columns are the label file's
    root, _ = tiny_prepared
    labels = {lab.filename: lab for lab in read_labels(label_file(root, "lightbox"))}
    for _, r in df.iterrows():
        np.testing.assert_allclose(r[["gt_r_x_m", "gt_r_y_m", "gt_r_z_m"]].to_numpy(float),
                                   labels[r["filename"]].r_cam_m, atol=1e-9)


def test_per_image_errors_match_an_independent_computation(lightbox_report):
    """E_R from the rotation matrices' trace and E_T from the vectors, not from the scorer's quaternion formula."""
    _, out = lightbox_report
    df = pd.read_csv(out / "per_image.csv")
    q = df[["q_w", "q_x", "q_y", "q_z"]].to_numpy()
    qg = df[["gt_q_w", "gt_q_x", "gt_q_y", "gt_q_z"]].to_numpy()
    R, Rg = quat_wxyz_to_matrix(q), quat_wxyz_to_matrix(qg)
    cos = (np.einsum("nij,nij->n", R, Rg) - 1) / 2
    np.testing.assert_allclose(df["e_r_deg"], np.degrees(np.arccos(np.clip(cos, -1, 1))), atol=1e-4)
    r = df[["r_x_m", "r_y_m", "r_z_m"]].to_numpy()
    rg = df[["gt_r_x_m", "gt_r_y_m", "gt_r_z_m"]].to_numpy()
    np.testing.assert_allclose(df["e_t_m"], np.linalg.norm(r - rg, axis=1), rtol=1e-7)
    np.testing.assert_allclose(df["e_t_rel"], np.linalg.norm(r - rg, axis=1) / np.linalg.norm(rg, axis=1),
                               rtol=1e-7)


def test_score_command_reproduces_evaluate(lightbox_report, tiny_prepared):
    rep, out = lightbox_report
    root, _ = tiny_prepared
    scores = score_stage.run(out / "predictions.json", root, domain="lightbox")
    assert scores["lightbox"].score == pytest.approx(rep["metrics"]["score"], abs=1e-9)
    assert scores["lightbox"].mean_e_r_deg == pytest.approx(rep["metrics"]["e_r_mean_deg"], abs=1e-6)


def test_perfect_predictions_score_zero(tiny_prepared, tmp_path):
    root, _ = tiny_prepared
    for domain in ("lightbox", "synthetic"):
        labels = read_labels(label_file(root, domain))
        write_predictions_json(tmp_path / f"{domain}.json", labels)
        s = score_stage.run(tmp_path / f"{domain}.json", root, domain=domain)[domain]
        assert s.score == 0.0 and s.mean_e_t_m == 0.0
    q = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    r = np.array([[0.0, 0, 5], [0, 1, 8]])
    df = per_image_table(["a", "b"], q, r, q, r, thresholds=True, truncated=np.array([False, True]))
    m = summarise(df)
    assert m["score"] == 0 and m["acc@2"] == 1.0 and m["e_r_median_deg"] == 0


def test_report_and_validation_summarise_with_one_rule():
    """``speedpose evaluate`` (summarise of the per-image table) and validation (pose_metrics) give the same numbers
    for the same predictions; an error of exactly k degrees counts within Acc@k."""
    from types import SimpleNamespace

    from speedpose.geometry.rotations import axis_angle_to_matrix, matrix_to_quat_wxyz
    from speedpose.pose.metrics import pose_metrics

    q_gt = np.tile([1.0, 0, 0, 0], (3, 1))
    r_gt = np.array([[0.0, 0, 5], [0.5, 0, 7], [0, -0.3, 9]])
    q_est = matrix_to_quat_wxyz(axis_angle_to_matrix(np.radians([[0, 0, 1.0], [0, 9.0, 0], [45.0, 0, 0]])))
    r_est = r_gt + [[0.1, 0, 0], [0, 0, 0.2], [0, 0, 0]]
    box_true = np.array([[10.0, 10, 50, 50], [0, 0, 20, 20], [5, 5, 15, 15]])
    box_pred = box_true + [[0, 0, 10, 0], [0, 0, 0, 0], [np.nan] * 4]
    df = per_image_table(["a", "b", "c"], q_est, r_est, q_gt, r_gt, thresholds=False, box_pred_xyxy=box_pred,
                         box_true_xyxy=box_true)
    pred = SimpleNamespace(indices=np.arange(3), q_wxyz=q_est, r_cam_m=r_est, box_xyxy=box_pred)
    split = SimpleNamespace(q_wxyz=q_gt, r_cam_m=r_gt, kp_box=lambda clipped: box_true)
    report, val = summarise(df), pose_metrics(pred, split, thresholds=False)
    assert set(report) == set(val)
    for k in val:
        assert report[k] == pytest.approx(val[k], abs=1e-9), k
    assert report["acc@10"] == pytest.approx(2 / 3) and report["acc@30"] == pytest.approx(2 / 3)
    assert report["loc_iou"] == pytest.approx((40 * 40 / (50 * 40) + 1.0) / 2)
    df["e_r_deg"] = [2.0, 10.0, 30.0]  # exactly on the thresholds
    on = summarise(df)
    assert (on["acc@2"], on["acc@5"], on["acc@10"], on["acc@30"]) == (pytest.approx(1 / 3), pytest.approx(1 / 3),
                                                                      pytest.approx(2 / 3), 1.0)


def test_reliability_bins_confidence_against_observed_accuracy(tmp_path):
    """Equal-count bins sorted by confidence; observed Acc@k per bin (inclusive); the ECE against Acc@15."""
    from speedpose.report import reliability, reliability_diagram

    df = pd.DataFrame({"confidence": [0.9, 0.1, 0.8, 0.2, 0.95, 0.05],
                       "e_r_deg": [1.0, 90.0, 15.0, 40.0, 5.0, 120.0]})
    t = reliability(df, n_bins=3)
    assert [b["count"] for b in t["bins"]] == [2, 2, 2]
    low, mid, high = t["bins"]
    assert (low["lo"], low["hi"]) == (0.05, 0.1) and low["acc@15"] == 0.0
    assert mid["mean_confidence"] == pytest.approx(0.5) and mid["acc@15"] == 0.5  # 15.0 deg counts (inclusive)
    assert high["acc@2"] == 0.5 and high["acc@5"] == 1.0 and high["mean_confidence"] == pytest.approx(0.925)
    assert t["ece"] == pytest.approx((2 * 0.075 + 2 * 0.0 + 2 * 0.075) / 6)
    assert reliability(df.drop(columns="confidence")) == {}
    f = reliability_diagram(t, tmp_path / "r.png")
    assert f.is_file() and f.stat().st_size > 1000


def test_breakdowns_split_by_distance_and_truncation():
    q = np.tile([1.0, 0, 0, 0], (4, 1))
    r = np.array([[0, 0, 3.0], [0, 0, 5.0], [0, 0, 5.5], [0, 0, 9.0]])
    r_est = r + np.array([[0, 0, 0.3], [0, 0, 0.5], [0, 0, 0.55], [0, 0, 0.9]])  # 10% relative error each
    df = per_image_table(list("abcd"), q, r_est, q, r, thresholds=False, truncated=np.array([1, 0, 0, 1], bool))
    b = breakdowns(df)
    assert {k: v["count"] for k, v in b["distance"].items()} == {"<4 m": 1, "4-6 m": 2, ">=8 m": 1}
    assert b["distance"]["4-6 m"]["e_t_mean_m"] == pytest.approx(0.525)
    assert b["truncation"]["truncated"]["count"] == 2
    assert b["truncation"]["truncated"]["score"] == pytest.approx(0.1)


def test_wireframe_uses_the_label_convention(tiny_prepared):
    """The wireframe's panel corners and antenna tips are keypoints 1-4 and 9-11, projected like the labels."""
    from speedpose.data.loader import open_split

    _, prep = tiny_prepared
    split = open_split(prep, "synthetic", "validation")
    for i in range(len(split)):
        lines = project_wireframe(split.camera, split.q_wxyz[i], split.r_cam_m[i])
        ends = np.concatenate([np.stack([ln[0], ln[-1]]) for ln in lines])
        kp = project_keypoints(split.camera, split.q_wxyz[i], split.r_cam_m[i])
        for k in (0, 1, 2, 3, 8, 9, 10):
            assert np.linalg.norm(ends - kp[k], axis=1).min() < 1e-6, (i, k)
        np.testing.assert_allclose(kp, split.kp_uv[i], atol=1e-6)  # and the index agrees


def test_overlay_draws_where_the_spacecraft_is(tiny_prepared):
    """On a black frame, the true wireframe's pixels fall inside the labelled keypoint box (zoom side panel too)."""
    from speedpose.data.loader import open_split

    _, prep = tiny_prepared
    split = open_split(prep, "lightbox", "test")
    cam = split.camera
    blank = np.zeros((cam.height, cam.width), np.uint8)
    img = pose_overlay(blank, cam, None, None, split.q_wxyz[0], split.r_cam_m[0], out_height=cam.height, axes_m=None)
    frame = img[:, :cam.width]
    ys, xs = np.nonzero((frame[..., 1] > 150) & (frame[..., 2] < 150))  # the green wireframe, not the white zoom frame
    box = split.kp_box(clipped=True)[0]
    assert len(xs) > 50
    margin = 0.12 * max(box[2] - box[0], box[3] - box[1]) + 4
    assert xs.min() >= box[0] - margin and xs.max() <= box[2] + margin
    assert ys.min() >= box[1] - margin and ys.max() <= box[3] + margin
    assert img[:, cam.width + 4:].shape == (cam.height, cam.height, 3)


def test_html_links_every_picture(lightbox_report):
    _, out = lightbox_report
    html = (out / "report.html").read_text()
    srcs = re.findall(r"<img src='([^']+)'", html)
    assert len(srcs) >= 2 + 2 + 2 + 1
    for s in srcs:
        assert (out / s).is_file(), s
    assert "lightbox/test" in html and "Acc@10" in html


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_html_renders_in_headless_chromium(lightbox_report, tmp_path):
    exe = _chromium()
    if exe is None:
        why = "chromium is absent (apt-get install chromium): cannot check that report.html renders"
        if os.environ.get("SPEEDPOSE_REQUIRE_CHROMIUM") == "1":  # set by .ci/run, which installs it
            pytest.fail(why)
        pytest.skip(why)
    _, out = lightbox_report
    shot = tmp_path / "shot.png"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={shot}",
           "--window-size=1280,2400", (out / "report.html").resolve().as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    import cv2

    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (2400, 1280)
    # text and pictures: many distinct grey levels and colours, not a blank or error page
    assert img.std() > 20 and len(np.unique(img.reshape(-1, 3), axis=0)) > 500


def test_evaluate_refuses_bad_input(smoke_run, tiny_prepared, tmp_path):
    from speedpose.cli import main

    root, prep = tiny_prepared
    assert main(["evaluate", "--run", str(tmp_path), "--root", str(root), "--domain", "lightbox"]) == 2
    assert main(["evaluate", "--run", str(smoke_run), "--root", str(root), "--domain", "moon"]) == 2
    assert main(["evaluate", "--run", str(smoke_run), "--root", str(root), "--domain", "lightbox",
                 "--checkpoint", "nope.pt", "--prep", str(prep)]) == 2


def test_a_split_is_preprocessed_on_demand_once(tiny_standin, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPEEDPOSE_CACHE", str(tmp_path / "cache"))
    split = open_or_preprocess(tiny_standin, "sunlamp", "test", progress=True)
    assert "not preprocessed yet" in capsys.readouterr().out
    assert len(split) == 3 and str(split.directory).startswith(str(tmp_path / "cache"))
    manifest = split.directory / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    again = open_or_preprocess(tiny_standin, "sunlamp", "test", progress=True)
    assert "not preprocessed yet" not in capsys.readouterr().out
    assert again.filenames == split.filenames and manifest.stat().st_mtime_ns == stamp


def test_keypoint_errors_against_the_projected_label():
    """The median distance of the confident keypoints to the label's projection; NaN without a confident one."""
    from speedpose.camera import speedplus_camera
    from speedpose.report import keypoint_errors

    cam = speedplus_camera()
    q = np.array([[1.0, 0, 0, 0], [0.0, 1, 0, 0]])
    r = np.array([[0, 0, 5.0], [0.1, 0, 7.0]])
    true_uv = project_keypoints(cam, q, r)
    pred = true_uv.copy()
    pred[0, :, 0] += 3.0  # every keypoint of image 0 three pixels off
    pred[0, 0] += 500.0   # one far off, but not confident
    conf = np.full((2, 11), 0.9)
    conf[0, 0] = 0.1
    conf[1] = 0.0
    err, n = keypoint_errors(pred, conf, cam, q, r, min_confidence=0.3)
    assert err[0] == pytest.approx(3.0) and np.isnan(err[1]) and list(n) == [10, 0]


def test_overlay_draws_the_predicted_keypoints(tiny_prepared):
    """A predicted keypoint is drawn in magenta at its pixel (the true one in green nearby)."""
    from speedpose.report.overlays import COLOR_KEYPOINT, draw_keypoints

    canvas = np.zeros((200, 300, 3), np.uint8)
    pred = np.array([[100.0, 80.0]] + [[np.nan, np.nan]] * 10)
    true = np.array([[120.0, 90.0]] + [[np.nan, np.nan]] * 10)
    draw_keypoints(canvas, pred, np.array([1.0] + [0.0] * 10), true, thick=1)
    def magenta(px):  # anti-aliased: COLOR_KEYPOINT's hue, most of its intensity
        return px[0] > 0.8 * COLOR_KEYPOINT[0] and px[2] > 0.8 * COLOR_KEYPOINT[2] and px[1] < 40

    assert magenta(canvas[80, 97]) and magenta(canvas[80, 109]) and magenta(canvas[72, 100])  # a 20 px cross
    assert not magenta(canvas[80, 115])
    assert canvas[90, 120].any() and not canvas[10, 10].any()
