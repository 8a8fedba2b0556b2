"""DistributedDataParallel on CPU: two gloo processes launched by torchrun train in lock-step.

The global batch is split over the ranks and DDP averages gradients, so two ranks must (a) hold identical
parameters after every step and (b) match a single-process run of the same config up to float summation order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from speedpose.config import load_config
from speedpose.training import fit, load_checkpoint, read_metrics, seed_everything
from speedpose.training.toy import ToyExperimentConfig, ToyTask

REPO = Path(__file__).resolve().parents[1]
OVERRIDES = ["train.epochs=2", "train.batch_size=16", "train.workers=0", "train.device=cpu", "train.amp=off",
             "train.checkpoint_every_steps=3", "train.log_every_steps=1", "optim.lr=0.05", "model.dropout=0.0",
             "data.num_train=64", "data.num_val=32", "train.max_time_min=30"]

SCRIPT = """
import json, sys, torch
from speedpose.config import load_config
from speedpose.training import fit
from speedpose.training.toy import ToyExperimentConfig, ToyTask

class Recording(ToyTask):
    def build_model(self):
        self.model = super().build_model()
        return self.model

out, overrides = sys.argv[1], sys.argv[2:]
torch.set_num_threads(1)
cfg = load_config(None, overrides, schema=ToyExperimentConfig)
task = Recording(cfg)
summary = fit(task, cfg, out + "/run", progress=False)
rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else int(__import__("os").environ["RANK"])
torch.save({k: v.clone() for k, v in task.model.state_dict().items()}, f"{out}/rank{rank}.pt")
# one file per rank: two ranks printing to the shared stdout interleave their lines
with open(f"{out}/rank{rank}.json", "w") as f:
    json.dump([summary.stopped, summary.global_step, summary.world_size], f)
"""


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    script = out / "ddp_toy.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
           str(script), str(out), *OVERRIDES]
    proc = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def test_two_gloo_ranks_keep_identical_parameters(ddp_run):
    out, stdout = ddp_run
    for rank in (0, 1):
        assert json.loads((out / f"rank{rank}.json").read_text()) == ["completed", 8, 2], stdout[-2000:]
    w0, w1 = torch.load(out / "rank0.pt", weights_only=True), torch.load(out / "rank1.pt", weights_only=True)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    ckpt = load_checkpoint(out / "run" / "last.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2 and ckpt["global_step"] == 8
    assert all(torch.equal(w0[k], ckpt["model"][k]) for k in w0)  # rank 0 wrote the checkpoint
    assert not (out / "run" / "rank1").exists()
    steps = [int(r["step"]) for r in read_metrics(out / "run" / "metrics.csv") if r["name"] == "loss"
             and r["split"] == "train"]
    assert steps == list(range(1, 9))  # one writer: each step logged once


def test_ddp_matches_a_single_process_with_the_same_global_batch(ddp_run, tmp_path):
    out, _ = ddp_run
    cfg = load_config(None, OVERRIDES, schema=ToyExperimentConfig)
    fit(ToyTask(cfg), cfg, tmp_path, progress=False)
    single = load_checkpoint(tmp_path / "last.pt")["model"]
    ddp = torch.load(out / "rank0.pt", weights_only=True)
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], rtol=1e-5, atol=1e-6)
    seed_everything(cfg.train.seed)  # the engine's initialisation
    init = ToyTask(cfg).build_model().state_dict()
    moved = max(float((single[k] - init[k]).abs().max()) for k in single)
    assert moved > 1e-3  # training changed the weights, so the comparison means something


@pytest.mark.slow
def test_ddp_stop_and_resume_is_bit_identical(ddp_run, tmp_path):
    """Two ranks with DataLoader workers stop at step 3 and resume: the same weights as the uninterrupted run."""
    out, _ = ddp_run
    script = out / "ddp_toy.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
            str(script), str(tmp_path)]
    first = subprocess.run([*base, *OVERRIDES, "train.max_steps=3", "train.workers=1"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=240)
    assert first.returncode == 0, first.stderr[-3000:]
    for rank in (0, 1):  # both stopped by the budget, so both took part in the stop's validation
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == ["max_steps", 3, 2]
    resume_script = tmp_path / "resume.py"
    resume_script.write_text(textwrap.dedent(SCRIPT).replace('progress=False)', 'resume=True, progress=False)'))
    second = subprocess.run([*base[:-2], str(resume_script), str(tmp_path), *OVERRIDES, "train.workers=1"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert second.returncode == 0, second.stderr[-3000:]
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == ["completed", 8, 2]
    for r in range(2):
        a = torch.load(out / f"rank{r}.pt", weights_only=True)
        b = torch.load(tmp_path / f"rank{r}.pt", weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a)
