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


@pytest.fixture(scope="session")
def tiny_standin(tmp_path_factory) -> Path:
    """A tiny stand-in SPEED+ dataset (speedpose synth: 8 train, 4 validation, 3 lightbox, 3 sunlamp), rendered once
    per test session."""
    from pipelines import synth

    root = tmp_path_factory.mktemp("standin") / "speedplus"
    synth.run(root, train=8, val=4, lightbox=3, sunlamp=3, seed=0, workers=1, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_prepared(tiny_standin: Path, tmp_path_factory) -> tuple[Path, Path]:
    """(root, preprocessed folder) of :func:`tiny_standin`, preprocessed at 384x256."""
    from pipelines import preprocess

    prep = tmp_path_factory.mktemp("prep")
    preprocess.run(tiny_standin, out=prep, size=(384, 256), workers=1, progress=False)
    return tiny_standin, prep


@pytest.fixture(scope="session")
def smoke_run(tiny_prepared, tmp_path_factory) -> Path:
    """A run folder trained for 2 steps with configs/smoke.yaml on :func:`tiny_prepared` (shared by the evaluate,
    submit and predict tests)."""
    from pipelines import train as train_stage

    root, prep = tiny_prepared
    out = tmp_path_factory.mktemp("runs")
    train_stage.run(root, "smoke", ["data.val_limit=2", "train.batch_size=2", "train.workers=0", "train.device=cpu",
                                    "train.max_steps=2", f"data.prep_dir={prep}"], out=out, name="run", progress=False)
    return out / "run"


@pytest.fixture(scope="session")
def benchmark_roots(tmp_path_factory) -> dict[str, Path]:
    """Tiny generated ModelNet10-SO(3) (4 train, 4 limited, 6 test, 64 px) and PASCAL3D+ (200x160) roots, by dataset
    name, made once per test session."""
    from speedpose.benchmarks.testing import write_modelnet10_root, write_pascal3d_tree

    base = tmp_path_factory.mktemp("bench")
    mn = write_modelnet10_root(base / "modelnet10", n_train=4, n_limited=4, n_test=6, size=64)
    p3 = base / "PASCAL3D+_release1.1"
    write_pascal3d_tree(p3, width=200, height=160)
    return {"modelnet10": mn, "pascal3d": p3}
