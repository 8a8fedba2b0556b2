"""Load a YAML config with dotted command-line overrides into a validated schema; hash and save it.

Errors are :class:`~speedpose.errors.ConfigError` whose message names the file (and line) or the override, the
dotted key, what was expected and what was found; an unknown key is answered with the closest valid names.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, TypeVar, Union

import yaml
from pydantic import BaseModel, ValidationError

from speedpose.config._yaml import key_line, safe_load
from speedpose.config.registry import get_experiment
from speedpose.config.sections import ExperimentConfig
from speedpose.errors import ConfigError
from speedpose.io_utils import atomic_write_text

C = TypeVar("C", bound=ExperimentConfig)

RESOLVED_NAME = "config.yaml"
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


# --------------------------------------------------------------------------------------------- schema walking
def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The BaseModel classes an annotation can hold (through Optional/Union)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _models_in(a)]
    return []


def _model_at(schema: type[BaseModel], path: Sequence[str | int]) -> type[BaseModel] | None:
    """The section model found at ``path`` below ``schema`` (None when the path leaves the models)."""
    model: type[BaseModel] | None = schema
    for part in path:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        candidates = _models_in(model.model_fields[part].annotation)
        model = candidates[0] if len(candidates) == 1 else None
    return model


def _unknown_key_message(schema: type[BaseModel], path: Sequence[str | int]) -> str:
    parent = _model_at(schema, path[:-1])
    valid = list(parent.model_fields) if parent is not None else []
    close = difflib.get_close_matches(str(path[-1]), valid, n=3, cutoff=0.5)
    msg = f"unknown key {_dotted(path)!r}"
    if close:
        msg += f"; did you mean {', '.join(_dotted([*path[:-1], c]) for c in close)}?"
    if valid:
        msg += f" (valid keys{' in ' + _dotted(path[:-1]) if path[:-1] else ''}: {', '.join(valid)})"
    return msg


def _dotted(path: Sequence[str | int]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


# ------------------------------------------------------------------------------------------------ overrides
#: one override: a ``"key.sub=value"`` string typed by a user (the value read as YAML), or a ``(dotted key, value)``
#: pair from code, e.g. a command-line option, whose Python value is used as it is (a path stays the whole path)
Override = Union[str, tuple[str, Any]]


def with_options(overrides: Iterable[Override], options: Mapping[str, Any]) -> list[Override]:
    """``overrides`` followed by a ``(dotted key, value)`` pair for every command-line option that was given
    (value not None), e.g. ``with_options(ctx.args, {"train.seed": seed})``: options override the config and the
    dotted overrides, and their values are never re-read as YAML (``--root "/data/speed plus #2"`` stays whole)."""
    return [*overrides, *((k, v) for k, v in options.items() if v is not None)]


def _plain(value: Any) -> Any:
    """A Python option value as config data: paths become strings, tuples lists (as YAML would hold them)."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def parse_overrides(items: Iterable[Override]) -> list[tuple[tuple[str, ...], Any, str]]:
    """Parse overrides: ``key.sub=value`` strings, each value read with the safe YAML loader (never ``eval``), and
    ``(key.sub, value)`` pairs, whose value is kept as given (a path becomes its string).

    Returns:
        ``[(path, value, shown_text)]`` in the given order (a later override of the same key wins); ``shown_text``
        is the string itself, or ``key=value`` for a pair (it names the override in error messages).
    """
    parsed = []
    for item in items:
        if isinstance(item, tuple):
            if len(item) != 2 or not isinstance(item[0], str) or not _KEY_RE.match(item[0]):
                raise ConfigError(f"override {item!r}: expected a (dotted key, value) pair such as "
                                  f"('train.epochs', 3)")
            key, value = item[0], _plain(item[1])
            parsed.append((tuple(key.split(".")), value, f"{key}={value}"))
            continue
        key, sep, raw = str(item).partition("=")
        key = key.strip()
        if not sep or not _KEY_RE.match(key):
            raise ConfigError(f"override {item!r}: expected KEY=VALUE with a dotted key such as train.epochs=3")
        try:
            value = safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc.__class__.__name__})") from None
        parsed.append((tuple(key.split(".")), value, str(item)))
    return parsed


def _check_override_path(schema: type[BaseModel], path: tuple[str, ...], item: str) -> None:
    model: type[BaseModel] | None = schema
    for i, part in enumerate(path):
        if model is None:
            return  # inside a free-form field (dict, Any): nothing to check
        if part not in model.model_fields:
            raise ConfigError(f"override {item!r}: {_unknown_key_message(schema, path[:i + 1])}")
        candidates = _models_in(model.model_fields[part].annotation)
        if i < len(path) - 1 and not candidates:
            ann = model.model_fields[part].annotation
            if typing.get_origin(ann) is not dict and ann is not Any:
                raise ConfigError(f"override {item!r}: {_dotted(path[:i + 1])} is a value, not a section")
        model = candidates[0] if len(candidates) == 1 else None


def apply_overrides(data: dict, overrides: Sequence[tuple[tuple[str, ...], Any, str]]) -> dict:
    """A copy of ``data`` with each ``(path, value, text)`` set (intermediate mappings created)."""
    out = json.loads(json.dumps(data)) if data else {}
    for path, value, item in overrides:
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {_dotted(path[:i + 1])} holds {child!r}, not a mapping")
            node = child
        node[path[-1]] = value
    return out


# --------------------------------------------------------------------------------------------------- loading
def _read_yaml(path: Path) -> tuple[dict, str]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file (expected YAML)") from None
    try:
        data = safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, found {type(data).__name__}")
    return data, text


def validate_config(data: dict, schema: type[C], source: str = "<config>", text: str | None = None,
                    overrides: Sequence[tuple[tuple[str, ...], Any, str]] = ()) -> C:
    """Validate plain ``data`` against ``schema``; errors name ``source`` (line from ``text``) or the override."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors()[:10]:
            loc = tuple(err["loc"])
            origin = next((item for path, _, item in reversed(overrides) if loc[:len(path)] == path
                           or path[:len(loc)] == loc), None)
            if origin is not None:
                where = f"override {origin!r}"
            else:
                line = key_line(text, loc) if text is not None else None
                where = source + (f", line {line}" if line else "")
            if err["type"] == "extra_forbidden":
                what = _unknown_key_message(schema, loc)
            else:
                found = err.get("input")
                shown = "" if isinstance(found, dict) else f" (found {found!r})"
                what = f"{_dotted(loc) or '<top level>'}: {err['msg']}{shown}"
            lines.append(f"{where}: {what}")
        if len(exc.errors()) > 10:
            lines.append(f"... and {len(exc.errors()) - 10} more errors")
        raise ConfigError("\n".join(lines)) from None


def load_config(path: str | Path | None, overrides: Iterable[Override] = (), schema: type[C] | None = None) -> C:
    """Load, override and validate a config.

    Args:
        path: YAML file (``None``: start from the schema's defaults, which needs ``schema``).
        overrides: dotted ``key=value`` strings, values parsed as YAML (``train.epochs=3 optim.lr=1e-3``), and
            ``(dotted key, value)`` pairs whose values are used as given (see :func:`parse_overrides`).
        schema: the :class:`ExperimentConfig` subclass; ``None`` picks the one registered under the file's
            ``task:`` key (see :func:`speedpose.config.register_experiment`).

    Returns:
        The validated schema instance.

    Raises:
        ConfigError: missing file, bad YAML, unknown task or key (with the closest names), wrong type or range.
    """
    source = "<defaults>" if path is None else str(path)
    data, text = ({}, None) if path is None else _read_yaml(Path(path))
    parsed = parse_overrides(overrides)
    data = apply_overrides(data, parsed)
    if schema is None:
        task = data.get("task")
        if task is None:
            raise ConfigError(f"{source}: no 'task:' key, so the schema is unknown (expected a registered "
                              f"experiment name)")
        schema = get_experiment(str(task)).schema  # type: ignore[assignment]
    for path_, _, item in parsed:
        _check_override_path(schema, path_, item)
    return validate_config(data, schema, source, text, parsed)


# ------------------------------------------------------------------------------------------- hash and save
def config_to_dict(cfg: BaseModel) -> dict:
    """The resolved config as plain JSON-compatible data (tuples become lists)."""
    return cfg.model_dump(mode="json")


def _drop(data: dict, dotted: str) -> None:
    *head, last = dotted.split(".")
    node: Any = data
    for part in head:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(last, None)


def config_hash(cfg: BaseModel | dict, exclude: Iterable[str] = ()) -> str:
    """Stable 16-hex-digit SHA-256 of the resolved config (independent of key order).

    Args:
        cfg: a config instance or its plain dict.
        exclude: dotted keys left out of the hash (e.g. ``train.workers``).
    """
    data = config_to_dict(cfg) if isinstance(cfg, BaseModel) else json.loads(json.dumps(cfg))
    for key in exclude:
        _drop(data, key)
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def save_resolved(cfg: BaseModel, run_dir: str | Path, name: str = RESOLVED_NAME) -> Path:
    """Write the resolved config as YAML to ``run_dir/name`` atomically; returns the path.

    The file loads back with :func:`load_config` into an equal config.
    """
    path = Path(run_dir) / name
    data = config_to_dict(cfg)
    header = f"# resolved config (speedpose), hash {config_hash(data)}\n"
    atomic_write_text(path, header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False))
    return path


def diff_configs(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain config dicts."""
    out = []
    missing = object()  # a key present on one side only differs, even when the other holds None
    for key in sorted(set(a) | set(b), key=str):
        va, vb = a.get(key, missing), b.get(key, missing)
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out.extend(diff_configs(va, vb, dotted))
        elif va is missing or vb is missing or va != vb:
            out.append(dotted)
    return out


# ---------------------------------------------------------------------------------------------- documenting
def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation).replace("typing.", "")
    return text


def describe_config(schema: type[BaseModel], indent: int = 0) -> str:
    """A commented YAML rendering of ``schema``'s defaults: every key with its type and meaning.

    Required fields without a default are shown as ``null`` with ``(required)``.
    """
    pad = "  " * indent
    lines = []
    for name, field in schema.model_fields.items():
        sub = _models_in(field.annotation)
        desc = field.description or ""
        if len(sub) == 1 and typing.get_origin(field.annotation) not in (Union, types.UnionType):
            lines.append(f"{pad}{name}:{'  # ' + desc if desc else ''}")
            lines.append(describe_config(sub[0], indent + 1))
            continue
        if field.is_required():
            value, desc = None, f"(required) {desc}"
        else:
            value = field.get_default(call_default_factory=True)
            if isinstance(value, BaseModel):
                value = config_to_dict(value)
            elif isinstance(value, tuple):
                value = list(value)
        dumped = json.dumps(value)
        lines.append(f"{pad}{name}: {dumped}  # {_type_name(field.annotation)}: {desc}".rstrip())
    return "\n".join(lines)
