"""Registry of experiment schemas: the ``task:`` key of a YAML file names the schema (and the Task) to use.

The experiments speedpose ships are listed in one explicit table, :data:`BUILTIN_EXPERIMENTS` (name ->
``(schema, task factory)``, each a ``"module:attribute"`` reference), as torchvision lists its models.  A reference
is imported when its experiment is first asked for, so loading a config imports the modules of its own experiment
only, and this package never imports the tasks it names at import time (the import direction stays config ->
nothing).  Anything else (a plugin, a test's own schema) registers with :func:`register_experiment`.  A name is
taken once: registering another schema under a name in use, built-in or not, is an error.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any, Callable, get_args

from speedpose.config.sections import ExperimentConfig
from speedpose.errors import ConfigError

#: The shipped experiments: ``task:`` name -> (schema, task factory or None), as ``"module:attribute"``.
#: A task factory is called as ``factory(cfg) -> Task``; None marks a schema-only experiment (not trainable).
BUILTIN_EXPERIMENTS: dict[str, tuple[str, str | None]] = {
    "adapt": ("speedpose.adapt.config:AdaptExperiment", None),
    "engine_toy": ("speedpose.training.toy:ToyExperimentConfig", "speedpose.training.toy:ToyTask"),
    "modelnet10": ("speedpose.benchmarks.config:ModelNet10Experiment", "speedpose.benchmarks.task:BenchmarkTask"),
    "pascal3d": ("speedpose.benchmarks.config:Pascal3DExperiment", "speedpose.benchmarks.task:BenchmarkTask"),
    "speedplus": ("speedpose.pose.config:SpeedplusExperiment", "speedpose.pose.task:SpeedplusTask"),
}

#: resolved entries: the built-in ones once asked for, and every :func:`register_experiment` call
_REGISTRY: dict[str, "ExperimentEntry"] = {}


@dataclass(frozen=True)
class ExperimentEntry:
    """One registered experiment.

    Attributes:
        name: the value of the ``task:`` key.
        schema: the :class:`ExperimentConfig` subclass that validates the whole file.
        task_factory: ``task_factory(cfg) -> Task`` for the training engine, or ``None`` when the experiment is
            only a schema (e.g. an evaluation-only config).
    """

    name: str
    schema: type[ExperimentConfig]
    task_factory: Callable[[Any], Any] | None = None


def _reference(obj: object) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"  # type: ignore[attr-defined]


def _import(reference: str) -> Any:
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _lazy_factory(reference: str) -> Callable[[Any], Any]:
    """``factory(cfg)`` that imports ``reference`` on its first call (tasks import torch and the models)."""

    def factory(cfg: Any) -> Any:
        return _import(reference)(cfg)

    factory.__qualname__ = factory.__name__ = f"lazy({reference})"
    return factory


def _check_schema(name: str, schema: Any) -> None:
    if not (isinstance(schema, type) and issubclass(schema, ExperimentConfig)):
        raise TypeError(f"register_experiment({name!r}) expects an ExperimentConfig subclass, got {schema!r}")
    allowed = get_args(schema.model_fields["task"].annotation)
    if allowed and name not in allowed:
        raise ValueError(f"{schema.__qualname__}.task accepts {allowed}, not the registered name {name!r}")


def register_experiment(name: str, schema: type[ExperimentConfig],
                        task_factory: Callable[[Any], Any] | None = None) -> ExperimentEntry:
    """Register ``schema`` (an :class:`ExperimentConfig` subclass) as the experiment ``task: name``.

    The schema's ``task`` field must accept ``name`` (e.g. ``task: Literal["name"] = "name"``).  Registering the
    same schema again (e.g. on module reload) returns its entry; registering a different schema under a name that
    is taken (built-in or registered) raises ``ValueError``.

    Returns:
        The new (or existing) entry.
    """
    _check_schema(name, schema)
    builtin = BUILTIN_EXPERIMENTS.get(name)
    old = _REGISTRY.get(name)
    taken_by = _reference(old.schema) if old is not None else (builtin[0] if builtin is not None else None)
    if taken_by is not None and taken_by != _reference(schema):
        raise ValueError(f"experiment name {name!r} is already registered by {taken_by.replace(':', '.')}")
    if old is not None and old.schema is schema and old.task_factory is task_factory:
        return old
    if builtin is not None and task_factory is None and builtin[1] is not None:
        task_factory = _lazy_factory(builtin[1])
    entry = ExperimentEntry(name, schema, task_factory)
    _REGISTRY[name] = entry
    return entry


def list_experiments() -> list[str]:
    """Sorted names of every experiment: the built-in table and the registered ones (nothing is imported)."""
    return sorted(set(BUILTIN_EXPERIMENTS) | set(_REGISTRY))


def get_experiment(name: str) -> ExperimentEntry:
    """The entry of experiment ``name`` (a built-in one is imported on first use); a :class:`ConfigError` with
    the closest names when unknown."""
    entry = _REGISTRY.get(name)
    if entry is not None:
        return entry
    if name in BUILTIN_EXPERIMENTS:
        schema_ref, factory_ref = BUILTIN_EXPERIMENTS[name]
        schema = _import(schema_ref)
        return register_experiment(name, schema, _lazy_factory(factory_ref) if factory_ref is not None else None)
    names = list_experiments()
    close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown task {name!r}{hint} (registered: {', '.join(names) or 'none'})")
