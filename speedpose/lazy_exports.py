"""Lazily loaded public names of a package (a submodule is imported on first attribute access), so that importing
one light submodule does not pull in the heavy ones (torch, healpy, e3nn)."""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package`` exporting ``exports`` (public name ->
    submodule name).  Use as ``__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)``."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
