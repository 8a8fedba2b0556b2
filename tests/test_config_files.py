"""Every YAML under configs/ loads with the schema its ``task:`` key registers (lightning-hydra-template style).

A new config needs no change here: it is found by its ``task:`` key through speedpose.config's registry.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from speedpose.config import config_hash, get_experiment, load_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIG_FILES = sorted(CONFIG_DIR.rglob("*.yaml")) + sorted(CONFIG_DIR.rglob("*.yml"))


def test_the_engine_toy_config_is_shipped():
    assert CONFIG_DIR / "engine_toy.yaml" in CONFIG_FILES


@pytest.mark.parametrize("path", CONFIG_FILES, ids=[str(p.relative_to(CONFIG_DIR)) for p in CONFIG_FILES])
def test_config_loads_with_its_schema(path):
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(raw, dict) and "task" in raw, f"{path}: every config names its schema with a task: key"
    entry = get_experiment(raw["task"])
    cfg = load_config(path)
    assert isinstance(cfg, entry.schema)
    # the resolved config is complete: re-validating its dump gives the same config and hash
    again = entry.schema.model_validate(cfg.model_dump(mode="json"))
    assert again == cfg and config_hash(again) == config_hash(cfg)
