"""The keypoint head's targets, decoding and geometry: sub-pixel round trips, visibility masking, translation and PnP
refinement in the virtual camera mapped back to the real camera, the I2S guard against a mirror solution, and the
fallback when too few keypoints are confident."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pandas as pd
import pytest
import torch

from speedpose.camera import speedplus_camera
from speedpose.geometry.rotations import quat_wxyz_to_matrix, random_quat_wxyz
from speedpose.pose.crops import CropSpec, crop_camera
from speedpose.pose.keypoints import (KeypointHead, cell_centres, decode_heatmaps, keypoint_loss, refine_pose,
                                      translation_from_keypoints)
from speedpose.tango import keypoint_box, project_keypoints, tango_keypoints_body

KP = tango_keypoints_body()


def _gaussian_logits(uv: np.ndarray, H: int, W: int, sigma: float = 2.0, stride: int = 4) -> torch.Tensor:
    ys, xs = cell_centres(H, stride).double(), cell_centres(W, stride).double()
    u, v = torch.from_numpy(uv[..., 0]), torch.from_numpy(uv[..., 1])
    d2 = (xs[None, None, None] - u[..., None, None]) ** 2 + (ys[None, None, :, None] - v[..., None, None]) ** 2
    return (-d2 / (2 * sigma ** 2)).float()


@pytest.mark.parametrize("stride, sigma", [(4, 2.0), (2, 1.0)])
def test_heatmap_decoding_is_sub_pixel(stride, sigma):
    rng = np.random.default_rng(0)
    uv = rng.uniform(8, 56, (3, 11, 2))
    n = 64 // stride
    out = {"kp_logits": _gaussian_logits(uv, n, n, sigma, stride), "kp_vis_logits": torch.full((3, 11), 10.0)}
    dec, conf = decode_heatmaps(out, stride)
    assert np.abs(dec - uv).max() < 0.0625 * stride  # a sixteenth of the cell spacing
    assert (conf > 0.5).all()
    out["kp_vis_logits"][:, 3] = -10.0  # predicted invisible: no confidence
    assert (decode_heatmaps(out, stride)[1][:, 3] < 1e-3).all()
    if stride != 4:  # decoded at the wrong stride, the keypoints land elsewhere
        assert np.abs(decode_heatmaps(out)[0] - uv).max() > 5
    with pytest.raises(ValueError, match="expected 2 or 4, got 8"):
        decode_heatmaps(out, 8)


def test_loss_at_stride_2_is_lowest_at_the_target():
    uv = torch.from_numpy(np.full((1, 11, 2), 30.3))
    vis = torch.ones(1, 11, dtype=torch.bool)

    def loss(shift: float, stride: int) -> float:
        out = {"kp_logits": _gaussian_logits(uv.numpy() + shift, 32, 32, 2.0, 2),
               "kp_vis_logits": torch.full((1, 11), 5.0)}
        return keypoint_loss(out, uv.float(), vis, 2.0, stride)[0].item()

    losses = [loss(d, 2) for d in (-2.0, -1.0, 0.0, 1.0, 2.0)]
    assert int(np.argmin(losses)) == 2  # lowest where the heatmap peaks at the keypoint, on either side
    assert losses[2] < loss(0.0, 4) - 1.0  # the same heatmaps read at the wrong stride: far off


def test_loss_is_lowest_at_the_target_and_ignores_invisible_keypoints():
    uv = torch.from_numpy(np.full((1, 11, 2), 30.0))
    vis = torch.ones(1, 11, dtype=torch.bool)
    good = {"kp_logits": _gaussian_logits(uv.numpy(), 16, 16), "kp_vis_logits": torch.full((1, 11), 5.0)}
    bad = {"kp_logits": _gaussian_logits(uv.numpy() + 8, 16, 16), "kp_vis_logits": torch.full((1, 11), 5.0)}
    assert keypoint_loss(good, uv.float(), vis)[0] < keypoint_loss(bad, uv.float(), vis)[0]
    logits = torch.zeros(1, 11, 16, 16, requires_grad=True)
    hidden = vis.clone()
    hidden[0, 4] = False
    keypoint_loss({"kp_logits": logits, "kp_vis_logits": torch.zeros(1, 11)}, uv.float(), hidden)[0].backward()
    assert logits.grad[0, 4].abs().max() == 0 and logits.grad[0, 3].abs().max() > 0


@pytest.mark.parametrize("encoder, stride", [("tf_efficientnet_lite0", 16), ("resnet18", 32), ("resnet50", 16)])
def test_head_on_every_encoder_pyramid(encoder, stride):
    from speedpose.models.encoders import build_encoder

    enc, c = build_encoder(encoder, pretrained=False, stride=stride)
    x = torch.randn(2, 3, 64, 64)
    f, pyramid = enc.eval().forward_pyramid(x)
    assert [p.shape[1] for p in pyramid] == list(enc.pyramid_channels)
    assert [p.shape[-1] for p in pyramid] == [32, 16, 8]
    assert torch.equal(f, enc(x))  # the pyramid's final map is the encoder's output
    out = KeypointHead(c, enc.pyramid_channels, width=16)(f, pyramid)
    assert out["kp_logits"].shape == (2, 11, 16, 16) and out["kp_vis_logits"].shape == (2, 11)
    fine = KeypointHead(c, enc.pyramid_channels, width=16, stride=2)
    assert fine(f, pyramid)["kp_logits"].shape == (2, 11, 32, 32)
    # the stride-4 head keeps the names of its checkpoints
    four = {k.rsplit(".", 1)[0] for k in KeypointHead(c, enc.pyramid_channels, width=16).state_dict()}
    assert four == {"lateral.0", "lateral.1", "lateral.2", "smooth.0.0", "smooth.0.1", "smooth.1.0", "smooth.1.1",
                    "heat", "vis"}


def _crop_case(seed: int):
    cam = speedplus_camera()
    rng = np.random.default_rng(seed)
    q = random_quat_wxyz(1, rng)[0]
    r = np.array([rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4), rng.uniform(3, 9)])
    box = keypoint_box(project_keypoints(cam, q, r), cam.width, cam.height).unclipped
    vc = crop_camera(cam, box, CropSpec(64, 1.3), in_plane_rad=float(rng.uniform(-3, 3)))
    R = quat_wxyz_to_matrix(q)
    R_virt, r_virt = vc.pose_to_virtual(R, r)
    return vc, R, r, R_virt, r_virt, vc.project(KP @ R_virt.T + r_virt)


@pytest.mark.parametrize("seed", range(4))
def test_translation_from_keypoints_maps_back_to_the_real_camera(seed):
    vc, R, r, R_virt, r_virt, uv = _crop_case(seed)
    t = translation_from_keypoints(R_virt, KP, uv, np.ones(11), vc.K)
    np.testing.assert_allclose(t, r_virt, atol=1e-9)
    np.testing.assert_allclose(vc.pose_from_virtual(R_virt, t)[1], r, atol=1e-6)
    w = np.zeros(11)
    w[[0, 6, 9]] = 1.0  # three keypoints suffice
    np.testing.assert_allclose(translation_from_keypoints(R_virt, KP, uv, w, vc.K), r_virt, atol=1e-9)
    assert translation_from_keypoints(R_virt, KP, uv, np.eye(11)[0], vc.K) is None


def _rot(axis, deg):
    import cv2

    return cv2.Rodrigues(np.asarray(axis, float) / np.linalg.norm(axis) * np.radians(deg))[0]


def test_pnp_refinement_recovers_the_pose_from_a_nearby_start():
    vc, R, r, R_virt, r_virt, uv = _crop_case(7)
    R0 = _rot([1, 2, 0.5], 6) @ R_virt
    t0 = translation_from_keypoints(R0, KP, uv, np.ones(11), vc.K)
    R1, t1 = refine_pose(R0, t0, KP, uv, np.ones(11), vc.K)
    np.testing.assert_allclose(R1, R_virt, atol=1e-6)
    np.testing.assert_allclose(vc.pose_from_virtual(R1, t1)[1], r, atol=1e-6)
    assert refine_pose(R0, t0, KP, uv, np.r_[np.ones(5), np.zeros(6)], vc.K) is None  # too few points


def test_a_mirror_solution_is_rejected_by_the_i2s_guard():
    """Keypoints of a near-symmetric flip (the pose turned 180 deg about the body's z axis, where Tango's box is
    nearly symmetric) pull PnP away from the I2S rotation by far more than the allowed change: the refinement is
    refused and the I2S basin kept."""
    vc, R, r, R_virt, r_virt, uv = _crop_case(3)
    flip = R_virt @ _rot([0, 0, 1], 180)
    uv_flip = vc.project(KP @ flip.T + r_virt)
    assert refine_pose(R_virt, r_virt, KP, uv_flip, np.ones(11), vc.K) is None
    near = R_virt @ _rot([0, 0, 1], 8)  # a small error of the same kind is corrected
    R1, _ = refine_pose(R_virt, r_virt, KP, vc.project(KP @ near.T + r_virt), np.ones(11), vc.K)
    np.testing.assert_allclose(R1, near, atol=1e-6)


def test_solver_falls_back_to_i2s_without_confident_keypoints():
    from speedpose.pose.keypoints import solve_pose_from_keypoints

    vc, R, r, R_virt, r_virt, uv = _crop_case(1)
    logits = _gaussian_logits(uv[None], 16, 16)
    good = {"kp_logits": logits, "kp_vis_logits": torch.full((1, 11), 10.0)}
    R_out, r_out, branch = solve_pose_from_keypoints(*decode_heatmaps(good), R_virt[None], np.zeros((1, 3)), [vc],
                                                     "fused", 0.3)
    assert branch[0] in ("kp_translation", "fused")
    assert np.linalg.norm(r_out[0] - r) < 0.05 * np.linalg.norm(r)
    unsure = {"kp_logits": logits, "kp_vis_logits": torch.full((1, 11), -10.0)}
    R_out, r_out, branch = solve_pose_from_keypoints(*decode_heatmaps(unsure), R_virt[None], np.zeros((1, 3)),
                                                     [vc], "fused", 0.3)
    assert branch[0] == "i2s" and (r_out == 0).all()


def test_outlying_keypoints_are_dropped_and_too_few_inliers_keep_i2s():
    """Three confident keypoints on the wrong corners (20 px off) are not inliers of the I2S rotation: the
    translation from the other eight is exact; with fewer inliers than min_inliers the I2S pose is kept."""
    from speedpose.pose.keypoints import keypoint_inliers, solve_pose_from_keypoints

    vc, R, r, R_virt, r_virt, uv = _crop_case(2)
    bad = uv.copy()
    bad[[0, 4, 7]] += np.array([20.0, -15.0])
    t, w = keypoint_inliers(R_virt, bad, np.ones(11), vc.K, inlier_px=3.0)
    assert (w > 0).sum() == 8 and w[[0, 4, 7]].sum() == 0
    np.testing.assert_allclose(t, r_virt, atol=1e-6)
    conf = np.ones((1, 11))
    _, r_out, branch = solve_pose_from_keypoints(bad[None], conf, R_virt[None], np.zeros((1, 3)), [vc],
                                                 "kp_translation", 0.3, inlier_px=3.0, min_inliers=4)
    assert branch[0] == "kp_translation" and np.abs(r_out[0] - r).max() < 1e-6
    _, r_out, branch = solve_pose_from_keypoints(bad[None], conf, R_virt[None], np.zeros((1, 3)), [vc],
                                                 "kp_translation", 0.3, inlier_px=3.0, min_inliers=9)
    assert branch[0] == "i2s" and (r_out == 0).all()


def test_evaluate_reports_the_keypoints_of_a_keypoint_model(tiny_prepared, tmp_path, monkeypatch):
    """A run with a keypoint head: predictions carry the keypoints in full-resolution pixels, per_image.csv their
    error against the label (median over the confident ones) and the branch, the overlays draw them."""
    from pipelines import evaluate as evaluate_stage
    from pipelines import train as train_stage

    root, prep = tiny_prepared
    train_stage.run(root, "smoke", ["data.val_limit=2", "train.batch_size=2", "train.workers=0", "train.device=cpu",
                                    "train.max_steps=2", f"data.prep_dir={prep}", "model.keypoints.enabled=true",
                                    "model.pose_solver=fused", "model.keypoints.min_confidence=0.0"],
                    out=tmp_path, name="kp", progress=False)
    rep = evaluate_stage.run(tmp_path / "kp", root, "lightbox", prep_dir=prep, out=tmp_path / "eval", n_examples=1,
                             n_distributions=0, progress=False)
    df = pd.read_csv(tmp_path / "eval" / "per_image.csv")
    assert {"kp_err_px", "kp_confident", "branch"} <= set(df.columns)
    assert (df["kp_confident"] == 11).all() and np.isfinite(df["kp_err_px"]).all() and (df["kp_err_px"] >= 0).all()
    assert set(df["branch"]) <= {"i2s", "kp_translation", "fused", "kp_translation_alt", "fused_alt"}
    assert (tmp_path / "eval" / rep["files"]["worst"][0]).is_file()
    # a re-run reads the keypoints back from the inference cache, predicting nothing again
    import speedpose.pose.split_inference as split_inference

    def refuse(*args, **kwargs):
        raise AssertionError("predicted again instead of reading the cache")

    monkeypatch.setattr(split_inference, "predict_split", refuse)
    evaluate_stage.run(tmp_path / "kp", root, "lightbox", prep_dir=prep, out=tmp_path / "eval", n_examples=1,
                       n_distributions=0, progress=False)
    assert pd.read_csv(tmp_path / "eval" / "per_image.csv")["kp_err_px"].tolist() == df["kp_err_px"].tolist()


def test_stride_2_reaches_the_network_the_loss_and_the_decoding(tiny_prepared, tmp_path, monkeypatch):
    """``model.keypoints.stride=2``: the trained network's heatmaps are half the crop's side, and training's loss
    and inference's decoding are told stride 2 (spies on both)."""
    import speedpose.pose.kinds.crop as crop_module
    from pipelines import evaluate as evaluate_stage
    from pipelines import train as train_stage

    calls = []

    def spy(fn, name):
        def wrapped(*args, **kwargs):
            bound = inspect.signature(fn).bind(*args, **kwargs)
            bound.apply_defaults()  # a call without the stride would record the default, 4
            calls.append((name, bound.arguments["out"]["kp_logits"].shape[-1], bound.arguments["stride"]))
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(crop_module, "keypoint_loss", spy(keypoint_loss, "loss"))
    monkeypatch.setattr(crop_module, "decode_heatmaps", spy(decode_heatmaps, "decode"))
    root, prep = tiny_prepared
    train_stage.run(root, "smoke", ["data.val_limit=2", "train.batch_size=2", "train.workers=0", "train.device=cpu",
                                    "train.max_steps=1", f"data.prep_dir={prep}", "model.keypoints.enabled=true",
                                    "model.keypoints.stride=2", "model.pose_solver=fused"],
                    out=tmp_path, name="kp2", progress=False)
    evaluate_stage.run(tmp_path / "kp2", root, "lightbox", prep_dir=prep, out=tmp_path / "eval", n_examples=0,
                       n_distributions=0, progress=False)
    from speedpose.config import load_config

    size = load_config(tmp_path / "kp2" / "config.yaml", []).data.crop_size
    assert {name for name, _, _ in calls} == {"loss", "decode"}
    assert all(side == size // 2 and stride == 2 for _, side, stride in calls)


def test_the_flip_hypothesis_is_taken_when_the_keypoints_explain_it():
    """The I2S mode is the 180-deg flip of the true rotation; the keypoints of the true pose: with the true rotation
    among the hypotheses it wins (branch fused_alt) and the pose is exact; when the keypoints agree with the mode,
    the mode stays, and a hypothesis far below in density loses to an equally supported mode."""
    from speedpose.pose.keypoints import solve_pose_from_keypoints

    vc, R, r, R_virt, r_virt, uv = _crop_case(4)
    flip = R_virt @ _rot([0, 0, 1], 180)
    conf = np.ones((1, 11))
    R_out, r_out, branch = solve_pose_from_keypoints(uv[None], conf, flip[None], np.zeros((1, 3)), [vc], "fused",
                                                     0.3, R_alt=R_virt[None, None], alt_gap=np.array([[-2.0]]))
    assert branch[0] == "fused_alt"
    np.testing.assert_allclose(R_out[0], R_virt, atol=1e-6)
    np.testing.assert_allclose(r_out[0], r, atol=1e-6)
    # the keypoints of the mode's own pose: the mode is kept
    uv_flip = vc.project(KP @ flip.T + r_virt)
    _, _, branch = solve_pose_from_keypoints(uv_flip[None], conf, flip[None], np.zeros((1, 3)), [vc], "fused",
                                             0.3, R_alt=R_virt[None, None], alt_gap=np.array([[-2.0]]))
    assert branch[0] == "fused"
    # no alternative (NaN gap) or none given: today's single-hypothesis result
    _, _, branch = solve_pose_from_keypoints(uv[None], conf, flip[None], np.zeros((1, 3)), [vc], "fused", 0.3,
                                             R_alt=R_virt[None, None], alt_gap=np.array([[np.nan]]))
    assert branch[0] == "i2s"


def test_rotation_alternatives_are_separated_modes_with_their_density_gaps():
    """A distribution with two bumps (a rotation and its 180-deg flip, the second weaker): the alternative is the
    flip, to the grid's resolution, with a negative gap; cells near the mode are skipped."""
    from speedpose.geometry.rotations import geodesic_angle_matrix
    from speedpose.models.i2s.grid_signal import SO3GridSignal
    from speedpose.pose.orientation import rotation_alternatives, rotation_mode

    grid = SO3GridSignal(level=2, lmax=6)
    head = torch.nn.Module()
    head.grid = grid
    Ra = torch.tensor(_rot([0.3, 1, 0.2], 40), dtype=torch.float32)
    Rb = Ra @ torch.tensor(_rot([0, 0, 1], 180), dtype=torch.float32)
    # least-squares coefficients of a signal peaked at Ra (height 6) and Rb (height 4) on the grid
    ang_a = geodesic_angle_matrix(grid.rotations, Ra[None].expand_as(grid.rotations))
    ang_b = geodesic_angle_matrix(grid.rotations, Rb[None].expand_as(grid.rotations))
    target = 6 * torch.exp(-(ang_a / 0.4) ** 2) + 4 * torch.exp(-(ang_b / 0.4) ** 2)
    coeffs = torch.linalg.lstsq(grid.wigner.T, target[:, None]).solution.T  # (1, n_coeffs)
    R_mode, _ = rotation_mode(head, coeffs, 2)
    assert float(geodesic_angle_matrix(R_mode, Ra[None])) < math.radians(8)
    R_alt, gap = rotation_alternatives(head, coeffs, R_mode, k=1)
    assert gap[0, 0] < 0
    assert float(geodesic_angle_matrix(torch.from_numpy(R_alt[0, 0]), Rb.double())) < math.radians(10)


def test_keypoint_medoids_pick_a_prediction_not_a_point_between_two():
    """Views split 4/4 between two corners: the medoid is one of the corners (a mean or a coordinate-wise median
    would be half-way); 5/3: the majority's; its confidence comes with it."""
    from speedpose.pose.keypoints import keypoint_medoids

    a, b = np.array([10.0, 20.0]), np.array([50.0, 60.0])
    rng = np.random.default_rng(0)
    split = np.stack([a + rng.normal(0, 0.1, 2) for _ in range(4)] + [b + rng.normal(0, 0.1, 2) for _ in range(4)])
    conf = np.linspace(0.1, 0.8, 8)
    uv, c = keypoint_medoids(split[:, None, None], conf[:, None, None])
    assert uv.shape == (1, 1, 2) and c.shape == (1, 1)
    k = int(np.argmin(np.linalg.norm(split - uv[0, 0], axis=1)))
    assert np.array_equal(uv[0, 0], split[k]) and c[0, 0] == conf[k]
    assert min(np.linalg.norm(uv[0, 0] - a), np.linalg.norm(uv[0, 0] - b)) < 1.0
    majority = np.concatenate([a + rng.normal(0, 0.1, (5, 2)), b + rng.normal(0, 0.1, (3, 2))])
    uv, _ = keypoint_medoids(majority[:, None, None], conf[:, None, None])
    assert np.linalg.norm(uv[0, 0] - a) < 1.0


def test_decoding_confidence_means_the_same_at_both_strides():
    """The confidence window spans the same crop pixels at stride 2 as at stride 4 (``min_confidence`` keeps its
    meaning): the same 2-px Gaussian gets nearly the same confidence at both."""
    uv = np.random.default_rng(1).uniform(16, 48, (4, 11, 2))
    conf = {s: decode_heatmaps({"kp_logits": _gaussian_logits(uv, 64 // s, 64 // s, 2.0, s),
                                "kp_vis_logits": torch.full((4, 11), 20.0)}, s)[1] for s in (4, 2)}
    assert conf[4].min() > 0.9 and np.abs(conf[2] - conf[4]).max() < 0.08
