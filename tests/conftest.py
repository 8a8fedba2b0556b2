"""Shared fixtures: where ../shared is, the real SPEED+ sample, the released pose labels."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPEEDPOSE_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (the client's material), or skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"../shared is absent ({SHARED}): the real SPEED+ sample and labels are not available")
    return SHARED


@pytest.fixture(scope="session")
def real_sample(shared_dir: Path) -> Path:
    """Root of the ten real lightbox images (SPEED+ layout: camera.json, lightbox/test.json, lightbox/images/)."""
    root = shared_dir / "speedplus-real-sample"
    if not (root / "lightbox" / "images").is_dir():
        pytest.skip(f"real SPEED+ sample absent ({root})")
    return root


@pytest.fixture(scope="session")
def released_poses(shared_dir: Path) -> Path:
    """Folder with the released label files lightbox_test.json, sunlamp_test.json, synthetic_validation.json."""
    root = shared_dir / "speedplus-poses"
    if not (root / "lightbox_test.json").is_file():
        pytest.skip(f"released SPEED+ pose labels absent ({root})")
    return root
