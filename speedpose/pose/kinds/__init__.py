"""The model kinds of the SPEED+ pose pipeline (``model.kind``): one object per kind, one small interface.

A kind (:class:`~speedpose.pose.kinds.base.ModelKind`) builds its networks, makes its training samples, computes
its loss and predicts a batch of records; its settings are explicit values taken from the experiment once.
:func:`model_kind` is the one place where an experiment's ``model.kind`` is looked up: everything downstream holds
the kind object it returns.

Registry (torchvision-style: :func:`get_kind`, :func:`list_kinds`): name -> ``module:class``, imported when first
asked for.  A new kind is a module with a ``ModelKind`` subclass and one line in :data:`KINDS` (``model.kind`` is
validated against this table).

* ``crop`` (:mod:`speedpose.pose.kinds.crop`): localise, crop through a virtual camera, I2S + geometric translation.
* ``fullimage`` (:mod:`speedpose.pose.kinds.fullimage`): the seed's whole-image baseline.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, TypeVar

from speedpose.errors import ConfigError, InputError

if TYPE_CHECKING:
    from speedpose.pose.config import SpeedplusExperiment
    from speedpose.pose.kinds.base import ModelKind

#: name (the value of ``model.kind``) -> ``module:class`` of the kind
KINDS: dict[str, str] = {
    "crop": "speedpose.pose.kinds.crop:CropKind",
    "fullimage": "speedpose.pose.kinds.fullimage:FullImageKind",
}

K = TypeVar("K", bound="ModelKind")


def list_kinds() -> list[str]:
    """The names of the model kinds, sorted."""
    return sorted(KINDS)


def get_kind(name: str) -> type[ModelKind]:
    """The kind class registered as ``name``; ConfigError naming the known kinds otherwise."""
    if name not in KINDS:
        raise ConfigError(f"model.kind: expected one of {', '.join(list_kinds())}, got {name!r}")
    module, attr = KINDS[name].split(":")
    cls = getattr(importlib.import_module(module), attr)
    if cls.name != name:
        raise ConfigError(f"model kind {KINDS[name]} is registered as {name!r} but names itself {cls.name!r}")
    return cls


def model_kind(cfg: SpeedplusExperiment, expected: type[K] | None = None, refusal: str = "") -> K:
    """The model kind of experiment ``cfg`` with its settings.

    Args:
        expected: the kind class the caller works with; an experiment of another kind is refused with an
            :class:`~speedpose.errors.InputError` saying ``refusal``.
    """
    kind = get_kind(cfg.model.kind).from_experiment(cfg)
    if expected is not None and not isinstance(kind, expected):
        raise InputError(refusal or f"expected a config with model.kind: {expected.name}, got {cfg.model.kind}")
    return kind


__all__ = ["KINDS", "get_kind", "list_kinds", "model_kind"]
