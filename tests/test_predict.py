"""`speedpose predict` on the real SPEED+ sample images with a smoke-trained run: it runs, writes overlays and
distribution plots, prints one JSON line per image (no accuracy claim: the run is two steps old)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines import predict as predict_stage
from speedpose.errors import InputError


def test_predict_real_sample_images(real_sample, smoke_run, tmp_path, capsys):
    from speedpose.cli import main

    images = sorted((real_sample / "lightbox" / "images").glob("*.jpg"))[:2]
    assert main(["predict", *map(str, images), "--run", str(smoke_run), "--camera",
                 str(real_sample / "camera.json"), "--out", str(tmp_path), "--device", "cpu"]) == 0
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    assert [Path(r["image"]).name for r in lines] == [p.name for p in images]
    for r, img in zip(lines, images):
        q = np.array(r["q_wxyz"])
        assert abs(np.linalg.norm(q) - 1) < 1e-6 and np.isfinite(r["r_cam_m"]).all() and 0 < r["confidence"] <= 1
        ov = cv2.imread(r["overlay"])
        assert ov is not None and ov.shape[0] == 480 and ov.shape[1] > 480 + 768
        # the left part is the frame itself (drawings cover little of it)
        frame = cv2.resize(cv2.imread(str(img), cv2.IMREAD_GRAYSCALE), (768, 480), interpolation=cv2.INTER_AREA)
        assert np.corrcoef(frame.ravel(), ov[:, :768].mean(axis=2).ravel())[0, 1] > 0.8
        assert cv2.imread(r["distribution_plot"]) is not None
    saved = [json.loads(ln) for ln in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert saved == lines


def test_predict_is_deterministic_and_matches_the_split_path(real_sample, smoke_run, tmp_path):
    """The same image through `predict` twice gives the same pose."""
    img = sorted((real_sample / "lightbox" / "images").glob("*.jpg"))[:1]
    a = predict_stage.run(img, smoke_run, real_sample / "camera.json", tmp_path / "a", device="cpu", plots=False,
                          progress=False)
    b = predict_stage.run(img, smoke_run, real_sample / "camera.json", tmp_path / "b", device="cpu", plots=False,
                          progress=False)
    assert a[0]["q_wxyz"] == b[0]["q_wxyz"] and a[0]["r_cam_m"] == b[0]["r_cam_m"]


def test_predict_refuses_bad_images(smoke_run, tmp_path):
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((100, 160), np.uint8))
    with pytest.raises(InputError, match="camera expects 1920x1200"):
        predict_stage.run([small], smoke_run, out=tmp_path / "o", device="cpu", progress=False)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"nope")
    with pytest.raises(InputError, match="not a readable image"):
        predict_stage.run([junk], smoke_run, out=tmp_path / "o", device="cpu", progress=False)
    with pytest.raises(InputError, match="image not found"):
        predict_stage.run([tmp_path / "absent.jpg"], smoke_run, out=tmp_path / "o", device="cpu", progress=False)
    assert not (tmp_path / "o").exists()
