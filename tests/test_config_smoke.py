"""Every shipped config is instantiated and trained two steps on tiny generated data through the `train` stage
(nerfstudio-style): one smoke test keeps every recipe alive, the SPEED+ ones (the demo's standin_cpu with its crop set
and ImageNet Lite0, the real-data speedplus), the ModelNet10-SO(3) and PASCAL3D+ recipes and the engine's toy.  Only
sizes are shrunk; what each config chooses (encoder, stride, data source, losses, curriculum) runs as shipped, except
ImageNet ResNet files, which a test machine does not have.  The one config that trains no model of its own,
adapt.yaml (the settings of `speedpose adapt`), runs in tests/test_adapt.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines import synth_crops
from pipelines import train as train_stage
from speedpose.config import get_experiment, load_config, shipped_configs
from speedpose.config._yaml import safe_load
from test_benchmark_train import BATCH, SMALL  # tests/ is on sys.path (rootdir conftest)

SHIPPED = shipped_configs()
NOT_TRAINED = {"adapt"}
TRAINED = sorted(set(SHIPPED) - NOT_TRAINED)


def _task(name: str) -> str:
    return str(safe_load(SHIPPED[name].read_text(encoding="utf-8"))["task"])


def test_every_config_of_the_checkout_is_covered():
    """The parametrisation below sees the checkout's configs/ (never an empty or stale list), and a config left out
    of it is one that cannot be trained."""
    assert set(SHIPPED) == {p.stem for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")}
    for name in NOT_TRAINED:
        assert get_experiment(_task(name)).task_factory is None, f"{name} can be trained: smoke-test it"


def _speedplus_overrides(cfg, prep: Path, tmp_path: Path) -> list[str]:
    """One epoch of two steps (4 of the 8 frames, or 4 crops, batch 2), then the validation through the chain."""
    tiny = ["data.val_limit=2", "train.batch_size=2", "train.workers=0", "train.device=cpu", "train.epochs=1",
            "data.split=0.5", f"data.prep_dir={prep}", "data.loc_size=[128,96]", "model.i2s.sphere_channels=8",
            "model.i2s.train_grid_level=2", "model.i2s.infer_level=4", "model.localiser.width=8",
            "model.translation_hidden=16"]
    if cfg.model.encoder.startswith("resnet") and cfg.model.pretrained:
        tiny.append("model.pretrained=false")  # no torchvision files offline; Lite0's wheel is a dependency
    if cfg.model.kind == "fullimage":
        tiny.append("data.fullimage_size=64")
    if cfg.model.kind == "crop" and cfg.data.crop_set:
        crops = tmp_path / "crops"
        synth_crops.run(crops, synth_crops.CropSetParams(8, cfg.data.crop_size, cfg.data.crop_margin), workers=1,
                        progress=False)
        tiny.append(f"data.crop_set={crops}")
    elif cfg.model.kind == "crop":
        tiny.append("data.crop_size=64")
    return tiny


# engine_toy: 16 samples, batch 8 -> one epoch of two steps
TOY = ["data.num_train=16", "data.num_val=8", "train.batch_size=8", "train.epochs=1", "train.device=cpu",
       "train.workers=0"]


@pytest.mark.parametrize("config", TRAINED)
def test_config_trains_two_steps(config, tiny_prepared, benchmark_roots, tmp_path):
    cfg = load_config(SHIPPED[config])
    if cfg.task == "speedplus":
        root, prep = tiny_prepared
        tiny = _speedplus_overrides(cfg, prep, tmp_path)
    elif cfg.task in benchmark_roots:
        root, tiny = benchmark_roots[cfg.task], [*SMALL, f"train.batch_size={BATCH[cfg.task]}"]
    else:
        assert cfg.task == "engine_toy", f"{config}: task {cfg.task!r} has no tiny data here yet"
        root, tiny = None, TOY
    s = train_stage.run(root, config, tiny, out=tmp_path, name="run", progress=False)
    assert s.global_step == 2 and s.stopped in ("completed", "max_steps")  # smoke.yaml sets max_steps: 2
    assert s.last_val is not None and np.isfinite(s.last_val[s.best_metric]), s.last_val
