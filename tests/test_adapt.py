"""`speedpose adapt` on the tiny stand-in with the smoke-trained run: refinement touches only the BatchNorm layers,
self-training never reads target labels, both methods run through the CLI into runs that evaluate, determinism,
resumption (in the library and through the CLI after a kill, for both methods), the synthetic check's veto, and the
input errors."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pipelines import adapt as adapt_stage
from pipelines import evaluate as evaluate_stage
from pipelines import preprocess as preprocess_stage
from speedpose.adapt import norm_refine, self_training
from speedpose.adapt.check import SyntheticCheck
from speedpose.adapt.config import AdaptExperiment, RefineConfig, SelfTrainConfig
from speedpose.adapt.norm_refine import (confident, entropy_thresholds, forward_target, keypoint_entropy, norm_state,
                                         refinable_keys, refine)
from speedpose.adapt.pseudo_labels import make_pseudo_labels, reprojection_iou, select
from speedpose.adapt.targets import pseudo_labelled_view, unlabelled_view
from speedpose.cli import main
from speedpose.config import RESOLVED_NAME
from speedpose.data.loader import open_split
from speedpose.data.subsets import evenly_spaced
from speedpose.labels import label_file, read_labels
from speedpose.pose.inference import predict_split
from speedpose.runs import load_run
from speedpose.training import load_checkpoint

#: a few steps of everything, on CPU
FAST = ["refine.steps=3", "refine.batch_size=2", "refine.calibration_images=3", "check.images=2",
        "check.every_steps=2", "check.tolerance=1000", "train.batch_size=2", "train.max_steps=2", "train.device=cpu",
        "self_train.rounds=1", "self_train.min_confidence=0", "self_train.min_box_iou=0",
        "self_train.max_aug_deg=180", "self_train.max_fraction=1", "self_train.augmentations=1"]


def _adapt(run, root, prep, out, method, *extra) -> int:
    return main(["adapt", "--run", str(run), "--root", str(root), "--prep", str(prep), "--domain", "lightbox",
                 "--method", method, "--out", str(out), *FAST, *extra])


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert set(wa) == set(wb)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs"


class _Killed(Exception):
    """Stands for a kill (power cut, OOM killer) at the patched point."""


def _kill_at_call(monkeypatch, module, name: str, n: int, after: bool) -> None:
    """Make the ``n``-th call (1-based) of ``module.name`` raise :class:`_Killed`, after the real call when
    ``after``."""
    real, calls = getattr(module, name), [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            if after:
                real(*args, **kwargs)
            raise _Killed(f"{name}, call {n}")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


@pytest.fixture(scope="module")
def refined(smoke_run, tiny_prepared, tmp_path_factory) -> Path:
    root, prep = tiny_prepared
    out = tmp_path_factory.mktemp("adapt") / "refined"
    assert _adapt(smoke_run, root, prep, out, "refine") == 0
    return out


@pytest.fixture(scope="module")
def unlabelled_copy(tiny_standin, tmp_path_factory) -> tuple[Path, Path]:
    """(root, preprocessed folder) of a copy of the stand-in whose lightbox test file carries no poses."""
    base = tmp_path_factory.mktemp("nolabels")
    root = base / "speedplus"
    shutil.copytree(tiny_standin, root)
    f = label_file(root, "lightbox")
    f.write_text(json.dumps([{"filename": lab.filename} for lab in read_labels(f)]))
    preprocess_stage.run(root, out=base / "prep", domains=("synthetic", "lightbox"), size=(384, 256), workers=1,
                         progress=False)
    return root, base / "prep"


# ------------------------------------------------------------------------------------------------ refine
def test_refine_changes_only_normalisation_layers(refined, smoke_run):
    before, after = _weights(smoke_run / "best.pt" if (smoke_run / "best.pt").is_file() else
                             smoke_run / "last.pt"), _weights(refined / "best.pt")
    allowed = set(json.loads((refined / "adapt.json").read_text())["refinable_keys"])
    model = load_run(smoke_run).model
    assert allowed and all(isinstance(model.get_submodule(k.rsplit(".", 1)[0]), torch.nn.BatchNorm2d)
                           for k in allowed)
    assert set(before) == set(after)
    for k in before:
        if k not in allowed:
            assert torch.equal(before[k], after[k]), f"{k} changed"
    changed = [k for k in allowed if not torch.equal(before[k], after[k])]
    assert any(k.endswith(".weight") for k in changed) and any(k.endswith(".running_mean") for k in changed)
    assert any(k.startswith("localiser.") for k in changed) and any(k.startswith("net.encoder.") for k in changed)


def test_refined_run_is_a_run_that_evaluates(refined, tiny_prepared, tmp_path):
    root, prep = tiny_prepared
    rec = json.loads((refined / "adapt.json").read_text())
    assert rec["method"] == "refine" and rec["domain"] == "lightbox" and rec["target"]["images"] == 3
    assert rec["refine"]["steps_done"] == 3 and [c["step"] for c in rec["refine"]["checks"]] == [0, 2, 3]
    assert rec["check"]["score_before"] == rec["refine"]["checks"][0]["score"]
    assert rec["cost"]["seconds_per_1000_target_images"] > 0 and rec["cost"]["peak_rss_mib"] > 0
    assert not (refined / ".adapt").exists() and (refined / "metrics.csv").is_file()
    assert load_run(refined).step is not None
    rep = evaluate_stage.run(refined, root, "lightbox", prep_dir=prep, out=tmp_path / "ev", device="cpu",
                             n_examples=0, n_distributions=0, progress=False)
    assert rep["metrics"]["count"] == 3 and np.isfinite(rep["metrics"]["score"])


def test_a_root_of_target_images_alone_takes_the_synthetic_check_from_the_source_run(smoke_run, tiny_standin,
                                                                                      tmp_path):
    """A root with only lightbox/ (as the real sample): the synthetic check reads the source run's data.root."""
    target_only = tmp_path / "target_only"
    target_only.mkdir()
    shutil.copy(tiny_standin / "camera.json", target_only / "camera.json")
    shutil.copytree(tiny_standin / "lightbox", target_only / "lightbox")
    assert _adapt(smoke_run, target_only, tmp_path / "prep", tmp_path / "out", "refine") == 0
    rec = json.loads((tmp_path / "out" / "adapt.json").read_text())
    source_root = Path(load_run(smoke_run).cfg.data.root).resolve()
    assert rec["synthetic_root"] == str(source_root) and rec["key"]["synthetic_root"] == str(source_root)
    assert rec["check"]["images"] == 2 and np.isfinite(rec["check"]["score_before"])


def test_synthetic_source_without_synthetic_images_is_an_input_error(tmp_path):
    from types import SimpleNamespace

    from pipelines.adapt import synthetic_source
    from speedpose.errors import InputError

    (tmp_path / "has" / "synthetic").mkdir(parents=True)
    cfg = SimpleNamespace(data=SimpleNamespace(root=str(tmp_path / "has"), prep_dir=None))
    assert synthetic_source(tmp_path / "has", None, cfg) == (tmp_path / "has", None)
    assert synthetic_source(tmp_path, tmp_path / "p", cfg) == (tmp_path / "has", None)
    with pytest.raises(InputError, match="has no synthetic/ folder"):
        synthetic_source(tmp_path, None, SimpleNamespace(data=SimpleNamespace(root=str(tmp_path), prep_dir=None)))


def test_a_finished_adaptation_is_a_no_op(refined, smoke_run, tiny_prepared, capsys):
    root, prep = tiny_prepared
    stamp = (refined / "best.pt").stat().st_mtime_ns
    assert _adapt(smoke_run, root, prep, refined, "refine") == 0
    assert "already adapted" in capsys.readouterr().out
    assert (refined / "best.pt").stat().st_mtime_ns == stamp
    # other settings into the same folder: refused
    assert _adapt(smoke_run, root, prep, refined, "refine", "refine.lr=1e-3") == 2
    assert "other inputs or settings" in capsys.readouterr().err


def test_a_killed_refinement_resumes_to_the_same_weights(refined, smoke_run, tiny_prepared, tmp_path, monkeypatch):
    root, prep = tiny_prepared
    out = tmp_path / "refined"
    with monkeypatch.context() as m:  # killed just after the resumable state of step 2 (of 3) is saved
        _kill_at_call(m, adapt_stage, "save_checkpoint", 1, after=True)
        with pytest.raises(_Killed):
            _adapt(smoke_run, root, prep, out, "refine")
    assert (out / ".adapt" / "refine_state.pt").is_file() and not (out / "adapt.json").exists()
    assert _adapt(smoke_run, root, prep, out, "refine") == 0
    _assert_same_weights(refined / "best.pt", out / "best.pt")
    ref, got = (json.loads((d / "adapt.json").read_text()) for d in (refined, out))
    assert got["cost"]["resumed"] and not ref["cost"]["resumed"]
    for k in ("steps_done", "kept_step", "stopped", "thresholds", "checks", "used", "images_seen"):
        assert got["refine"][k] == ref["refine"][k], k
    assert not (out / ".adapt").exists()


def _refine_setup(smoke_run, tiny_prepared, check_images=0):
    root, prep = tiny_prepared
    loaded = load_run(smoke_run)
    target = unlabelled_view(open_split(prep, "lightbox", "test", root=root))
    val = open_split(prep, "synthetic", "validation", root=root)
    check = SyntheticCheck(val, evenly_spaced(len(val), check_images), loaded.kind, 0.05, torch.device("cpu"), 2)
    rcfg = RefineConfig(steps=2, batch_size=2, calibration_images=3, lr=1e-2)
    return loaded, target, check, rcfg


@pytest.mark.parametrize("stats_mix", [1.0, 0.5, [1.0, 0.5]])
def test_refine_is_deterministic_and_resumes_exactly(smoke_run, tiny_prepared, stats_mix):
    loaded, target, check, rcfg = _refine_setup(smoke_run, tiny_prepared)
    rcfg = rcfg.model_copy(update={"stats_mix": stats_mix})
    cpu = torch.device("cpu")
    runs, saved = [], []
    for _ in range(2):
        model = copy.deepcopy(loaded.model)
        refine(model, target, loaded.kind, rcfg, check, 1, cpu, seed=3, on_checkpoint=lambda s: saved.append(
            copy.deepcopy(s)), progress=False)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], loaded.model.state_dict()[k]) for k in runs[0])
    # resume from the state saved at step 1 of the first run: the same weights as the uninterrupted run
    model = copy.deepcopy(loaded.model)
    out = refine(model, target, loaded.kind, rcfg, check, 1, cpu, seed=3, state=saved[0], progress=False)
    assert saved[0]["step"] == 1 and out.steps_done == 2
    assert all(torch.equal(runs[0][k], model.state_dict()[k]) for k in runs[0])


def test_a_failed_synthetic_check_keeps_the_previous_state(smoke_run, tiny_prepared):
    loaded, target, check, rcfg = _refine_setup(smoke_run, tiny_prepared, check_images=2)
    scores = iter([1.0, 2.0])  # the source, then a much worse state at the first check
    check.metrics = lambda model: {"score": next(scores)}
    model = copy.deepcopy(loaded.model)
    start = norm_state(model)
    out = refine(model, target, loaded.kind, rcfg, check, 1, torch.device("cpu"), seed=0, progress=False)
    assert out.stopped == "check_failed" and out.kept_step == 0 and out.steps_done == 1
    assert all(torch.equal(start[k], v) for k, v in norm_state(model).items())
    assert refinable_keys(model) == list(start)


def test_refine_of_the_localiser_only_leaves_the_crop_network_untouched(smoke_run, tiny_prepared):
    loaded, target, check, rcfg = _refine_setup(smoke_run, tiny_prepared)
    model = copy.deepcopy(loaded.model)
    out = refine(model, target, loaded.kind, rcfg.model_copy(update={"encoder": False}), check, 1,
                 torch.device("cpu"), seed=0, progress=False)
    assert set(out.thresholds) == {"localisation"}
    src, got = loaded.model.state_dict(), model.state_dict()
    changed = [k for k in src if not torch.equal(src[k], got[k])]
    assert changed and all(k.startswith("localiser.") for k in changed)
    assert set(changed) <= set(refinable_keys(model, encoder=False))
    with pytest.raises(ValueError, match="nothing to refine"):
        AdaptExperiment(refine=RefineConfig(encoder=False, localiser=False))


def test_calibration_batches_no_threshold_and_restored_momentum(smoke_run, tiny_prepared, monkeypatch):
    loaded, target, check, rcfg = _refine_setup(smoke_run, tiny_prepared)
    cpu = torch.device("cpu")
    sizes: list[int] = []
    real = norm_refine.forward_target

    def spy(model, split, indices, *rest):
        sizes.append(len(indices))
        return real(model, split, indices, *rest)

    monkeypatch.setattr(norm_refine, "forward_target", spy)
    model = copy.deepcopy(loaded.model)
    # 3 calibration images in batches of 2: two full batches (never a batch of one image)
    thr = entropy_thresholds(model, target, np.arange(3), loaded.kind, rcfg, cpu, 2)
    assert sizes == [2, 2] and set(thr) == {"rotation", "localisation"}
    assert all(0 < v <= 1 + 1e-6 for v in thr.values())
    # confident_quantile = 1 (and max_entropy = 1): no threshold, no calibration pass, every image contributes
    sizes.clear()
    momenta = [m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    rcfg1 = rcfg.model_copy(update={"steps": 1, "confident_quantile": 1.0, "stats_momentum": 0.5})
    out = refine(model, target, loaded.kind, rcfg1, check, 1, cpu, seed=0, progress=False)
    assert out.thresholds == {"rotation": None, "localisation": None} and sizes == [2]
    assert out.used == {"rotation": 2, "localisation": 2}
    # stats_momentum holds during refinement only
    assert [m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)] == momenta
    h = torch.tensor([0.2, 0.5, 0.7])
    assert confident(h, 0.5).tolist() == [1.0, 1.0, 0.0] and confident(h, None).tolist() == [1.0, 1.0, 1.0]


def test_mixed_statistics_are_those_of_the_pooled_samples():
    # two domains' activations of one layer: the alpha-mixture's statistics are those of the pooled samples
    g = torch.Generator().manual_seed(0)
    xs, xt = torch.randn(300, 4, generator=g) * 2 + 1, torch.randn(100, 4, generator=g) * 0.5 - 3
    source, target = [{"bn.running_mean": x.mean(0), "bn.running_var": x.var(0, unbiased=False), "bn.weight": w,
                       "bn.num_batches_tracked": torch.tensor(n)}
                      for x, w, n in ((xs, torch.ones(4), 7), (xt, torch.zeros(4), 9))]
    pooled = torch.cat([xs, xt])
    mixed = norm_refine.mixed_statistics(target, source, alpha=0.25)  # the target is a quarter of the pool
    assert torch.allclose(mixed["bn.running_mean"], pooled.mean(0), atol=1e-5)
    assert torch.allclose(mixed["bn.running_var"], pooled.var(0, unbiased=False), atol=1e-4)
    assert torch.equal(mixed["bn.weight"], target["bn.weight"]) and int(mixed["bn.num_batches_tracked"]) == 9
    assert norm_refine.mixed_statistics(target, source, 1.0) is target
    only_source = norm_refine.mixed_statistics(target, source, 0.0)
    assert torch.equal(only_source["bn.running_mean"], source["bn.running_mean"])
    assert torch.equal(only_source["bn.running_var"], source["bn.running_var"])


def test_refine_deploys_the_mixed_statistics(smoke_run, tiny_prepared):
    # stats_mix = 0: the refined weights and biases with the SOURCE's running statistics (the check sees them too);
    # 0.5: the mixture of the source's and those that stats_mix = 1 deploys
    loaded, target, check, rcfg = _refine_setup(smoke_run, tiny_prepared, check_images=2)
    check.tolerance = 1e6  # every state passes: the refinements take the same steps
    cpu = torch.device("cpu")
    runs = {}
    for alpha in (1.0, 0.5, 0.0):
        model = copy.deepcopy(loaded.model)
        out = refine(model, target, loaded.kind, rcfg.model_copy(update={"stats_mix": alpha}), check, 1, cpu,
                     seed=0, progress=False)
        runs[alpha] = (model.state_dict(), out)
    src = loaded.model.state_dict()
    stats = [k for k in refinable_keys(loaded.model) if k.endswith(("running_mean", "running_var"))]
    affine = [k for k in refinable_keys(loaded.model) if k.endswith((".weight", ".bias"))]
    target_only, source_stats = runs[1.0][0], runs[0.0][0]
    assert all(torch.equal(source_stats[k], src[k]) for k in stats)
    assert any(not torch.equal(target_only[k], src[k]) for k in stats)
    half = norm_refine.mixed_statistics({k: target_only[k] for k in stats}, {k: src[k] for k in stats}, 0.5)
    assert all(torch.allclose(runs[0.5][0][k], half[k]) for k in stats)
    # the same refinement (same batches, same gradients) either way: only the deployed statistics differ
    assert all(torch.equal(source_stats[k], target_only[k]) and torch.equal(runs[0.5][0][k], target_only[k])
               for k in affine)
    assert any(not torch.equal(source_stats[k], src[k]) for k in affine)
    # the check scored the deployed model: the source's statistics, the refined weights
    check.tolerance = 0.05
    model = copy.deepcopy(loaded.model)
    model.load_state_dict(source_stats)
    assert runs[0.0][1].checks[-1]["score"] == pytest.approx(check.metrics(model)["score"], abs=1e-9)
    assert runs[0.0][1].checks[-1]["score"] != runs[1.0][1].checks[-1]["score"]


def test_a_list_of_shares_deploys_the_largest_that_passes_the_check(smoke_run, tiny_prepared, monkeypatch):
    """stats_mix = [1, 0.7, 0.5, 0.2]: each check tries the shares from the largest down and keeps the first that
    passes; the kept state deploys it; when none passes, the previous state (here the source) is kept."""
    loaded, target, check, rcfg = _refine_setup(smoke_run, tiny_prepared, check_images=2)
    cpu = torch.device("cpu")
    check.tolerance = 1e6
    model = copy.deepcopy(loaded.model)
    refine(model, target, loaded.kind, rcfg.model_copy(update={"stats_mix": 1.0}), check, 1, cpu, seed=0,
           progress=False)
    target_only = model.state_dict()  # every check passed: the same steps as below
    tried: list[float] = []
    real_mix = norm_refine.mixed_statistics

    def spy(target_stats, source_stats, alpha):
        tried.append(alpha)
        return real_mix(target_stats, source_stats, alpha)

    monkeypatch.setattr(norm_refine, "mixed_statistics", spy)
    check.tolerance = 0.05
    check.metrics = lambda m: {"score": 1.0 + 0.1 * tried[-1] if tried else 1.0}  # passes for shares <= 0.5
    ladder = rcfg.model_copy(update={"stats_mix": [0.2, 1.0, 0.5, 0.7]})
    assert ladder.stats_mixes() == (1.0, 0.7, 0.5, 0.2)
    model = copy.deepcopy(loaded.model)
    out = refine(model, target, loaded.kind, ladder, check, 1, cpu, seed=0, progress=False)
    assert out.stopped == "completed" and out.stats_mix == 0.5
    assert [c["stats_mix"] for c in out.checks] == [None, 0.5, 0.5] and tried[:3] == [1.0, 0.7, 0.5]
    src = loaded.model.state_dict()
    stats = [k for k in refinable_keys(loaded.model) if k.endswith(("running_mean", "running_var"))]
    half = real_mix({k: target_only[k] for k in stats}, {k: src[k] for k in stats}, 0.5)
    assert all(torch.allclose(model.state_dict()[k], half[k]) for k in stats)
    # no share passes at the first check: the source is kept, with its own statistics
    tried.clear()
    model = copy.deepcopy(loaded.model)
    out = refine(model, target, loaded.kind, ladder.model_copy(update={"stats_mix": [0.85, 0.7]}), check, 1, cpu,
                 seed=0, progress=False)
    assert out.stopped == "check_failed" and out.kept_step == 0 and out.checks[-1]["stats_mix"] == 0.7
    assert out.stats_mix == 0.0  # what is deployed: the source's own statistics, bit for bit
    assert all(torch.equal(model.state_dict()[k], src[k]) for k in refinable_keys(loaded.model))
    # without a check nothing says the synthetic domain tolerates more than the smallest share
    tried.clear()
    no_check = dataclasses.replace(check, indices=np.empty(0, dtype=np.int64))
    out = refine(copy.deepcopy(loaded.model), target, loaded.kind, ladder, no_check, 1, cpu, seed=0, progress=False)
    assert out.stats_mix == 0.2 and out.checks == [] and tried == [0.2]
    # one spelling per setting: order and repeats do not change the config (nor the adapt key that hashes it)
    assert RefineConfig(stats_mix=[0.5, 1, 0.5]).stats_mix == [1.0, 0.5]
    assert RefineConfig(stats_mix=[0.5]).stats_mix == 0.5
    with pytest.raises(ValueError, match="a share in"):
        RefineConfig(stats_mix=[0.5, 1.5])
    with pytest.raises(ValueError, match="a share in"):
        RefineConfig(stats_mix=[])


def test_refined_labeller_is_a_refined_copy(smoke_run, tiny_prepared):
    loaded, target, _, _ = _refine_setup(smoke_run, tiny_prepared)
    cpu = torch.device("cpu")
    acfg = AdaptExperiment(refine=RefineConfig(steps=2, batch_size=2, calibration_images=3, lr=1e-2))
    model = copy.deepcopy(loaded.model)
    before = copy.deepcopy(model.state_dict())
    assert self_training._labeller(model, target, loaded.kind, acfg, cpu, 0, False) is model
    acfg.self_train.labeller = "refined"
    labeller = self_training._labeller(model, target, loaded.kind, acfg, cpu, 0, False)
    assert labeller is not model and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    got, keys = labeller.state_dict(), set(refinable_keys(model))
    assert all(torch.equal(before[k], got[k]) for k in before if k not in keys)
    assert any(not torch.equal(before[k], got[k]) for k in keys)
    a = make_pseudo_labels(model, target, loaded.kind, acfg.self_train, cpu, 0, 2)
    b = make_pseudo_labels(labeller, target, loaded.kind, acfg.self_train, cpu, 0, 2)
    assert not np.array_equal(a.q_wxyz, b.q_wxyz)


def test_self_training_of_the_localiser_only_keeps_the_crop_network(smoke_run, tiny_prepared, tmp_path,
                                                                     monkeypatch):
    root, prep = tiny_prepared
    out = tmp_path / "loc-only"
    assert _adapt(smoke_run, root, prep, out, "self-train", "self_train.networks=localiser", "check.images=1") == 0
    src, got = _weights(smoke_run / "best.pt"), _weights(out / "best.pt")
    changed = {k for k in src if not torch.equal(src[k], got[k])}
    assert changed and all(k.startswith("localiser.") for k in changed)
    cfg = yaml.safe_load((out / "self_train" / "rounds" / "round_0" / RESOLVED_NAME).read_text())
    assert cfg["data"]["loc_fraction"] == 1.0
    # killed after the last round, before the adapted weights, then resumed: the round's checkpoint holds the crop
    # network as training left it (its statistics moved); the adapted run must still hold the source's
    resumed = tmp_path / "loc-only-resumed"
    with monkeypatch.context() as m:
        _kill_at_call(m, adapt_stage, "save_checkpoint", 1, after=False)
        with pytest.raises(_Killed):
            _adapt(smoke_run, root, prep, resumed, "self-train", "self_train.networks=localiser", "check.images=1")
    assert _adapt(smoke_run, root, prep, resumed, "self-train", "self_train.networks=localiser",
                  "check.images=1") == 0
    _assert_same_weights(out / "best.pt", resumed / "best.pt")


def test_a_fallback_to_an_earlier_round_keeps_the_source_crop_network(smoke_run, tiny_prepared, tmp_path,
                                                                      monkeypatch):
    root, prep = tiny_prepared
    scores = iter([1.0, 1.0, 5.0])  # the source, round 0 passes, round 1 fails: round 0's model is kept
    monkeypatch.setattr(SyntheticCheck, "metrics", lambda self, model: {"score": next(scores)})
    out = tmp_path / "fallback"
    assert _adapt(smoke_run, root, prep, out, "self-train", "self_train.networks=localiser", "self_train.rounds=2",
                  "check.images=1", "check.tolerance=0.05") == 0
    assert json.loads((out / "adapt.json").read_text())["self_train"]["kept_round"] == 0
    src, got = _weights(smoke_run / "best.pt"), _weights(out / "best.pt")
    assert all(torch.equal(src[k], v) for k, v in got.items() if not k.startswith("localiser."))
    assert any(not torch.equal(src[k], v) for k, v in got.items() if k.startswith("localiser."))


def test_evenly_spaced():
    assert evenly_spaced(5, None).tolist() == [0, 1, 2, 3, 4] and evenly_spaced(5, 9).tolist() == [0, 1, 2, 3, 4]
    assert evenly_spaced(10, 3).tolist() == [0, 4, 9] and evenly_spaced(10, 0).tolist() == []
    assert evenly_spaced(10, 3).dtype == np.int64


# ------------------------------------------------------------------------------------------- self-train
@pytest.fixture(scope="module")
def self_trained(smoke_run, tiny_prepared, unlabelled_copy, tmp_path_factory) -> tuple[Path, Path]:
    """The same self-training (2 rounds) from the labelled stand-in and from the copy without target labels."""
    outs = []
    for (root, prep), name in ((tiny_prepared, "labelled"), (unlabelled_copy, "unlabelled")):
        out = tmp_path_factory.mktemp("selftrain") / name
        assert _adapt(smoke_run, root, prep, out, "self-train", "self_train.rounds=2", "train.max_steps=1",
                      "check.images=1") == 0
        outs.append(out)
    return outs[0], outs[1]


def test_self_training_ignores_target_labels(self_trained):
    with_labels, without = self_trained
    for r in (0, 1):
        a = pd.read_csv(with_labels / "self_train" / "pseudo_labels" / f"round_{r}.csv")
        b = pd.read_csv(without / "self_train" / "pseudo_labels" / f"round_{r}.csv")
        pd.testing.assert_frame_equal(a, b)
        assert a["selected"].all()
    wa, wb = _weights(with_labels / "best.pt"), _weights(without / "best.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_self_trained_run_loads_and_predicts(self_trained, smoke_run, tiny_prepared):
    out, _ = self_trained
    rec = json.loads((out / "adapt.json").read_text())
    st = rec["self_train"]
    assert [r["selected"] for r in st["rounds"]] == [3, 3] and [r["steps"] for r in st["rounds"]] == [1, 1]
    assert st["kept_round"] == 1 and st["stopped"] == "completed"
    assert not list((out / "self_train" / "rounds").rglob("*.pt"))
    seeds = [yaml.safe_load((out / "self_train" / "rounds" / f"round_{r}" / RESOLVED_NAME).read_text())["train"]
             ["seed"] for r in (0, 1)]
    assert seeds[0] != seeds[1]  # another sample order and augmentation each round
    src = _weights(smoke_run / "last.pt")
    assert not all(torch.equal(src[k], v) for k, v in _weights(out / "best.pt").items())
    root, prep = tiny_prepared
    loaded = load_run(out)  # the same loader as evaluate/submit/predict (evaluate itself: the refine test)
    pred = predict_split(loaded.model, open_split(prep, "lightbox", "test", root=root), [0, 1], loaded.kind)
    assert np.isfinite(pred.q_wxyz).all() and np.isfinite(pred.r_cam_m).all()


def test_a_killed_self_training_resumes_to_the_same_weights(self_trained, smoke_run, tiny_prepared, tmp_path,
                                                             monkeypatch):
    reference, _ = self_trained
    root, prep = tiny_prepared
    out = tmp_path / "selftrained"
    args = ("self_train.rounds=2", "train.max_steps=1", "check.images=1")  # as the reference
    with monkeypatch.context() as m:  # killed as round 1 starts (round 0 fine-tuned, checked and recorded)
        _kill_at_call(m, self_training, "make_pseudo_labels", 2, after=False)
        with pytest.raises(_Killed):
            _adapt(smoke_run, root, prep, out, "self-train", *args)
    with monkeypatch.context() as m:  # killed after the last round, before the adapted weights and adapt.json
        _kill_at_call(m, adapt_stage, "save_checkpoint", 1, after=False)
        with pytest.raises(_Killed):
            _adapt(smoke_run, root, prep, out, "self-train", *args)
    assert list((out / "self_train" / "rounds").rglob("*.pt")) and not (out / "adapt.json").exists()
    assert _adapt(smoke_run, root, prep, out, "self-train", *args) == 0
    _assert_same_weights(reference / "best.pt", out / "best.pt")
    for r in (0, 1):
        pd.testing.assert_frame_equal(pd.read_csv(reference / "self_train" / "pseudo_labels" / f"round_{r}.csv"),
                                      pd.read_csv(out / "self_train" / "pseudo_labels" / f"round_{r}.csv"))
    ref, got = (json.loads((d / "adapt.json").read_text())["self_train"] for d in (reference, out))
    assert got["rounds"] == ref["rounds"] and got["kept_round"] == ref["kept_round"] == 1
    assert not list((out / "self_train" / "rounds").rglob("*.pt")) and not (out / ".adapt").exists()


def test_target_views_hold_no_labels(tiny_prepared, unlabelled_copy):
    root, prep = tiny_prepared
    labelled = open_split(prep, "lightbox", "test", root=root)
    view = unlabelled_view(labelled)
    assert not view.labelled.any() and np.isnan(view.q_wxyz).all() and np.isnan(view.kp_box()).all()
    root2, prep2 = unlabelled_copy
    other = unlabelled_view(open_split(prep2, "lightbox", "test", root=root2))
    pd.testing.assert_frame_equal(view.records, other.records)
    # pseudo poses give keypoint boxes exactly as preprocessing gives them for true poses
    pseudo = pseudo_labelled_view(view, labelled.q_wxyz, labelled.r_cam_m)
    np.testing.assert_allclose(pseudo.kp_box(clipped=False), labelled.kp_box(clipped=False), atol=1e-9)
    iou = reprojection_iou(labelled.camera, labelled.q_wxyz, labelled.r_cam_m, labelled.kp_box(clipped=False))
    np.testing.assert_allclose(iou, 1.0, atol=1e-9)


def test_pseudo_label_selection():
    st = SelfTrainConfig(min_confidence=0.5, min_box_iou=0.5, max_aug_deg=10, max_fraction=0.5)
    conf = np.array([0.9, 0.8, 0.95, 0.7, 0.2, 0.99])
    iou = np.array([0.9, 0.9, 0.1, 0.9, 0.9, np.nan])
    aug = np.array([1.0, 2.0, 1.0, 50.0, 1.0, 3.0])
    # passing: 0, 1, 5 (NaN IoU: no box, not filtered); at most 3 of 6 kept, most confident first
    assert select(conf, iou, aug, st).tolist() == [True, True, False, False, False, True]
    st2 = st.model_copy(update={"max_fraction": 0.34})
    assert select(conf, iou, aug, st2).tolist() == [True, False, False, False, False, True]
    # the keypoint gate removes the images whose keypoints disagreed with the I2S rotation
    agree = np.array([True, False, True, True, True, True])
    assert select(conf, iou, aug, st, agree).tolist() == [True, False, False, False, False, True]


# ------------------------------------------------------------------------------- with the keypoint head
@pytest.fixture(scope="module")
def kp_run(tiny_prepared, tmp_path_factory) -> Path:
    """A run with the keypoint head and the fused solver, trained 2 steps on the tiny stand-in."""
    from pipelines import train as train_stage

    root, prep = tiny_prepared
    out = tmp_path_factory.mktemp("kp-runs")
    train_stage.run(root, "smoke", ["data.val_limit=2", "train.batch_size=2", "train.workers=0", "train.device=cpu",
                                    "train.max_steps=2", f"data.prep_dir={prep}", "model.keypoints.enabled=true",
                                    "model.pose_solver=fused"], out=out, name="kp", progress=False)
    return out / "kp"


def test_keypoint_entropy_is_normalised_and_weighted_by_visibility():
    flat = torch.zeros(1, 2, 4, 4)  # uniform heatmaps: entropy 1
    peaked = torch.full((1, 2, 4, 4), -50.0)
    peaked[:, :, 1, 2] = 50.0  # one cell: entropy 0
    mixed = torch.cat([peaked[:, :1], flat[:, 1:]], dim=1)  # keypoint 0 peaked, keypoint 1 uniform
    vis = torch.tensor([[20.0, 20.0]])
    assert keypoint_entropy(flat, vis).item() == pytest.approx(1.0, abs=1e-6)
    assert keypoint_entropy(peaked, vis).item() == pytest.approx(0.0, abs=1e-6)
    assert keypoint_entropy(mixed, vis).item() == pytest.approx(0.5, abs=1e-6)
    # an invisible keypoint does not count: only the peaked one is left
    assert keypoint_entropy(mixed, torch.tensor([[20.0, -20.0]])).item() == pytest.approx(0.0, abs=1e-6)


def test_refine_with_the_keypoint_head_lowers_its_objective_and_changes_only_normalisation(kp_run, tiny_prepared):
    root, prep = tiny_prepared
    loaded = load_run(kp_run)
    target = unlabelled_view(open_split(prep, "lightbox", "test", root=root))
    val = open_split(prep, "synthetic", "validation", root=root)
    check = SyntheticCheck(val, evenly_spaced(len(val), 0), loaded.kind, 0.05, torch.device("cpu"), 3)
    rcfg = RefineConfig(steps=6, batch_size=3, calibration_images=3, lr=3e-2, confident_quantile=1.0)
    idx = np.arange(len(target))

    def objective(model) -> dict[str, float]:
        model = copy.deepcopy(model)  # batch statistics, as refinement sees them, without touching the model
        norm_refine._enter_refine_mode(model, norm_refine.norm_layers(model), None)
        with torch.no_grad():
            return {t: float(h.mean()) for t, h in forward_target(model, target, idx, loaded.kind,
                                                                  torch.device("cpu")).items()}

    model = copy.deepcopy(loaded.model)
    before = objective(model)
    out = refine(model, target, loaded.kind, rcfg, check, 6, torch.device("cpu"), seed=0, progress=False)
    after = objective(model)
    assert set(out.thresholds) == {"rotation", "localisation", "keypoints"} and out.used["keypoints"] == 18
    assert sum(after.values()) < sum(before.values())
    # the keypoint term alone lowers the keypoint entropy
    kp_only = rcfg.model_copy(update={"rotation_weight": 0.0, "localisation_weight": 0.0})
    model2 = copy.deepcopy(loaded.model)
    out2 = refine(model2, target, loaded.kind, kp_only, check, 6, torch.device("cpu"), seed=0, progress=False)
    assert set(out2.thresholds) == {"keypoints"} and objective(model2)["keypoints"] < before["keypoints"]
    allowed = set(refinable_keys(model))
    src, got = loaded.model.state_dict(), model.state_dict()
    assert all(torch.equal(src[k], got[k]) for k in src if k not in allowed)
    assert any(not torch.equal(src[k], got[k]) for k in allowed)


def test_keypoint_gate_of_the_pseudo_labels(kp_run, tiny_prepared):
    root, prep = tiny_prepared
    loaded = load_run(kp_run)
    target = unlabelled_view(open_split(prep, "lightbox", "test", root=root))
    loose = SelfTrainConfig(min_confidence=0.0, min_box_iou=0.0, max_aug_deg=180, augmentations=0, max_fraction=1.0)
    labels = {gate: make_pseudo_labels(loaded.model, target, loaded.kind, loose.model_copy(
        update={"keypoint_gate": gate}), torch.device("cpu"), seed=0) for gate in (False, True)}
    assert labels[False].selected.all()  # without the gate every image passes these thresholds
    np.testing.assert_array_equal(labels[True].selected, labels[True].branch != "i2s")
    frame = labels[True].to_frame(target.filenames)
    assert "branch" in frame.columns
    back = type(labels[True]).from_frame(frame)
    np.testing.assert_array_equal(back.branch, labels[True].branch)


# -------------------------------------------------------------------------------------------------- errors
def test_bad_inputs_exit_2_with_a_message(smoke_run, tiny_prepared, tmp_path, capsys):
    root, prep = tiny_prepared
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    cases = [
        (["--run", str(tmp_path), "--root", str(root), "--domain", "lightbox", "--method", "refine"],
         "not a run folder"),
        (["--run", str(smoke_run), "--root", str(root), "--domain", "synthetic", "--method", "refine"],
         "--domain: expected one of lightbox, sunlamp"),
        (["--run", str(smoke_run), "--root", str(root), "--domain", "lightbox", "--method", "tent"],
         "--method: expected one of refine, self-train"),
        (["--run", str(smoke_run), "--root", str(tmp_path), "--domain", "sunlamp", "--method", "refine"],
         "sunlamp/test is not in this SPEED+ root"),
        (["--run", str(smoke_run), "--root", str(root), "--domain", "lightbox", "--method", "refine",
          "--out", str(smoke_run)], "--out: the adapted run must go to a new folder"),
        (["--run", str(smoke_run), "--root", str(root), "--domain", "lightbox", "--method", "refine",
          "--out", str(a_file)], "--out: exists and is not a folder"),
        (["--run", str(smoke_run), "--root", str(root), "--domain", "lightbox", "--method", "refine",
          "refine.step=3"], "did you mean refine.steps"),
    ]
    for args, message in cases:
        assert main(["adapt", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (args, err)
