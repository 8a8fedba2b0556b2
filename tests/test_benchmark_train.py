"""Every benchmark config trains for two steps on generated data through `speedpose train --dataset`, validates,
and `speedpose evaluate --dataset` scores the run (resumable); the full-size architectures under -m slow."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from speedpose.benchmarks import build_model
from speedpose.cli import main
from speedpose.config import load_config, resolve_config

# the shipped recipe with a small network: resnet18, lmax 3, 64 px (the architecture of the recipe is kept by the
# slow test below); the two-step budget is one epoch of the fixture, so validation runs too
SMALL = ["model.pretrained=false", "model.encoder=resnet18", "data.image_size=64", "model.i2s.lmax=3",
         "model.i2s.sphere_channels=16", "model.i2s.hidden_channels=4", "model.i2s.proj_level=1",
         "model.i2s.train_grid_level=2", "model.i2s.infer_level=3", "train.workers=0", "train.device=cpu",
         "train.epochs=1", "train.max_steps=2", "train.log_every_steps=1", "data.val_limit=6",
         "eval.log_likelihood=true"]
BATCH = {"modelnet10": 2, "pascal3d": 4}  # 4 ModelNet / 9 PASCAL3D+ training records -> 2 steps per epoch


@pytest.mark.parametrize("dataset", ["modelnet10", "pascal3d"])
def test_two_steps_then_evaluate(dataset, benchmark_roots, tmp_path, capsys):
    root = benchmark_roots[dataset]
    rc = main(["train", "--dataset", dataset, "--root", str(root), "--out", str(tmp_path), "--name", "run",
               *SMALL, f"train.batch_size={BATCH[dataset]}"])
    assert rc == 0, capsys.readouterr().err
    run = tmp_path / "run"
    assert (run / "last.pt").is_file() and (run / "best.pt").is_file()
    log = pd.read_csv(run / "metrics.csv")
    val = log[log["split"] == "val"].set_index("name")["value"]
    assert 0 <= val["median_deg"] <= 180 and 0 <= val["acc15"] <= val["acc30"] <= 1
    assert "pooled_median_deg" in val and "log_likelihood" in val

    rc = main(["evaluate", "--dataset", dataset, "--run", str(run), "--root", str(root), "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    out = run / "eval" / f"{dataset}-test-last"
    report = json.loads((out / "metrics.json").read_text())
    n_test = 6
    assert report["images"] == n_test and report["step"] == 2
    m = report["metrics"]
    assert sum(r["count"] for r in m["per_class"].values()) == n_test
    assert 0 <= m["class_mean"]["acc30"] <= 1 and 0 <= m["class_mean"]["median_deg"] <= 180
    assert "log_likelihood" in m["pooled"]
    table = pd.read_csv(out / "per_image.csv")
    assert len(table) == n_test and table["err_deg"].between(0, 180).all()
    assert "class mean" in capsys.readouterr().out

    # a second evaluation reuses the cached chunk (resumable) and gives the same numbers
    part = next((out / ".cache").glob("part_*.npz"))
    mtime = part.stat().st_mtime_ns
    assert main(["evaluate", "--dataset", dataset, "--run", str(run), "--root", str(root), "--device", "cpu"]) == 0
    assert part.stat().st_mtime_ns == mtime
    assert json.loads((out / "metrics.json").read_text())["metrics"] == m


def test_evaluate_refuses_a_run_of_another_dataset(benchmark_roots, tmp_path, capsys):
    run = tmp_path / "fake"
    run.mkdir()
    (run / "config.yaml").write_text("task: modelnet10\n")
    rc = main(["evaluate", "--dataset", "pascal3d", "--run", str(run), "--root", str(benchmark_roots["pascal3d"])])
    assert rc == 2 and "not --dataset pascal3d" in capsys.readouterr().err
    rc = main(["evaluate", "--dataset", "symsol", "--run", str(run), "--root", str(benchmark_roots["pascal3d"])])
    assert rc == 2 and "modelnet10, pascal3d" in capsys.readouterr().err
    # SPEED+ (the default dataset) still needs --domain
    rc = main(["evaluate", "--run", str(run), "--root", str(benchmark_roots["pascal3d"])])
    assert rc == 2 and "--domain" in capsys.readouterr().err


def test_train_without_root_is_a_clean_error(capsys):
    rc = main(["train", "--dataset", "modelnet10", *SMALL])
    assert rc == 2 and "--root" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["modelnet10", "pascal3d"])
def test_full_size_recipe_two_steps(dataset, benchmark_roots, tmp_path):
    """The shipped recipe's architecture (ResNet-50 / ResNet-101, lmax 6, 224 px, level-3 loss grid), untouched
    except for random init, CPU and a two-step budget."""
    rc = main(["train", "--dataset", dataset, "--root", str(benchmark_roots[dataset]), "--out", str(tmp_path), "--name",
               "run", "model.pretrained=false", "train.workers=0", "train.device=cpu", "train.max_steps=2",
               "train.epochs=1", f"train.batch_size={BATCH[dataset]}", "data.val_limit=2"])
    assert rc == 0 and (tmp_path / "run" / "last.pt").is_file()


@pytest.mark.parametrize("conditioned", [True, False])
def test_class_conditioning_changes_the_prediction_only_when_on(conditioned):
    """The one-hot class reaches the head (cond_dim 10) when class_conditioned, and is ignored otherwise."""
    overrides = [o for o in SMALL if o.startswith(("model.", "data.image_size"))]
    cfg = load_config(resolve_config(None, "modelnet10"), [*overrides,
                                                            f"model.class_conditioned={str(conditioned).lower()}"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert model.head.config.cond_dim == (10 if conditioned else 0)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        a = model(images, torch.tensor([0, 0]))
        b = model(images, torch.tensor([3, 9]))
    assert torch.allclose(a, b) != conditioned
