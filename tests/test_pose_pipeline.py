"""The SPEED+ pose pipeline end to end on a tiny stand-in: samples, one training step per config, resume,
validation through the full inference chain."""

import numpy as np
import pytest
import torch

from pipelines import train as train_stage
from speedpose.config import load_config
from speedpose.data.loader import open_split
from speedpose.pose.inference import predict_split
from speedpose.pose.kinds import model_kind
from speedpose.pose.task import SpeedplusTask, train_subset
from speedpose.tango import project_keypoints
from speedpose.training import load_checkpoint


@pytest.fixture(scope="module")
def smoke_cfg(tiny_prepared):
    root, prep = tiny_prepared
    return load_config("configs/smoke.yaml", [f"data.root={root}", f"data.prep_dir={prep}"])


def test_training_samples_carry_consistent_labels(smoke_cfg, tiny_prepared):
    root, prep = tiny_prepared
    split = open_split(prep, "synthetic", "train")
    ds = model_kind(smoke_cfg).samples(split, np.arange(len(split)), train=True)
    np.random.seed(0)
    s = ds[0]
    assert s["crop"].shape == (1, 64, 64) and s["crop"].dtype == torch.uint8
    assert s["loc_image"].shape == (1, 96, 128)
    R = s["R_virt"].double()
    torch.testing.assert_close(R @ R.T, torch.eye(3, dtype=torch.float64), atol=1e-5, rtol=0)
    kp = s["kp_crop"].numpy()
    assert (kp > -0.5).all() and (kp < 63.5).all()  # box jitter keeps the spacecraft in the crop
    np.random.seed(0)
    again = ds[0]
    assert torch.equal(again["crop"], s["crop"])  # deterministic per sample seed


def test_train_subset_is_seeded():
    a = train_subset(100, 0.2, 0)
    assert len(a) == 20 and np.array_equal(a, train_subset(100, 0.2, 0))
    assert not np.array_equal(a, train_subset(100, 0.2, 1))
    assert len(train_subset(100, 1.0, 0)) == 100


@pytest.mark.parametrize("config", ["smoke", "speedplus_fullimage"])
def test_each_config_trains_checkpoints_resumes_and_validates(config, tiny_prepared, tmp_path):
    root, prep = tiny_prepared
    small = ["data.val_limit=2", "train.batch_size=2", "train.workers=0", "train.device=cpu",
             f"data.prep_dir={prep}"]
    if config == "speedplus_fullimage":
        small += ["data.fullimage_size=64", "model.i2s.sphere_channels=8", "model.i2s.train_grid_level=2",
                  "model.i2s.infer_level=4", "model.translation_hidden=16"]
    s1 = train_stage.run(root, config, small + ["train.max_steps=2"], out=tmp_path, name="run", progress=False)
    assert s1.stopped == "max_steps" and s1.global_step == 2
    assert load_checkpoint(tmp_path / "run" / "last.pt")["global_step"] == 2
    # resume: finish the epoch (8 images / batch 2 = 4 steps) and validate
    s2 = train_stage.run(root, config, small + ["train.max_steps=4"], out=tmp_path, name="run", resume=True,
                         progress=False)
    assert s2.global_step == 4 and s2.resumed_from_step == 2
    assert s2.last_val is not None and np.isfinite(s2.last_val["score"])
    assert (tmp_path / "run" / "best.pt").is_file()
    if config == "smoke":  # interrupted + resumed == uninterrupted, bit for bit (CPU)
        s3 = train_stage.run(root, config, small + ["train.max_steps=4"], out=tmp_path, name="straight",
                             progress=False)
        assert s3.global_step == 4
        a = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
        b = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k


def test_inference_chain_on_validation(smoke_cfg, tiny_prepared):
    root, prep = tiny_prepared
    task = SpeedplusTask(smoke_cfg)
    torch.manual_seed(0)
    model = task.build_model()
    split = open_split(prep, "synthetic", "validation")
    pred = predict_split(model, split, np.arange(len(split)), task.kind, batch_size=3)
    assert pred.q_wxyz.shape == (4, 4) and pred.r_cam_m.shape == (4, 3)
    np.testing.assert_allclose(np.linalg.norm(pred.q_wxyz, axis=1), 1, atol=1e-6)
    assert np.isfinite(pred.r_cam_m).all() and (pred.confidence > 0).all()
    again = predict_split(model, split, np.arange(len(split)), task.kind, batch_size=3)
    np.testing.assert_array_equal(pred.q_wxyz, again.q_wxyz)  # eval is deterministic
    rebatched = predict_split(model, split, np.arange(len(split)), task.kind, batch_size=4)
    np.testing.assert_allclose(pred.q_wxyz, rebatched.q_wxyz, atol=1e-5)  # batching changes only rounding


def test_perfect_boxes_and_labels_round_trip_through_the_crop_frame(tiny_prepared, smoke_cfg):
    """Mapping a true pose into the crop frame and back gives the label (no model involved)."""
    from speedpose.geometry.rotations import quat_wxyz_to_matrix
    from speedpose.pose.crops import crop_camera, decode_translation, encode_translation
    root, prep = tiny_prepared
    split = open_split(prep, "synthetic", "train")
    spec = model_kind(smoke_cfg).inference.spec
    for i in range(len(split)):
        vc = crop_camera(split.camera, split.kp_box(clipped=False)[i], spec)
        R = quat_wxyz_to_matrix(split.q_wxyz[i])
        R_v, _ = vc.pose_to_virtual(R, split.r_cam_m[i])
        np.testing.assert_allclose(vc.R_cam_virt @ R_v, R, atol=1e-12)
        enc = encode_translation(vc, split.r_cam_m[i], spec)
        np.testing.assert_allclose(decode_translation(vc, enc, spec), split.r_cam_m[i], atol=1e-9)
        uv = project_keypoints(split.camera, split.q_wxyz[i], split.r_cam_m[i])
        np.testing.assert_allclose(uv, split.kp_uv[i], atol=1e-6)


def test_refined_boxes_are_the_keypoint_boxes_of_the_pose(tiny_prepared):
    """The box a refinement pass crops is the keypoint box of the pose predicted (the labels' own box for a true
    pose, distortion included); an impossible pose keeps the previous box."""
    from speedpose.geometry.rotations import quat_wxyz_to_matrix
    from speedpose.pose.crops import refined_boxes

    root, prep = tiny_prepared
    split = open_split(prep, "synthetic", "validation", root=root)
    R = quat_wxyz_to_matrix(split.q_wxyz)
    fallback = np.full((len(split), 4), 7.0)
    boxes = refined_boxes(split.camera, R, split.r_cam_m, fallback)
    np.testing.assert_allclose(boxes, split.kp_box(clipped=False), atol=1e-6)
    behind = split.r_cam_m * np.array([1.0, 1.0, -1.0])
    assert (refined_boxes(split.camera, R, behind, fallback) == 7.0).all()


def test_refinement_pass_runs_and_keeps_the_localiser_box(smoke_cfg, tiny_prepared):
    root, prep = tiny_prepared
    split = open_split(prep, "synthetic", "validation", root=root)
    torch.manual_seed(0)
    model = SpeedplusTask(smoke_cfg).build_model()
    one = predict_split(model, split, np.arange(len(split)), model_kind(smoke_cfg))
    cfg2 = smoke_cfg.model_copy(update={"model": smoke_cfg.model.model_copy(update={"refine_passes": 1})})
    two = predict_split(model, split, np.arange(len(split)), model_kind(cfg2))
    np.testing.assert_array_equal(one.box_xyxy, two.box_xyxy)
    assert np.isfinite(two.q_wxyz).all() and np.isfinite(two.r_cam_m).all()
    assert not np.allclose(one.r_cam_m, two.r_cam_m)


def test_localiser_frames_are_augmented_only_when_asked(smoke_cfg, tiny_prepared):
    """augment.localiser: the training frames of the localiser go through the photometric frame augmentation (the
    boxes untouched); off, and outside training, they are the resized frames as they are."""
    from speedpose.data.image_store import resize_gray

    root, prep = tiny_prepared
    split = open_split(prep, "synthetic", "train")
    strong = dict(p_brightness_contrast=1, p_noise=1, p_exposure=1, p_bloom=1, start_step=0, ramp_steps=0)
    cfgs = {flag: smoke_cfg.model_copy(update={
        "data": smoke_cfg.data.model_copy(update={"loc_fraction": 1.0}),
        "augment": smoke_cfg.augment.model_copy(update={**strong, "localiser": flag})}) for flag in (False, True)}
    samples = {}
    for flag, cfg in cfgs.items():
        ds = model_kind(cfg).samples(split, np.arange(len(split)), train=True)
        np.random.seed(3)
        samples[flag] = ds[1]
    frame = torch.from_numpy(resize_gray(split.image(1), tuple(smoke_cfg.data.loc_size)))[None]
    assert torch.equal(samples[False]["loc_image"], frame)
    assert samples[True]["loc_image"].shape == frame.shape and not torch.equal(samples[True]["loc_image"], frame)
    assert torch.equal(samples[True]["loc_box_clipped"], samples[False]["loc_box_clipped"])
    assert torch.equal(samples[True]["crop"], samples[False]["crop"])  # the crop's own draws are untouched
    val = model_kind(cfgs[True]).samples(split, np.arange(len(split)), train=False)
    assert torch.equal(val[1]["loc_image"], frame)


def test_views_are_combined_in_the_first_views_frame():
    """Four crops rolled about the optical axis, each predicting the true rotation in its own virtual camera: the
    combined distribution peaks at the truth in the first crop's frame, although view 0 alone is the weakest (left
    in their own frames, the sharper other views would win)."""
    from speedpose.geometry.rotations import axis_angle_to_matrix, geodesic_angle_matrix, random_rotation_matrices
    from speedpose.geometry.wigner import delta_coeffs
    from speedpose.models.i2s import predict_mode
    from speedpose.pose.orientation import mean_over_views

    rng = np.random.default_rng(0)
    R_true = random_rotation_matrices(3, rng)  # (B, 3, 3) camera frame
    base = random_rotation_matrices(3, rng)  # view 0's virtual cameras
    rolls = [axis_angle_to_matrix(torch.tensor([0.0, 0.0, 2 * np.pi * v / 4], dtype=torch.float64)).numpy()
             for v in range(4)]
    R_cam_virt = np.stack([base @ roll for roll in rolls])  # (V, B, 3, 3)
    R_virt = np.einsum("vbji,bjk->vbik", R_cam_virt, R_true)  # the truth in each view's frame
    coeffs = torch.stack([delta_coeffs(torch.from_numpy(R), 6).float() for R in R_virt])
    coeffs[0] *= 0.3
    R_mode, _ = predict_mode(mean_over_views(coeffs, R_cam_virt), level=5)
    err = geodesic_angle_matrix(R_mode.double(), torch.from_numpy(R_virt[0]))
    assert float(err.max()) < np.radians(0.1)
    R_own, _ = predict_mode(coeffs.mean(dim=0), level=5)  # not re-expressed: a wrong frame wins
    assert float(geodesic_angle_matrix(R_own.double(), torch.from_numpy(R_virt[0])).min()) > np.radians(30)


def test_in_plane_views_run_and_keep_the_first_crop(smoke_cfg, tiny_prepared):
    """model.in_plane_views: more crop-network forwards per image, the localiser's box and score unchanged, a
    different (combined) pose; one view is the single-crop chain exactly."""
    root, prep = tiny_prepared
    split = open_split(prep, "synthetic", "validation", root=root)
    torch.manual_seed(0)
    model = SpeedplusTask(smoke_cfg).build_model()
    idx = np.arange(len(split))
    one = predict_split(model, split, idx, model_kind(smoke_cfg))
    cfg = smoke_cfg.model_copy(update={"model": smoke_cfg.model.model_copy(update={"in_plane_views": 4})})
    kind = model_kind(cfg)
    assert kind.inference.in_plane_views == 4
    four = predict_split(model, split, idx, kind)
    np.testing.assert_array_equal(one.box_xyxy, four.box_xyxy)
    np.testing.assert_array_equal(one.loc_score, four.loc_score)
    np.testing.assert_array_equal(one.R_cam_virt, four.R_cam_virt)
    assert np.isfinite(four.q_wxyz).all() and np.isfinite(four.r_cam_m).all()
    assert not np.allclose(one.q_wxyz, four.q_wxyz) and not np.allclose(one.r_cam_m, four.r_cam_m)


def test_views_recover_the_true_pose_from_oracle_crops(smoke_cfg, tiny_prepared, monkeypatch):
    """A stand-in network that answers each crop with the truth in that crop's own frame (a sharp distribution at
    the label's rotation, the encoded label translation, the label's keypoints): 8 rolled views (the 45-deg ones
    cover the box with another focal length) combine to the label, rotation, translation and keypoints in the real
    image; any view combined in the wrong frame would pull them off."""
    import speedpose.pose.kinds.crop as crop_module
    from speedpose.geometry.rotations import geodesic_angle_matrix, quat_wxyz_to_matrix
    from speedpose.geometry.wigner import delta_coeffs
    from speedpose.pose.crops import TANGO_KP, encode_translation

    root, prep = tiny_prepared
    split = open_split(prep, "synthetic", "validation", root=root)
    idx = np.arange(len(split))
    R_true, r_true = quat_wxyz_to_matrix(split.q_wxyz), split.r_cam_m
    model_cfg = smoke_cfg.model.model_copy(update={
        "keypoints": smoke_cfg.model.keypoints.model_copy(update={"enabled": True}), "in_plane_views": 8})
    kind = model_kind(smoke_cfg.model_copy(update={"model": model_cfg}))
    torch.manual_seed(0)
    model = SpeedplusTask(smoke_cfg.model_copy(update={"model": model_cfg})).build_model()
    seen = []  # (record indices, network inputs) of the crops just made
    crop = crop_module.localise_and_crop

    def recording(model, split, indices, *args, **kwargs):
        seen.append((np.asarray(indices), crop(model, split, indices, *args, **kwargs)))
        return seen[-1][1]

    def oracle_outputs(images_u8, device):
        rec, inp = seen[-1]
        R_virt = np.einsum("bji,bjk->bik", inp.R_cam_virt, R_true[rec])
        t = np.stack([encode_translation(vc, r, kind.inference.spec) for vc, r in zip(inp.cameras, r_true[rec])])
        return {"coeffs": delta_coeffs(torch.from_numpy(R_virt), model_cfg.i2s.lmax).float(),
                "t": torch.from_numpy(t), "kp_logits": torch.zeros(len(rec))}

    def oracle_keypoints(out, stride):
        assert stride == model_cfg.keypoints.stride
        rec, inp = seen[-1]
        uv = np.stack([vc.project((TANGO_KP @ R.T + r) @ vc.R_cam_virt)
                       for vc, R, r in zip(inp.cameras, R_true[rec], r_true[rec])])
        return uv, np.ones(uv.shape[:2])

    monkeypatch.setattr(crop_module, "localise_and_crop", recording)
    monkeypatch.setattr(crop_module, "decode_heatmaps", oracle_keypoints)
    monkeypatch.setattr(model, "net_outputs", oracle_outputs)
    pred = predict_split(model, split, idx, kind, batch_size=2)
    assert len(seen) == 8 * 2 and len({round(inp.cameras[0].focal_px, 6) for _, inp in seen[:8]}) > 1
    err = geodesic_angle_matrix(torch.from_numpy(quat_wxyz_to_matrix(pred.q_wxyz)), torch.from_numpy(R_true))
    assert float(err.max()) < np.radians(0.05)
    np.testing.assert_allclose(pred.r_cam_m, r_true, atol=1e-6)
    np.testing.assert_allclose(pred.kp_uv, split.kp_uv, atol=1e-4)


def test_training_keeps_the_frozen_encoder_layers_at_their_weights(tiny_prepared, tmp_path):
    """model.freeze_to_stride=4: stem and layer1 of the crop encoder leave training with the weights file's values
    (their BatchNorm statistics move), layer2 on learns; a random init cannot be frozen."""
    from speedpose.errors import ConfigError
    from torchvision.models import resnet18

    root, prep = tiny_prepared
    torch.manual_seed(1)
    weights = tmp_path / "resnet18.pt"
    torch.save(resnet18(weights=None).state_dict(), weights)
    train_stage.run(root, "smoke", ["data.val_limit=2", "train.batch_size=2", "train.workers=0", "train.device=cpu",
                                    "train.max_steps=2", f"data.prep_dir={prep}", f"model.pretrained={weights}",
                                    "model.freeze_to_stride=4"], out=tmp_path, name="run", progress=False)
    start = torch.load(weights)
    trained = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    frozen = {"stem.0.weight": "conv1.weight", "stem.1.weight": "bn1.weight", "stem.1.bias": "bn1.bias",
              "layer1.0.conv1.weight": "layer1.0.conv1.weight", "layer1.1.bn2.bias": "layer1.1.bn2.bias"}
    for ours, theirs in frozen.items():
        assert torch.equal(trained[f"net.encoder.{ours}"], start[theirs]), ours
    assert not torch.equal(trained["net.encoder.stem.1.running_mean"], start["bn1.running_mean"])
    assert not torch.equal(trained["net.encoder.layer2.0.conv1.weight"], start["layer2.0.conv1.weight"])
    with pytest.raises(ConfigError, match="needs model.pretrained"):
        load_config("configs/smoke.yaml", ["model.freeze_to_stride=4"])
