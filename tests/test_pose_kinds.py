"""The model kinds: the registry, what each kind reads from the experiment, the state-dict keys of their networks
(the checkpoints' keys: saved runs must keep loading), and the fullimage translation's encode/decode pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from speedpose.config import load_config
from speedpose.errors import ConfigError, InputError
from speedpose.pose.crops import CropSpec
from speedpose.pose.kinds import get_kind, list_kinds, model_kind
from speedpose.pose.kinds.crop import CropKind
from speedpose.pose.kinds.fullimage import FullImageKind, denormalise_translation, normalise_translation

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def _cfg(*overrides: str):
    return load_config(SMOKE, list(overrides))


def test_registry():
    assert list_kinds() == ["crop", "fullimage"]
    assert get_kind("crop") is CropKind and get_kind("fullimage") is FullImageKind
    assert all(get_kind(name).name == name for name in list_kinds())
    with pytest.raises(ConfigError, match="expected one of crop, fullimage, got 'keypoints'"):
        get_kind("keypoints")
    assert isinstance(model_kind(_cfg()), CropKind)
    assert isinstance(model_kind(_cfg("model.kind=fullimage")), FullImageKind)
    with pytest.raises(InputError, match="needs a crop model"):
        model_kind(_cfg("model.kind=fullimage"), CropKind, "this needs a crop model")


def test_kinds_take_their_settings_from_the_experiment():
    crop = model_kind(_cfg("data.crop_set=some/set", "model.refine_passes=2", "model.pose_solver=fused",
                           "model.keypoints.min_confidence=0.5"))
    assert crop.inference.spec == crop.sampling.spec == CropSpec(64, 1.3)
    assert crop.inference.loc_size == crop.sampling.loc_size == (128, 96)
    assert (crop.infer_level, crop.inference.refine_passes, crop.inference.pose_solver) == (4, 2, "fused")
    assert crop.inference.kp_min_confidence == 0.5 and crop.crop_set == "some/set"
    assert model_kind(_cfg()).crop_set is None
    full = model_kind(_cfg("model.kind=fullimage", "data.fullimage_size=80", "data.crop_set=some/set"))
    assert full.size == 80 and full.infer_level == 4
    assert full.crop_set is None  # a whole-image model trains on the frames whatever data.crop_set says


@pytest.mark.parametrize("kind, keypoints", [("crop", False), ("crop", True), ("fullimage", False)])
def test_state_dict_keys_are_the_checkpoint_keys(kind, keypoints):
    """The module nesting saved runs were written with: a change here breaks loading every checkpoint."""
    cfg = _cfg(f"model.kind={kind}", "data.fullimage_size=64", f"model.keypoints.enabled={str(keypoints).lower()}")
    torch.manual_seed(0)
    keys = list(model_kind(cfg).build_model().state_dict())
    groups = {".".join(k.split(".")[:2]) for k in keys}
    expected = {"net.encoder", "net.head", "net.reduce", "net.trans"}
    if kind == "crop":
        expected |= {"localiser.body", "localiser.context", "localiser.heat", "localiser.reg"}
    if keypoints:
        expected |= {"net.kp_head"}
    assert groups == expected
    assert [k for k in keys if k.startswith("net.trans.")] == ["net.trans.1.weight", "net.trans.1.bias",
                                                                "net.trans.3.weight", "net.trans.3.bias"]
    assert [k for k in keys if k.startswith("net.reduce.")] == ["net.reduce.0.weight", "net.reduce.0.bias"]
    assert keys[0].startswith("localiser." if kind == "crop" else "net.encoder.")  # the parameter order


def test_fullimage_translation_round_trip():
    r = np.array([[0.0, 0.0, 6.0], [0.3, -0.2, 9.0]])
    np.testing.assert_allclose(normalise_translation(r), [[0.0, 0.0, 0.0], [0.3, -0.2, 1.0]])
    np.testing.assert_allclose(denormalise_translation(normalise_translation(r)), r, atol=1e-12)


def test_model_kind_is_validated_against_the_registry(monkeypatch):
    """model.kind accepts exactly the registry's names: a kind added to KINDS needs no other list."""
    from speedpose.errors import ConfigError
    from speedpose.pose import kinds

    with pytest.raises(ConfigError, match="expected one of crop, fullimage, got 'cropp'"):
        _cfg("model.kind=cropp")
    monkeypatch.setitem(kinds.KINDS, "crop2", "speedpose.pose.kinds.crop:CropKind")
    assert _cfg("model.kind=crop2").model.kind == "crop2"
