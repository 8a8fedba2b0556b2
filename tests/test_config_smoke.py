"""Every shipped SPEED+ config is instantiated and trained two steps on tiny generated data (nerfstudio-style): one
smoke test keeps every recipe alive, the demo's standin_cpu (its crop set and ImageNet Lite0 included) and the
real-data speedplus among them.  Only sizes are shrunk; what each config chooses (encoder, stride, data source,
losses, curriculum) runs as shipped, except ImageNet ResNet files, which a test machine does not have."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from pipelines import synth_crops
from pipelines import train as train_stage

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
SPEEDPLUS_CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")
                           if yaml.safe_load(p.read_text(encoding="utf-8")).get("task") == "speedplus")


def test_the_recipes_are_found():
    assert {"smoke", "standin_cpu", "speedplus", "speedplus_fullimage"} <= set(SPEEDPLUS_CONFIGS)


@pytest.mark.parametrize("config", SPEEDPLUS_CONFIGS)
def test_config_trains_two_steps(config, tiny_prepared, tmp_path):
    from speedpose.config import load_config

    root, prep = tiny_prepared
    cfg = load_config(CONFIG_DIR / f"{config}.yaml")
    # one epoch of two steps (4 of the 8 frames, or 4 crops, batch 2), then the validation through the chain
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
    s = train_stage.run(root, config, tiny, out=tmp_path, name="run", progress=False)
    assert s.global_step == 2 and s.stopped in ("completed", "max_steps")  # smoke.yaml sets max_steps: 2
    assert s.last_val is not None and np.isfinite(s.last_val["score"])
