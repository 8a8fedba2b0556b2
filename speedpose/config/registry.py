"""Registry of experiment schemas: the ``task:`` key of a YAML file names the schema (and the Task) to use.

A module registers its schema with the :func:`register_experiment` decorator.  So that a config can be loaded
without knowing which module defines its schema, :func:`discover_experiments` imports every module of the
``speedpose`` and ``pipelines`` packages whose source contains the text ``register_experiment(`` (nothing else is
imported, so discovery stays cheap and needs no central list that every engineer would have to edit).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar, get_args

from speedpose.config.sections import ExperimentConfig
from speedpose.errors import ConfigError

S = TypeVar("S", bound=type[ExperimentConfig])

_REGISTRY: dict[str, "ExperimentEntry"] = {}
_DISCOVERED = False
_SCAN_PACKAGES = ("speedpose", "pipelines")
_MARKER = "register_experiment("


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


def register_experiment(name: str, *, task_factory: Callable[[Any], Any] | None = None) -> Callable[[S], S]:
    """Class decorator registering an :class:`ExperimentConfig` subclass under ``name``.

    The schema's ``task`` field must accept ``name`` (e.g. ``task: Literal["name"] = "name"``).  Registering a
    different class under a taken name is an error (re-registering the same class, e.g. on module reload, is not).
    """

    def deco(schema: S) -> S:
        if not (isinstance(schema, type) and issubclass(schema, ExperimentConfig)):
            raise TypeError(f"register_experiment({name!r}) expects an ExperimentConfig subclass, got {schema!r}")
        field = schema.model_fields["task"]
        allowed = get_args(field.annotation)
        if allowed and name not in allowed:
            raise ValueError(f"{schema.__qualname__}.task accepts {allowed}, not the registered name {name!r}")
        old = _REGISTRY.get(name)
        if old is not None and (old.schema.__module__, old.schema.__qualname__) != (schema.__module__,
                                                                                    schema.__qualname__):
            raise ValueError(f"experiment name {name!r} is already registered by "
                             f"{old.schema.__module__}.{old.schema.__qualname__}")
        _REGISTRY[name] = ExperimentEntry(name, schema, task_factory)
        return schema

    return deco


def _package_dirs(package: str) -> list[Path]:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(p) for p in spec.submodule_search_locations]


def discover_experiments() -> None:
    """Import every module of ``speedpose``/``pipelines`` that calls :func:`register_experiment` (once)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    for package in _SCAN_PACKAGES:
        for root in _package_dirs(package):
            for file in sorted(root.rglob("*.py")):
                rel = file.relative_to(root).with_suffix("")
                if rel.parts[:1] == ("config",) and package == "speedpose":
                    continue  # this package defines the marker itself
                try:
                    text = file.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
                if _MARKER not in text:
                    continue
                parts = [package, *rel.parts]
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                importlib.import_module(".".join(parts))
    _DISCOVERED = True


def list_experiments() -> list[str]:
    """Sorted names of every registered experiment (after discovery)."""
    discover_experiments()
    return sorted(_REGISTRY)


def get_experiment(name: str) -> ExperimentEntry:
    """The entry registered as ``name``; a :class:`ConfigError` with the closest names when unknown."""
    if name not in _REGISTRY:
        discover_experiments()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown task {name!r}{hint} (registered: {', '.join(sorted(_REGISTRY)) or 'none'})")
    return _REGISTRY[name]
