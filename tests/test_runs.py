"""speedpose.runs: the one loader of run folders (SPEED+ and benchmark runs); loading real runs is covered by the
evaluate, predict, adapt and benchmark tests."""

from __future__ import annotations

import pytest

from speedpose.errors import InputError
from speedpose.runs import load_run, read_run_config, run_checkpoint


def test_a_folder_without_config_is_not_a_run(tmp_path):
    for call in (lambda: read_run_config(tmp_path), lambda: load_run(tmp_path)):
        with pytest.raises(InputError, match="not a run folder"):
            call()


def test_best_falls_back_to_last_before_any_validation(tmp_path):
    with pytest.raises(InputError, match="no 'best' checkpoint; the folder holds no .pt file"):
        run_checkpoint(tmp_path, "best")
    (tmp_path / "last.pt").write_bytes(b"")
    assert run_checkpoint(tmp_path, "best") == tmp_path / "last.pt"
    (tmp_path / "best.pt").write_bytes(b"")
    assert run_checkpoint(tmp_path, "best") == tmp_path / "best.pt"
    assert run_checkpoint(tmp_path, "last") == tmp_path / "last.pt"
    with pytest.raises(InputError, match="no 'other.pt' checkpoint"):
        run_checkpoint(tmp_path, "other.pt")


def test_a_run_of_another_task_is_refused_before_its_checkpoint_is_read(tmp_path):
    (tmp_path / "config.yaml").write_text("task: engine_toy\n")
    assert read_run_config(tmp_path, [("train.seed", 7)]).train.seed == 7
    with pytest.raises(InputError, match="run of task 'engine_toy', not a speedplus run"):
        load_run(tmp_path)
    with pytest.raises(InputError, match="no model to load"):
        load_run(tmp_path, task=None)
