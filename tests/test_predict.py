"""`speedpose predict` with a smoke-trained run: on the real SPEED+ sample images it runs, writes overlays and
distribution plots, prints one JSON line per image (no accuracy claim: the run is two steps old); on stand-in frames
it gives the poses of evaluate's preprocessed-split path."""

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


def test_predict_matches_the_split_path(tiny_standin, smoke_run, tmp_path):
    """Image files through `predict` give, image for image, the poses of `evaluate`'s path (the same frames
    preprocessed at predict's size, through predict_split): same decoding, same localiser input, same crops."""
    import torch

    from pipelines import preprocess
    from speedpose.data.loader import open_split
    from speedpose.pose.inference import predict_split
    from speedpose.runs import load_run

    prep = tmp_path / "prep"
    preprocess.run(tiny_standin, out=prep, domains=("lightbox",), size=predict_stage.IMAGE_SIZE, workers=1,
                   progress=False)
    split = open_split(prep, "lightbox", "test", root=tiny_standin)
    loaded = load_run(smoke_run, "best")
    ref = predict_split(loaded.model, split, np.arange(len(split)), loaded.kind, torch.device("cpu"), batch_size=1)
    images = [split.image_path(i) for i in range(len(split))]
    got = predict_stage.run(images, smoke_run, camera=tiny_standin / "camera.json", out=tmp_path / "p",
                            device="cpu", plots=False, progress=False)
    assert [Path(r["image"]).name for r in got] == split.filenames
    for k, rec in enumerate(got):
        for key, expected in (("q_wxyz", ref.q_wxyz[k]), ("r_cam_m", ref.r_cam_m[k]),
                              ("box_xyxy", ref.box_xyxy[k]), ("confidence", ref.confidence[k])):
            np.testing.assert_allclose(rec[key], expected, rtol=0, atol=1e-6, err_msg=f"{split.filenames[k]} {key}")


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
