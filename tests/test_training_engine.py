"""Training engine on the toy task: learning, checkpoints, exact resume, time/step limits, error paths."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import pytest
import torch

from speedpose.config import load_config
from speedpose.errors import ConfigError, InputError
from speedpose.training import fit, load_checkpoint, read_metrics, select_checkpoint
from speedpose.training.toy import ToyExperimentConfig, ToyTask

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def toy_cfg(*overrides: str) -> ToyExperimentConfig:
    base = ["train.epochs=3", "train.batch_size=16", "train.workers=0", "train.checkpoint_every_steps=3",
            "train.log_every_steps=2", "train.device=cpu", "train.amp=off", "optim.lr=0.05",
            "data.num_train=64", "data.num_val=32"]
    return load_config(None, [*base, *overrides], schema=ToyExperimentConfig)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        elif isinstance(a[k], dict):
            assert_same_state(a[k], b[k])
        else:
            assert a[k] == b[k], k


class FailingTask(ToyTask):
    """Raises inside training_step number ``fail_at`` (1-based), i.e. mid-epoch, as a crash would."""

    def __init__(self, cfg, fail_at: int):
        super().__init__(cfg)
        self.calls, self.fail_at = 0, fail_at

    def training_step(self, model, batch):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("injected crash")
        return super().training_step(model, batch)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted 3-epoch run (4 steps per epoch)."""
    cfg = toy_cfg()
    run = tmp_path_factory.mktemp("ref")
    summary = fit(ToyTask(cfg), cfg, run, progress=False)
    return cfg, run, summary


def test_trains_and_writes_the_run_folder(reference_run):
    cfg, run, summary = reference_run
    assert summary.stopped == "completed" and summary.global_step == 12 and summary.epochs_completed == 3
    assert {"config.yaml", "metrics.csv", "last.pt", "best.pt", "summary.json"} <= {p.name for p in run.iterdir()}
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))
    rows = read_metrics(run / "metrics.csv")
    val = [float(r["value"]) for r in rows if r["split"] == "val" and r["name"] == "loss"]
    train = [float(r["value"]) for r in rows if r["split"] == "train" and r["name"] == "loss"]
    assert len(val) == 3 and val[-1] < 0.5 * val[0]
    assert train[-1] < train[0]
    # an untrained model does much worse than the trained one on the validation set
    task = ToyTask(cfg)
    torch.manual_seed(0)
    fresh = task.build_model().eval()
    loader = torch.utils.data.DataLoader(task.val_dataset(), batch_size=32)
    with torch.no_grad():
        assert task.validate(fresh, loader)["loss"] > 2 * summary.best_value
    assert summary.best_value == min(val)
    assert load_config(run / "config.yaml") == cfg


def test_checkpoints_load_with_weights_only_and_hold_everything(reference_run):
    cfg, run, summary = reference_run
    ckpt = torch.load(run / "last.pt", weights_only=True)
    for key in ("model", "optimizer", "scheduler", "rng", "epoch", "step_in_epoch", "global_step", "best",
                "config", "config_hash"):
        assert key in ckpt
    assert ckpt["global_step"] == 12 and ckpt["epoch"] == 3 and ckpt["step_in_epoch"] == 0
    assert ckpt["config_hash"] == summary.config_hash
    assert set(ckpt["rng"][0]) >= {"python", "numpy", "torch"}
    model = ToyTask(cfg).build_model()
    load_checkpoint(select_checkpoint(run, "best"), model=model)
    best = load_checkpoint(run / "best.pt")
    assert best["best"]["value"] == summary.best_value and best["global_step"] == summary.best_step
    assert all(torch.equal(v, best["model"][k]) for k, v in model.state_dict().items())


def test_same_seed_same_result_other_seed_differs(reference_run, tmp_path):
    cfg, run, _ = reference_run
    fit(ToyTask(cfg), cfg, tmp_path / "again", progress=False)
    assert_same_state(weights(run / "last.pt"), weights(tmp_path / "again" / "last.pt"))
    other = toy_cfg("train.seed=1", "train.epochs=1")
    fit(ToyTask(other), other, tmp_path / "other", progress=False)
    first = toy_cfg("train.epochs=1")
    fit(ToyTask(first), first, tmp_path / "first", progress=False)
    w1, w2 = weights(tmp_path / "first" / "last.pt"), weights(tmp_path / "other" / "last.pt")
    assert any(not torch.equal(w1[k], w2[k]) for k in w1)


def test_crash_mid_epoch_then_resume_is_bit_identical(reference_run, tmp_path):
    cfg, ref, _ = reference_run
    with pytest.raises(RuntimeError, match="injected crash"):
        fit(FailingTask(cfg, fail_at=11), cfg, tmp_path, progress=False)  # step 11 = 3rd of epoch 3
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert (ckpt["global_step"], ckpt["epoch"], ckpt["step_in_epoch"]) == (9, 2, 1)  # mid-epoch checkpoint
    # resume with DataLoader workers: the data pipeline is a function of (seed, epoch, index) only
    resumed = toy_cfg("train.workers=2")
    children = set(multiprocessing.active_children())
    summary = fit(ToyTask(resumed), resumed, tmp_path, resume=True, progress=False)
    assert summary.resumed_from_step == 9 and summary.global_step == 12
    # the persistent workers are stopped when fit returns, not left to a garbage collection that (from inside
    # a collection) waits 5 s per worker: it stalled a later test by 10 s
    assert set(multiprocessing.active_children()) <= children
    a, b = load_checkpoint(ref / "last.pt"), load_checkpoint(tmp_path / "last.pt")
    assert_same_state(a["model"], b["model"])
    assert_same_state(a["optimizer"]["state"], b["optimizer"]["state"])
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    assert a["best"]["value"] == b["best"]["value"]
    steps = [int(r["step"]) for r in read_metrics(tmp_path / "metrics.csv") if r["name"] == "loss"
             and r["split"] == "train"]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # rows after the checkpoint were dropped


def test_max_steps_and_max_time_stop_with_a_checkpoint_and_resume(reference_run, tmp_path):
    cfg, ref, _ = reference_run
    s1 = fit(ToyTask(cfg), toy_cfg("train.max_steps=6"), tmp_path, progress=False)
    assert s1.stopped == "max_steps" and s1.global_step == 6
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert (ckpt["global_step"], ckpt["epoch"], ckpt["step_in_epoch"]) == (6, 1, 2)
    # stopped by its budget mid-epoch: the model it stops with is validated (best.pt may be it); the resume below
    # still ends bit-identical to the uninterrupted run (validation leaves the random streams as they were)
    val_steps = {int(r["step"]) for r in read_metrics(tmp_path / "metrics.csv") if r["split"] == "val"}
    assert val_steps == {4, 6} and s1.last_val is not None  # the end of epoch 1, and the stop
    s2 = fit(ToyTask(cfg), toy_cfg("train.max_time_min=1e-6"), tmp_path, resume=True, progress=False)
    assert s2.stopped == "max_time" and s2.global_step == 7  # stops at the first step boundary
    assert load_checkpoint(tmp_path / "last.pt")["global_step"] == 7
    s3 = fit(ToyTask(cfg), cfg, tmp_path, resume=True, progress=False)
    assert s3.stopped == "completed" and s3.global_step == 12
    assert_same_state(weights(ref / "last.pt"), weights(tmp_path / "last.pt"))
    s4 = fit(ToyTask(cfg), cfg, tmp_path, resume=True, progress=False)  # already done: a no-op
    assert s4.global_step == 12 and s4.stopped == "completed"


def test_existing_run_and_changed_config_are_refused(reference_run, tmp_path):
    cfg, ref, _ = reference_run
    with pytest.raises(InputError, match="already holds a checkpoint"):
        fit(ToyTask(cfg), cfg, ref, progress=False)
    fit(ToyTask(cfg), toy_cfg("train.max_steps=2"), tmp_path, progress=False)
    changed = toy_cfg("optim.lr=0.01")
    with pytest.raises(ConfigError, match=r"different config \(optim.lr\)"):
        fit(ToyTask(changed), changed, tmp_path, resume=True, progress=False)


def test_a_checkpoint_from_before_a_new_config_key_resumes(tmp_path):
    """A key added to the schema since the checkpoint was written takes its default when the configs are compared
    (so the run resumes); a changed value of it is still refused, by name."""
    from speedpose.training.checkpoint import save_checkpoint

    cfg = toy_cfg("train.max_steps=2")
    fit(ToyTask(cfg), cfg, tmp_path, progress=False)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["config"]["train"].pop("grad_clip") is None  # as written by a version without train.grad_clip
    save_checkpoint(tmp_path / "last.pt", ckpt)
    more = toy_cfg("train.max_steps=3")
    assert fit(ToyTask(more), more, tmp_path, resume=True, progress=False).global_step == 3
    ckpt = load_checkpoint(tmp_path / "last.pt")
    ckpt["config"]["train"].pop("grad_clip")
    save_checkpoint(tmp_path / "last.pt", ckpt)
    clipped = toy_cfg("train.max_steps=4", "train.grad_clip=1.0")
    with pytest.raises(ConfigError, match=r"different config \(train.grad_clip\)"):
        fit(ToyTask(clipped), clipped, tmp_path, resume=True, progress=False)


def test_select_checkpoint_errors(tmp_path):
    with pytest.raises(InputError, match="no 'best' checkpoint; the folder holds no .pt file"):
        select_checkpoint(tmp_path, "best")
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="present: last.pt"):
        select_checkpoint(tmp_path, "best")
    assert select_checkpoint(tmp_path, "last") == tmp_path / "last.pt"
    assert select_checkpoint(tmp_path, "last.pt") == tmp_path / "last.pt"
    with pytest.raises(InputError, match="not a loadable checkpoint"):
        load_checkpoint(tmp_path / "last.pt")
    torch.save({"model": {"w": torch.zeros(3)}}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="do not fit the model"):
        load_checkpoint(tmp_path / "other.pt", model=torch.nn.Linear(2, 2))


def test_bf16_autocast_on_cpu_and_fp16_refused(tmp_path):
    cfg = toy_cfg("train.amp=bf16", "train.epochs=1")
    s = fit(ToyTask(cfg), cfg, tmp_path / "bf16", progress=False)
    assert s.precision == "bf16" and s.best_value is not None and s.best_value < 10
    bad = toy_cfg("train.amp=fp16")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        fit(ToyTask(bad), bad, tmp_path / "fp16", progress=False)


def test_batch_larger_than_dataset_is_a_config_error(tmp_path):
    cfg = toy_cfg("train.batch_size=128")
    with pytest.raises(ConfigError, match="fewer than one batch"):
        fit(ToyTask(cfg), cfg, tmp_path, progress=False)


def test_task_protocol_is_checked(tmp_path):
    class NotATask:
        def build_model(self):
            return torch.nn.Linear(1, 1)

    with pytest.raises(TypeError, match="missing train_dataset, val_dataset, training_step, validate"):
        fit(NotATask(), toy_cfg(), tmp_path, progress=False)


class SigtermTask(ToyTask):
    """Sends SIGTERM to its own process during step 3, as a cluster scheduler would."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.calls = 0

    def training_step(self, model, batch):
        self.calls += 1
        if self.calls == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().training_step(model, batch)


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="needs POSIX signals")
def test_sigterm_stops_at_the_step_boundary_with_a_checkpoint(tmp_path):
    cfg = toy_cfg()
    before = signal.getsignal(signal.SIGTERM)
    s = fit(SigtermTask(cfg), cfg, tmp_path, progress=False)
    assert s.stopped == "signal" and s.global_step == 3
    assert load_checkpoint(tmp_path / "last.pt")["global_step"] == 3
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back
    assert fit(ToyTask(cfg), cfg, tmp_path, resume=True, progress=False).global_step == 12


class NoValTask(ToyTask):
    def val_dataset(self):
        return None


def test_without_validation_there_is_no_best(tmp_path):
    cfg = toy_cfg("train.epochs=1")
    s = fit(NoValTask(cfg), cfg, tmp_path, progress=False)
    assert s.best_value is None and (tmp_path / "last.pt").exists() and not (tmp_path / "best.pt").exists()


class GroupedTask(ToyTask):
    def param_groups(self, model):
        return [{"params": model[0].parameters(), "lr_scale": 0.1}, {"params": model[3].parameters()}]


def test_logged_lr_follows_schedule_and_param_groups(tmp_path):
    from speedpose.training import lr_factor

    cfg = toy_cfg("schedule.name=cosine", "schedule.warmup_steps=3", "train.log_every_steps=1")
    fit(GroupedTask(cfg), cfg, tmp_path, progress=False)
    rows = [r for r in read_metrics(tmp_path / "metrics.csv") if r["name"] == "lr"]
    assert [int(r["step"]) for r in rows] == list(range(1, 13))
    for r in rows:  # the lr used by step s (1-based) is base * factor(s - 1); group 0 is the encoder (x0.1)
        expected = 0.1 * 0.05 * lr_factor(int(r["step"]) - 1, cfg.schedule, 4, 12)
        assert float(r["value"]) == pytest.approx(expected, rel=1e-9)
    opt = load_checkpoint(tmp_path / "last.pt")["optimizer"]
    assert opt["param_groups"][0]["initial_lr"] == pytest.approx(0.005)
    assert opt["param_groups"][1]["initial_lr"] == pytest.approx(0.05)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    from speedpose.training import checkpoint as ckpt_mod

    path = tmp_path / "last.pt"
    ckpt_mod.save_checkpoint(path, {"model": {"w": torch.ones(3)}, "global_step": 1})
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt_mod.save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "global_step": 2})
    monkeypatch.setattr(ckpt_mod.torch, "save", real_save)
    assert load_checkpoint(path)["global_step"] == 1  # the previous checkpoint survived intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # and no temporary file is left


def test_best_mode_max_keeps_the_highest_score(tmp_path):
    class FirstIsBest(ToyTask):
        best_metric, best_mode = "score", "max"
        n_val = 0

        def validate(self, model, loader):
            out = super().validate(model, loader)
            FirstIsBest.n_val += 1
            return {**out, "score": 100.0 if FirstIsBest.n_val == 1 else -out["loss"]}

    cfg = toy_cfg()
    s = fit(FirstIsBest(cfg), cfg, tmp_path, progress=False)
    assert s.best_metric == "score" and s.best_value == 100.0 and s.best_step == 4
    assert load_checkpoint(tmp_path / "best.pt")["global_step"] == 4


def test_evaluate_best_checkpoint_reproduces_the_logged_validation(reference_run):
    from speedpose.training import evaluate

    cfg, run, summary = reference_run
    task = ToyTask(cfg)
    model = task.build_model()
    load_checkpoint(select_checkpoint(run, "best"), model=model)
    metrics = evaluate(task, model, task.val_dataset(), cfg.train.batch_size, seed=cfg.train.seed)
    assert metrics["loss"] == summary.best_value  # exactly: same loader, order, seeding and eval mode
    assert model.training is True  # evaluate restores the mode it found


def test_bf16_autocast_really_runs_the_step_in_bf16(tmp_path):
    seen = []

    class Recording(ToyTask):
        def training_step(self, model, batch):
            seen.append(model(batch["x"]).dtype)
            return super().training_step(model, batch)

    cfg = toy_cfg("train.amp=bf16", "train.max_steps=1")
    fit(Recording(cfg), cfg, tmp_path / "bf16", progress=False)
    cfg = toy_cfg("train.amp=off", "train.max_steps=1")
    fit(Recording(cfg), cfg, tmp_path / "off", progress=False)
    assert seen[0] == torch.bfloat16 and seen[-1] == torch.float32


def test_mid_epoch_validation_by_steps_and_training_minutes(reference_run, tmp_path):
    """train.val_every_steps validates inside epochs (logged with the training time and samples seen); validation
    does not change the trajectory; train.val_every_min validates each time that much training time has passed;
    train.max_train_time_min stops on training time, which a resume continues counting."""
    cfg, ref, _ = reference_run
    s = fit(ToyTask(cfg), toy_cfg("train.val_every_steps=3"), tmp_path / "steps", progress=False)
    rows = read_metrics(tmp_path / "steps" / "metrics.csv")
    val_steps = sorted({int(r["step"]) for r in rows if r["split"] == "val"})
    assert val_steps == [3, 4, 6, 8, 9, 12]  # every 3 steps within epochs, and each epoch end (4 steps)
    seen = {int(r["step"]): float(r["value"]) for r in rows if r["split"] == "val" and r["name"] == "samples_seen"}
    assert seen[6] == 6 * 16
    times = [float(r["value"]) for r in rows if r["split"] == "val" and r["name"] == "train_time_s"]
    assert all(b >= a > 0 for a, b in zip(times, times[1:]))
    assert s.global_step == 12
    assert_same_state(weights(ref / "last.pt"), weights(tmp_path / "steps" / "last.pt"))

    every_step = fit(ToyTask(cfg), toy_cfg("train.val_every_min=1e-9"), tmp_path / "minutes", progress=False)
    rows = read_metrics(tmp_path / "minutes" / "metrics.csv")
    assert sorted({int(r["step"]) for r in rows if r["split"] == "val"}) == list(range(1, 13))
    assert every_step.global_step == 12

    s1 = fit(ToyTask(cfg), toy_cfg("train.max_train_time_min=1e-9"), tmp_path / "budget", progress=False)
    assert s1.stopped == "max_time" and s1.global_step == 1
    spent = load_checkpoint(tmp_path / "budget" / "last.pt")["train_time_s"]
    assert spent > 0
    s2 = fit(ToyTask(cfg), toy_cfg("train.max_train_time_min=1e-9"), tmp_path / "budget", resume=True,
             progress=False)
    assert s2.global_step == 2 and load_checkpoint(tmp_path / "budget" / "last.pt")["train_time_s"] > spent


def test_cosine_fitted_to_the_training_time_budget(tmp_path, monkeypatch):
    """With schedule.fit_time_budget the learning rate follows the training time spent: a budget of 12 fake
    seconds with each step taking 1 s (a patched clock) anneals the cosine by time, far ahead of its 120 steps,
    and the run stops at the budget with the rate at 0."""
    from speedpose.training import loop as loop_mod

    clock = {"t": 0.0}

    def fake_perf_counter():
        clock["t"] += 0.5  # two readings per step: 1 s per step
        return clock["t"]

    monkeypatch.setattr(loop_mod.time, "perf_counter", fake_perf_counter)
    cfg = toy_cfg("schedule.name=cosine", "schedule.fit_time_budget=true", "train.epochs=30",
                  "train.max_train_time_min=0.2", "train.log_every_steps=1")
    s = fit(ToyTask(cfg), cfg, tmp_path, progress=False)
    rows = [r for r in read_metrics(tmp_path / "metrics.csv") if r["name"] == "lr"]
    lrs = [float(r["value"]) for r in rows]
    assert s.stopped == "max_time" and 8 <= s.global_step <= 16  # 12 s at ~1 s per step, not 120 steps
    assert lrs[0] == pytest.approx(0.05) and all(b <= a for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] < 0.05 * 0.1  # annealed by time: the step fraction alone would leave it near 0.05
