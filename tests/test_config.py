"""Config system: unknown keys, safe overrides, located type errors, stable hashes, registry, round trips."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
import yaml
from pydantic import Field

from speedpose.config import (
    BUILTIN_EXPERIMENTS,
    ConfigModel,
    ExperimentConfig,
    config_hash,
    describe_config,
    get_experiment,
    list_experiments,
    load_config,
    parse_overrides,
    register_experiment,
    save_resolved,
    with_options,
)
from speedpose.errors import ConfigError


class _ModelSection(ConfigModel):
    encoder: str = Field("resnet50", description="backbone")
    lmax: int = Field(6, ge=1, description="max degree")


class _Exp(ExperimentConfig):
    task: Literal["test_config_schema"] = "test_config_schema"
    model: _ModelSection = Field(default_factory=_ModelSection)
    weights: dict[str, float] = Field(default_factory=dict, description="free-form loss weights")


@pytest.fixture(autouse=True)
def _registered():
    """This module's schema, registered through the public API (registering it again is a no-op)."""
    return register_experiment("test_config_schema", _Exp)


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_unknown_key_names_closest_and_dotted_path_and_line(tmp_path):
    p = _write(tmp_path, "task: test_config_schema\noptim:\n  lr: 0.1\n  nestrov: true\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    msg = str(exc.value)
    assert "optim.nestrov" in msg and "did you mean optim.nesterov" in msg
    assert str(p) in msg and "line 4" in msg


def test_unknown_section_names_closest(tmp_path):
    p = _write(tmp_path, "task: test_config_schema\nmodle:\n  lmax: 4\n")
    with pytest.raises(ConfigError, match=r"unknown key 'modle'; did you mean model\?"):
        load_config(p)


def test_unknown_override_key_names_closest():
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["train.epoch=3"], schema=_Exp)
    msg = str(exc.value)
    assert "override 'train.epoch=3'" in msg and "train.epochs" in msg


def test_overrides_are_parsed_as_yaml_never_evaluated():
    cfg = load_config(None, ["description=__import__('os').getcwd()", "train.epochs=3", "optim.lr=1e-3",
                             "model.encoder=resnet34", "train.grad_clip=null", "weights.kl=0.5",
                             "optim.betas=[0.8, 0.9]"], schema=_Exp)
    assert cfg.description == "__import__('os').getcwd()"
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.optim.lr == pytest.approx(1e-3) and isinstance(cfg.optim.lr, float)
    assert cfg.model.encoder == "resnet34" and cfg.train.grad_clip is None
    assert cfg.weights == {"kl": 0.5} and cfg.optim.betas == (0.8, 0.9)


def test_option_pairs_keep_their_python_value():
    # the same value typed by a user is read as YAML: "#" starts a comment there
    assert parse_overrides(["description=/data/speed plus #2"])[0][1] == "/data/speed plus"
    assert parse_overrides([("description", Path("/data/speed plus #2"))]) == [
        (("description",), "/data/speed plus #2", "description=/data/speed plus #2")]
    extra = with_options(["train.epochs=3", "train.seed=4"], {"description": Path("/data/speed plus #2"),
                                                               "train.epochs": 5, "train.grad_clip": None})
    assert extra == ["train.epochs=3", "train.seed=4", ("description", Path("/data/speed plus #2")),
                     ("train.epochs", 5)]
    cfg = load_config(None, extra, schema=_Exp)
    assert cfg.description == "/data/speed plus #2"
    assert cfg.train.epochs == 5 and cfg.train.seed == 4  # an option wins over the dotted override of its key
    assert load_config(None, [("description", "null")], schema=_Exp).description == "null"  # never re-read
    assert load_config(None, [("optim.betas", (0.5, 0.6))], schema=_Exp).optim.betas == (0.5, 0.6)


def test_option_pair_errors_name_the_option():
    with pytest.raises(ConfigError, match=r"override 'train.batch_size=0': train.batch_size: .*greater than"):
        load_config(None, [("train.batch_size", 0)], schema=_Exp)
    with pytest.raises(ConfigError, match=r"override 'train.epoch=3'.*did you mean train.epochs"):
        load_config(None, [("train.epoch", 3)], schema=_Exp)
    with pytest.raises(ConfigError, match=r"\(dotted key, value\) pair"):
        parse_overrides([("train..epochs", 3)])


def test_python_tags_are_rejected():
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_overrides(["description=!!python/object/apply:os.getcwd []"])


@pytest.mark.parametrize("bad", ["train.epochs", "=3", "train..epochs=3", "1x=2"])
def test_malformed_override(bad):
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides([bad])


def test_yaml12_scalars(tmp_path):
    p = _write(tmp_path, "task: test_config_schema\ntrain:\n  amp: off\noptim:\n  lr: 1e-2\n  nesterov: false\n")
    cfg = load_config(p)
    assert cfg.train.amp == "off" and cfg.optim.lr == pytest.approx(0.01) and cfg.optim.nesterov is False


def test_type_error_names_key_file_and_value(tmp_path):
    p = _write(tmp_path, "task: test_config_schema\ntrain:\n  epochs: ten\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    msg = str(exc.value)
    assert "train.epochs" in msg and str(p) in msg and "line 3" in msg and "'ten'" in msg


def test_range_error_from_override_names_the_override():
    with pytest.raises(ConfigError, match=r"override 'train.batch_size=0': train.batch_size: .*greater than"):
        load_config(None, ["train.batch_size=0"], schema=_Exp)


def test_cross_field_check():
    with pytest.raises(ConfigError, match="nesterov"):
        load_config(None, ["optim.momentum=0"], schema=_Exp)
    cfg = load_config(None, ["optim.momentum=0", "optim.nesterov=false"], schema=_Exp)
    assert cfg.optim.momentum == 0


def test_value_is_not_a_section():
    with pytest.raises(ConfigError, match="train.epochs is a value"):
        load_config(None, ["train.epochs.x=1"], schema=_Exp)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"line 2: invalid YAML"):
        load_config(_write(tmp_path, "task: x\n  bad: [\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="no 'task:' key"):
        load_config(_write(tmp_path, "train:\n  epochs: 2\n"))
    with pytest.raises(ConfigError, match="unknown task 'test_config_schem'; did you mean test_config_schema"):
        load_config(_write(tmp_path, "task: test_config_schem\n"))


def test_task_key_selects_schema_and_mismatch_is_rejected(tmp_path):
    cfg = load_config(_write(tmp_path, "task: test_config_schema\nmodel:\n  lmax: 4\n"))
    assert isinstance(cfg, _Exp) and cfg.model.lmax == 4
    with pytest.raises(ConfigError, match="task"):
        load_config(_write(tmp_path, "task: engine_toy\n"), schema=_Exp)


def test_hash_is_stable_across_key_order_and_sensitive_to_values(tmp_path):
    a = _write(tmp_path, "task: test_config_schema\ntrain:\n  epochs: 3\n  seed: 1\noptim:\n  lr: 0.1\n")
    h1 = config_hash(load_config(a))
    b = tmp_path / "b.yaml"
    b.write_text("optim:\n  lr: 0.1\ntrain:\n  seed: 1\n  epochs: 3\ntask: test_config_schema\n")
    assert config_hash(load_config(b)) == h1
    assert config_hash(load_config(b, ["train.seed=2"])) != h1
    assert config_hash(load_config(b, ["train.seed=2"]), exclude=["train.seed"]) == \
        config_hash(load_config(a), exclude=["train.seed"])
    assert len(h1) == 16 and int(h1, 16) >= 0
    # independent of the process: a literal value guards against accidental changes of the hashing rule
    assert config_hash({"b": 1, "a": [1.5, None]}) == config_hash({"a": [1.5, None], "b": 1})


def test_save_resolved_round_trips(tmp_path):
    cfg = load_config(None, ["train.epochs=7", "optim.betas=[0.5, 0.6]", "weights.a=2"], schema=_Exp)
    path = save_resolved(cfg, tmp_path / "run")
    assert path == tmp_path / "run" / "config.yaml"
    assert not list((tmp_path / "run").glob("*.tmp"))
    again = load_config(path)  # found through its task: key
    assert again == cfg and config_hash(again) == config_hash(cfg)
    assert yaml.safe_load(path.read_text())["train"]["epochs"] == 7


def test_describe_lists_every_key_with_type_and_meaning():
    text = describe_config(_Exp)
    from speedpose.config import OptimConfig, ScheduleConfig, TrainConfig
    for model in (OptimConfig, ScheduleConfig, TrainConfig, _ModelSection):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            assert any(ln.strip().startswith(f"{name}:") and field.description in ln for ln in text.splitlines())
    assert yaml.safe_load(text)["train"]["epochs"] == 40  # the rendering is valid YAML with the defaults


def test_registry_rejects_duplicates_and_wrong_literal(_registered):
    assert "test_config_schema" in list_experiments() and "engine_toy" in list_experiments()
    assert get_experiment("test_config_schema").schema is _Exp
    assert register_experiment("test_config_schema", _Exp) is _registered  # the same schema again: no-op

    class _Other(ExperimentConfig):
        task: Literal["test_config_schema"] = "test_config_schema"

    with pytest.raises(ValueError, match="already registered"):
        register_experiment("test_config_schema", _Other)

    class _Wrong(ExperimentConfig):
        task: Literal["test_config_schema"] = "test_config_schema"

    with pytest.raises(ValueError, match="accepts"):
        register_experiment("some_other_name", _Wrong)
    with pytest.raises(TypeError, match="ExperimentConfig subclass"):
        register_experiment("some_other_name", _ModelSection)  # type: ignore[arg-type]
    assert "some_other_name" not in list_experiments() and get_experiment("test_config_schema").schema is _Exp


def test_builtin_names_are_taken_before_their_module_is_imported():
    class _FakeSpeedplus(ExperimentConfig):
        task: Literal["speedplus"] = "speedplus"

    with pytest.raises(ValueError, match="already registered by speedpose.pose.config.SpeedplusExperiment"):
        register_experiment("speedplus", _FakeSpeedplus)
    assert get_experiment("speedplus").schema.__module__ == "speedpose.pose.config"


@pytest.mark.parametrize("name", sorted(BUILTIN_EXPERIMENTS))
def test_builtin_table_resolves(name):
    schema_ref, factory_ref = BUILTIN_EXPERIMENTS[name]
    entry = get_experiment(name)
    assert entry.name == name and f"{entry.schema.__module__}:{entry.schema.__qualname__}" == schema_ref
    assert entry.schema.model_fields["task"].default == name
    assert (entry.task_factory is None) == (factory_ref is None)
    assert name in list_experiments()


def test_loading_a_config_imports_only_its_own_experiment(tmp_path):
    """No source scanning: loading an engine_toy config leaves the SPEED+, benchmark and adaptation modules (and
    the tests) unimported."""
    code = ("import sys; from speedpose.config import load_config, list_experiments; "
            "cfg = load_config('configs/engine_toy.yaml'); assert 'speedplus' in list_experiments(); "
            "print(cfg.task, sorted(m for m in sys.modules if m.startswith(('speedpose.pose', "
            "'speedpose.benchmarks', 'speedpose.adapt', 'tests', 'test_'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["engine_toy", "[]"]
