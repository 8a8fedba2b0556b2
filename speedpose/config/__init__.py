"""Configuration: plain YAML validated by pydantic schemas, dotted overrides, hashing and the experiment registry.

Public API::

    ConfigModel, OptimConfig, ScheduleConfig, TrainConfig, ExperimentConfig   # sections and the base schema
    BUILTIN_EXPERIMENTS, register_experiment, get_experiment, list_experiments, ExperimentEntry
                                                    # task: key -> schema (and Task), an explicit table
    load_config(path, overrides=(), schema=None) -> ExperimentConfig subclass instance
    Override, parse_overrides, apply_overrides, validate_config, with_options   # "key=value" or (key, value)
    config_hash(cfg, exclude=()), save_resolved(cfg, run_dir), config_to_dict, diff_configs, describe_config
    find_config(name_or_path) -> Path, shipped_configs() -> {name: path}, shipped_config_dir()  # installed or not
    resolve_config(name_or_path_or_None, dataset) -> Path           # None: the dataset's default (DATASET_CONFIGS)
"""

from speedpose.config.loading import (
    RESOLVED_NAME,
    Override,
    apply_overrides,
    config_hash,
    config_to_dict,
    describe_config,
    diff_configs,
    load_config,
    parse_overrides,
    save_resolved,
    validate_config,
    with_options,
)
from speedpose.config.registry import (
    BUILTIN_EXPERIMENTS,
    ExperimentEntry,
    get_experiment,
    list_experiments,
    register_experiment,
)
from speedpose.config.sections import ConfigModel, ExperimentConfig, OptimConfig, ScheduleConfig, TrainConfig
from speedpose.config.shipped import (
    DATASET_CONFIGS,
    find_config,
    resolve_config,
    shipped_config_dir,
    shipped_configs,
)

__all__ = [
    "BUILTIN_EXPERIMENTS", "DATASET_CONFIGS", "RESOLVED_NAME", "ConfigModel", "ExperimentConfig", "ExperimentEntry",
    "OptimConfig", "Override", "ScheduleConfig", "TrainConfig", "apply_overrides", "config_hash", "config_to_dict",
    "describe_config", "diff_configs", "find_config", "get_experiment", "list_experiments", "load_config",
    "parse_overrides", "register_experiment", "resolve_config", "save_resolved", "shipped_config_dir",
    "shipped_configs", "validate_config", "with_options",
]
