"""`speedpose demo`: the whole chain end to end (a smoke variant by default; `demo --minutes 1` is slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines import demo as demo_stage
from pipelines import score as score_stage
from speedpose.errors import InputError
from speedpose.submission import read_submission_csv

SMOKE = ["data.val_limit=2", "train.batch_size=2", "train.workers=0", "train.device=cpu", "train.max_steps=2"]


def test_a_short_demo_starts_its_augmentation_earlier():
    from speedpose.config import load_config
    from speedpose.config.shipped import resolve_config

    aug = load_config(resolve_config("standin_cpu", "speedplus"), []).augment
    assert (aug.start_step, aug.ramp_steps) == (1000, 1000)
    assert demo_stage.augment_schedule(aug, demo_stage.plan(15)) == [("augment.start_step", 400),
                                                                     ("augment.ramp_steps", 400)]
    assert demo_stage.augment_schedule(aug, demo_stage.plan(60)) == [("augment.start_step", 1000),
                                                                     ("augment.ramp_steps", 1000)]
    sizes = demo_stage.DemoPlan(minutes=1.0, train=4, val=2, lightbox=2, sunlamp=2, config="smoke")
    assert demo_stage.augment_schedule(aug, sizes) == []


def test_plan_scales_with_the_budget():
    small, default = demo_stage.plan(1), demo_stage.plan(15)
    assert (small.train, small.val, small.lightbox, small.crops) == (30, 7, 7, 1000)
    # the 15-minute demo validates on 100 images per domain
    assert (default.train, default.val, default.lightbox, default.sunlamp, default.crops) == (450, 100, 100, 100,
                                                                                              15000)
    assert (demo_stage.plan(1000).train, demo_stage.plan(1000).val, demo_stage.plan(1000).crops) == (1000, 200, 40000)
    with pytest.raises(InputError, match="--minutes: expected a positive number, got 0"):
        demo_stage.plan(0)


@pytest.fixture(scope="module")
def smoke_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    sizes = demo_stage.DemoPlan(minutes=1.0, train=4, val=2, lightbox=2, sunlamp=2, config="smoke")
    s = demo_stage.run(out, 1.0, config="smoke", overrides=SMOKE, sizes=sizes, n_examples=1, n_distributions=1,
                       progress=False)
    return s, out, sizes


def test_demo_runs_end_to_end(smoke_demo):
    s, out, _ = smoke_demo
    assert json.loads((out / "demo_summary.json").read_text())["submission"] == s["submission"]
    assert s["training"]["action"] == "trained" and s["training"]["global_step"] >= 1
    assert s["training"]["stopped"] in ("max_steps", "max_time")
    for domain in ("synthetic", "lightbox", "sunlamp"):
        m = s["evaluation"][domain]["metrics"]
        assert m["count"] == 2 and np.isfinite(m["score"])
        assert Path(s["evaluation"][domain]["report"]).is_file()
    sub = read_submission_csv(s["submission"])
    assert {d: len(v) for d, v in sub.items()} == {"lightbox": 2, "sunlamp": 2}
    # the submission's scores are the evaluation's
    for d in ("lightbox", "sunlamp"):
        assert s["submission_scores"][d]["score"] == pytest.approx(s["evaluation"][d]["metrics"]["score"], abs=1e-9)
    text = demo_stage.format_summary(s)
    assert "mean(lightbox, sunlamp)" in text and "report" in text and "adapted to" not in text


@pytest.mark.parametrize("method, overrides", [
    (None, ["refine.steps=2", "refine.batch_size=2", "check.images=1"]),
    ("self-train", ["self_train.rounds=1", "train.max_steps=1", "check.images=1"])])
def test_demo_with_adaptation(smoke_demo, method, overrides):
    """--adapt: the trained run (reused) adapted to each target domain (refine unless told), evaluated before and
    after."""
    _, out, sizes = smoke_demo
    s = demo_stage.run(out, 1.0, config="smoke", overrides=SMOKE, sizes=sizes, n_examples=0, n_distributions=0,
                       adapt=True, adapt_overrides=overrides, progress=False,
                       **({"adapt_method": method} if method else {}))
    method = method or "refine"
    assert s["training"]["action"].startswith("reused")
    assert set(s["adaptation"]) == {"lightbox", "sunlamp"}
    for domain, a in s["adaptation"].items():
        record = json.loads((Path(a["run_dir"]) / "adapt.json").read_text())
        assert record["method"] == a["method"] == method and Path(a["report"]).is_file()
        assert a["before"] == s["evaluation"][domain]["metrics"] and a["after"]["count"] == 2
        assert a["synthetic_after"]["count"] == 2 and len(a["rounds"]) <= 1
    text = demo_stage.format_summary(s)
    assert f"adapted to lightbox ({method}" in text and f"adapted to sunlamp ({method}" in text


@pytest.mark.parametrize("adapt", [True, False])
def test_demo_refuses_an_unknown_adaptation_method(tmp_path, adapt):
    with pytest.raises(InputError, match="--adapt-method: expected one of refine, self-train, got 'tent'"):
        demo_stage.run(tmp_path / "demo", 1.0, adapt=adapt, adapt_method="tent", progress=False)
    assert not (tmp_path / "demo").exists()


def test_demo_rerun_reuses_the_cache(smoke_demo):
    from pipelines import synth

    s, out, p = smoke_demo
    again = synth.run(Path(s["dataset"]), p.train, p.val, p.lightbox, p.sunlamp, seed=p.seed, progress=False)
    assert again["rendered"] == 0
    from speedpose.config import load_config, resolve_config

    cfg = load_config(resolve_config(p.config, "speedplus"), list(SMOKE))
    t = demo_stage._train(Path(s["dataset"]), out / "preprocessed", out / "runs", p, cfg, 1.0, SMOKE, False)
    assert t["action"] == "reused (finished earlier)" and t["run_dir"] == s["training"]["run_dir"]


@pytest.mark.slow
def test_demo_command_one_minute(tmp_path, capsys):
    """The real thing with a one-minute budget (standin_cpu; several minutes on 2 busy cores)."""
    from speedpose.cli import main

    assert main(["demo", "--out", str(tmp_path), "--minutes", "1"]) == 0
    out = capsys.readouterr().out
    assert "speedpose demo finished" in out and "mean(lightbox, sunlamp)" in out
    s = json.loads((tmp_path / "demo_summary.json").read_text())
    scores = score_stage.run(Path(s["submission"]), Path(s["dataset"]))
    assert scores["lightbox"].score == pytest.approx(s["evaluation"]["lightbox"]["metrics"]["score"], abs=1e-9)
    assert main(["demo", "--out", str(tmp_path), "--minutes", "1"]) == 0  # re-run: cached, training skipped
    assert "training: reused" in capsys.readouterr().out
