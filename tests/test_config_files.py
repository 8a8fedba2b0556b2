"""Every YAML under configs/ loads with the schema its ``task:`` key registers (lightning-hydra-template style).

A new config needs no change here: it is found by its ``task:`` key through speedpose.config's registry.  Shipped
configs are also found by name, from the checkout or from the copy a wheel installs (speedpose.config.shipped).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from speedpose.config import (config_hash, find_config, get_experiment, load_config, shipped_config_dir,
                              shipped_configs)
from speedpose.errors import ConfigError, InputError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIG_FILES = sorted(CONFIG_DIR.rglob("*.yaml")) + sorted(CONFIG_DIR.rglob("*.yml"))


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


def test_a_shipped_config_is_found_by_name_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # names do not depend on the working directory
    assert find_config("smoke") == find_config("smoke.yaml") == CONFIG_DIR / "smoke.yaml"
    own = tmp_path / "smoke.yaml"
    own.write_text("task: speedplus\n")
    assert find_config("smoke.yaml") == Path("smoke.yaml")  # an existing file wins over the shipped name
    with pytest.raises(InputError, match=r"not a shipped name \(shipped configs: adapt, engine_toy"):
        find_config("smok")
    with pytest.raises(InputError, match="not a file and not a shipped name"):
        find_config("elsewhere/standin_cpu")  # a path is never read as a name


def test_an_installed_copy_of_the_configs_is_preferred(tmp_path, monkeypatch):
    """A wheel carries the configs as speedpose/_configs (setup.py); the checkout's configs/ is the fallback."""
    from speedpose.config import shipped

    packaged = tmp_path / "_configs"
    packaged.mkdir()
    (packaged / "only_here.yaml").write_text("task: engine_toy\n")
    monkeypatch.setattr(shipped, "PACKAGED_DIR", packaged)
    assert shipped_configs() == {"only_here": packaged / "only_here.yaml"}
    assert load_config(find_config("only_here")).task == "engine_toy"
    monkeypatch.setattr(shipped, "PACKAGED_DIR", tmp_path / "absent")
    assert shipped_config_dir() == CONFIG_DIR
    monkeypatch.setattr(shipped, "SOURCE_DIR", tmp_path / "absent_too")
    with pytest.raises(ConfigError, match="the shipped configs are missing"):
        shipped_configs()
