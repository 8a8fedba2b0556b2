"""The configs shipped with speedpose, found by name (``smoke``, ``standin_cpu``, ``speedplus``, ``adapt`` ...).

They live in the repository's top-level ``configs/`` folder.  A wheel (``pip install .``) carries a copy inside the
package, ``speedpose/_configs/``, written by the build step in ``setup.py``; a source checkout or an editable install
has no such copy and reads ``configs/`` itself.  So every named config works however speedpose is installed.
"""

from __future__ import annotations

from pathlib import Path

from speedpose.errors import ConfigError, InputError

#: the copy a wheel installs inside the package
PACKAGED_DIR = Path(__file__).resolve().parents[1] / "_configs"
#: the source checkout's configs/ (next to the speedpose/ package)
SOURCE_DIR = Path(__file__).resolve().parents[2] / "configs"
#: the shipped config of each dataset, used when no config is named
DATASET_CONFIGS = {"speedplus": "standin_cpu", "modelnet10": "modelnet10", "pascal3d": "pascal3d"}


def shipped_config_dir() -> Path:
    """The folder of the shipped configs: the copy installed with the package, else the checkout's ``configs/``.

    Raises:
        ConfigError: neither exists (an install made without the build step of ``setup.py``).
    """
    for folder in (PACKAGED_DIR, SOURCE_DIR):
        if folder.is_dir():
            return folder
    raise ConfigError(f"the shipped configs are missing: expected {PACKAGED_DIR} (installed copy) or {SOURCE_DIR} "
                      "(source checkout)")


def shipped_configs() -> dict[str, Path]:
    """Every shipped config: ``{name: path}`` with name = file stem (``smoke`` for ``smoke.yaml``), sorted."""
    return {p.stem: p for p in sorted(shipped_config_dir().glob("*.yaml"))}


def find_config(config: str | Path) -> Path:
    """A config file: ``config`` itself when it is a file, else the shipped config of that name (``smoke`` or
    ``smoke.yaml``).

    Raises:
        InputError: neither; the message lists the shipped names.
    """
    path = Path(config)
    if path.is_file():
        return path
    shipped = shipped_configs()
    name = path.name.removesuffix(".yaml")
    if len(path.parts) == 1 and name in shipped:  # a bare name, never a path that happens to end in one
        return shipped[name]
    raise InputError(f"config not found: not a file and not a shipped name (shipped configs: "
                     f"{', '.join(shipped)})", path)


def resolve_config(config: str | Path | None, dataset: str) -> Path:
    """A config path: the given file, a shipped config by name (``smoke``, ``speedplus``...), or the dataset's default
    (:data:`DATASET_CONFIGS`)."""
    if config is None:
        if dataset not in DATASET_CONFIGS:
            raise InputError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASET_CONFIGS)}")
        config = DATASET_CONFIGS[dataset]
    return find_config(config)
