"""Crop sets: crops rendered through the pipeline's virtual camera show what a crop of the frame shows, with exact
labels; the stage is deterministic and resumable; the training samples and batches built from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines import synth_crops
from speedpose.camera import speedplus_camera
from speedpose.data.crop_set import CropSet, chunk_paths
from speedpose.errors import InputError
from speedpose.geometry.rotations import quat_wxyz_to_matrix
from speedpose.pose.crops import CropSpec, crop_camera
from speedpose.pose.dataset import CropSetSamples, collate
from speedpose.pose.kinds import model_kind
from speedpose.render import distortion_warp, render_frame
from speedpose.render.virtual_view import render_virtual_view
from speedpose.tango import keypoint_box, project_keypoints


@pytest.fixture(scope="module")
def smoke_cfg_64(tiny_prepared):
    """configs/smoke.yaml (64 px crops) on the tiny stand-in."""
    from speedpose.config import load_config

    root, prep = tiny_prepared
    return load_config(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml", [f"data.root={root}", f"data.prep_dir={prep}"])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("seed", [3, 11])
def test_virtual_view_matches_the_crop_of_the_frame(seed):
    """The silhouette rendered straight through the virtual camera equals the frame's silhouette warped into it
    (the crop-set label is exactly the label of the pipeline's crop): IoU > 0.9; a transposed rotation misses."""
    cam = speedplus_camera()
    rng = np.random.default_rng(seed)
    from speedpose.render.poses import sample_poses

    q, r = sample_poses(1, rng)
    q, r = q[0], r[0]
    frame = render_frame(distortion_warp(cam), q, r, "synthetic", np.random.default_rng(1), earth=False)
    box = keypoint_box(project_keypoints(cam, q, r), cam.width, cam.height).unclipped
    vc = crop_camera(cam, box, CropSpec(96, 1.3), in_plane_rad=0.7)
    warped = vc.warp(frame.mask, cam) >= 128
    R = quat_wxyz_to_matrix(q)
    direct = render_virtual_view(cam, vc, R, r, "synthetic", np.random.default_rng(2), earth=False).mask >= 128
    assert warped.sum() > 200
    assert _iou(warped, direct) > 0.9
    # the same check sees a 10-degree error of the label
    c, s_ = np.cos(np.radians(10)), np.sin(np.radians(10))
    R_off = np.array([[c, -s_, 0], [s_, c, 0], [0, 0, 1]]) @ R
    wrong = render_virtual_view(cam, vc, R_off, r, "synthetic", np.random.default_rng(2), earth=False).mask >= 128
    assert _iou(warped, wrong) < _iou(warped, direct) - 0.1


def test_virtual_view_blanks_what_the_frame_does_not_show():
    """A spacecraft cut by the frame's edge is cut in the rendered crop too."""
    cam = speedplus_camera()
    q, r = np.array([1.0, 0, 0, 0]), np.array([0.6, 0.0, 2.4])  # near the right edge, truncated
    box = keypoint_box(project_keypoints(cam, q, r), cam.width, cam.height)
    assert box.truncated
    vc = crop_camera(cam, box.unclipped, CropSpec(64, 1.3))
    view = render_virtual_view(cam, vc, np.eye(3), r, "synthetic", np.random.default_rng(0), earth=False)
    uv = vc.source_pixels(cam)
    outside = uv[..., 0] >= cam.width - 0.5
    assert outside.any() and (view.mask[outside] == 0).all() and (view.image[outside] == 0).all()
    assert (view.mask[~outside] > 0).any()


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("crops") / "set"
    params = synth_crops.CropSetParams(crops=7, size=64, margin=1.3, seed=5)
    summary = synth_crops.run(out, params, workers=1, progress=False)
    assert summary["rendered"] == 7
    return out, params


def test_crop_set_labels_are_exact(small_set):
    """Each crop's keypoints, projected with the stored label through its stored virtual camera, fall on the
    rendered spacecraft."""
    out, _ = small_set
    cs = CropSet.open(out)
    assert len(cs) == 7 and cs.size == 64 and cs.image(3).shape == (64, 64)
    hits = []
    for i in range(len(cs)):
        vc = cs.camera(i)
        R_virt, r_virt = vc.pose_to_virtual(quat_wxyz_to_matrix(cs.labels["q_wxyz"][i]), cs.labels["r_cam_m"][i])
        from speedpose.tango import tango_keypoints_body

        uv = vc.project(tango_keypoints_body() @ R_virt.T + r_virt)
        img = cs.image(i)
        for (u, v), vis in zip(uv, cs.labels["kp_visible"][i]):
            x, y = int(round(u)), int(round(v))
            if vis and 1 <= x < 63 and 1 <= y < 63:
                hits.append(img[y - 1:y + 2, x - 1:x + 2].max() > 0)
    assert len(hits) > 20 and np.mean(hits) > 0.95


def test_crop_set_is_deterministic_and_resumable(small_set, tmp_path):
    out, params = small_set
    again = tmp_path / "again"
    synth_crops.run(again, params, workers=1, progress=False)
    assert np.load(chunk_paths(again, 0)[0]).tobytes() == np.load(chunk_paths(out, 0)[0]).tobytes()
    # an interrupted run (chunk labels missing, manifest incomplete) is finished by the same call
    chunk_paths(again, 0)[1].unlink()
    with pytest.raises(InputError, match="chunk 0 of 1 is missing"):
        CropSet.open(again)
    manifest = again / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"complete": true', '"complete": false'))
    with pytest.raises(InputError, match="not finished"):
        CropSet.open(again)
    s = synth_crops.run(again, params, workers=1, progress=False)
    assert s["rendered"] == 7 and len(CropSet.open(again)) == 7
    assert synth_crops.run(again, params, workers=1, progress=False)["rendered"] == 0  # finished: a no-op
    other = synth_crops.CropSetParams(crops=8, size=64, margin=1.3, seed=5)
    with pytest.raises(InputError, match="other parameters"):
        synth_crops.run(again, other, workers=1, progress=False)


def test_crop_set_open_errors(tmp_path):
    with pytest.raises(InputError, match="no manifest.json"):
        CropSet.open(tmp_path)


def test_samples_and_batches(small_set, tiny_prepared, smoke_cfg_64):
    """CropSetSamples re-expresses the labels in the crop's virtual camera; the localiser fields come from the frames
    on a share of the samples; collate batches both; a config of another crop size is refused."""
    from speedpose.data.loader import open_split

    out, _ = small_set
    root, prep = tiny_prepared
    cs = CropSet.open(out)
    frames = open_split(prep, "synthetic", "train", root=root)
    cfg = smoke_cfg_64.model_copy(update={"data": smoke_cfg_64.data.model_copy(update={"loc_fraction": 0.5})})
    ds = CropSetSamples(cs, np.arange(len(cs)), frames, np.arange(len(frames)), model_kind(cfg).sampling, train=False)
    s = ds[2]
    vc = cs.camera(2)
    R = quat_wxyz_to_matrix(cs.labels["q_wxyz"][2])
    np.testing.assert_allclose(s["R_virt"].numpy(), vc.R_cam_virt.T @ R, atol=1e-6)
    samples = [ds[k] for k in range(len(ds))]
    n_loc = sum("loc_image" in x for x in samples)
    assert 0 < n_loc < len(samples)
    batch = collate(samples)
    assert batch["crop"].shape == (7, 1, 64, 64) and batch["loc_image"].shape[0] == n_loc
    assert "loc_image" not in collate([x for x in samples if "loc_image" not in x])
    wrong = cfg.model_copy(update={"data": cfg.data.model_copy(update={"crop_size": 96})})
    with pytest.raises(InputError, match="crop set of 64 px"):
        CropSetSamples(cs, np.arange(len(cs)), frames, np.arange(len(frames)), model_kind(wrong).sampling)
    # a crop set rendered with another box jitter than the one whose mean inference frames at is refused ...
    jitter = cfg.model_copy(update={"augment": cfg.augment.model_copy(update={"box_scale": (1.0, 1.2)})})
    with pytest.raises(InputError, match="data.infer_box_scale=1.0500"):
        model_kind(jitter).training_set(frames, np.arange(len(frames)), cs, np.arange(len(cs)))
    # ... unless the framing is set to the set's own mean
    framed = jitter.model_copy(update={"data": jitter.data.model_copy(update={"infer_box_scale": 1.05})})
    assert len(model_kind(framed).training_set(frames, np.arange(len(frames)), cs, np.arange(len(cs)))) == len(cs)


def test_inference_frames_crops_like_the_average_training_crop(tiny_prepared, smoke_cfg_64):
    """Inference scales each box by the mean of the training box jitter (data.infer_box_scale overrides it); the crop
    is taken around the scaled box, and the reported box stays the one that was given."""
    from speedpose.data.loader import open_split
    from speedpose.pose.crops import jitter_box, mean_jitter_scale, scale_boxes
    from speedpose.pose.kinds.crop import localise_and_crop

    root, prep = tiny_prepared
    kind = model_kind(smoke_cfg_64)
    spec = kind.inference.spec
    box = np.array([700.0, 400.0, 1000.0, 600.0])
    rng = np.random.default_rng(0)
    sides = np.array([np.ptp(jitter_box(box, rng, spec, tuple(smoke_cfg_64.augment.box_scale))[[0, 2]])
                      for _ in range(4000)]) / 300.0
    assert kind.inference.box_scale == pytest.approx(sides.mean(), abs=0.005)
    # with a small margin the jitter's floor (the spacecraft must fit) raises the mean; the helper follows it
    tight = CropSpec(spec.size, 1.05)
    sides_tight = np.array([np.ptp(jitter_box(box, rng, tight, (0.9, 1.2), 0.0)[[0, 2]]) for _ in range(4000)]) / 300
    assert mean_jitter_scale((0.9, 1.2), tight) == pytest.approx(sides_tight.mean(), abs=0.005)
    assert mean_jitter_scale((0.9, 1.2), tight) > 1.05 + 0.003
    assert kind.inference.box_scale != 1.0  # the default jitter is not centred on the localiser's box
    fixed = smoke_cfg_64.model_copy(update={"data": smoke_cfg_64.data.model_copy(update={"infer_box_scale": 1.0})})
    assert model_kind(fixed).inference.box_scale == 1.0

    split = open_split(prep, "synthetic", "validation", root=root)
    torch.manual_seed(0)
    model = kind.build_model()
    inp = kind.network_inputs(model, split, np.array([0]), torch.device("cpu"), boxes_xyxy=box[None])
    np.testing.assert_array_equal(inp.box_xyxy[0], box)
    expected = crop_camera(split.camera, scale_boxes(box, kind.inference.box_scale), spec)
    assert inp.cameras[0].focal_px == pytest.approx(expected.focal_px, rel=1e-12)
    plain = localise_and_crop(model, split, np.array([0]), spec, kind.inference.loc_size, torch.device("cpu"),
                              boxes_xyxy=box[None])
    # (angles, not pixels, set the focal length: the ratio is the scale to within perspective and distortion)
    assert plain.cameras[0].focal_px / inp.cameras[0].focal_px == pytest.approx(kind.inference.box_scale, rel=1e-3)


def test_training_step_without_localiser_samples(small_set, tiny_prepared, smoke_cfg_64):
    """A batch without localiser samples still trains the crop network and gives the localiser zero gradients
    (so that DDP sees every parameter)."""
    from speedpose.pose.task import SpeedplusTask

    out, _ = small_set
    root, prep = tiny_prepared
    cfg = smoke_cfg_64.model_copy(update={"data": smoke_cfg_64.data.model_copy(update={
        "root": str(root), "prep_dir": str(prep), "crop_set": str(out), "loc_fraction": 1e-9})})
    task = SpeedplusTask(cfg)
    torch.manual_seed(0)
    model = task.build_model()
    batch = task.collate([task.train_dataset()[k] for k in range(4)])
    assert "loc_image" not in batch
    out = task.training_step(model, batch)
    out["loss"].backward()
    assert out["loc"].item() == 0.0
    assert all(p.grad is not None and (p.grad == 0).all() for p in model.localiser.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.net.parameters())
