"""`speedpose train` options reach the config whole: a --root with spaces and "#" is the folder reported."""

from __future__ import annotations

from pathlib import Path

from speedpose.cli import main
from speedpose.config import load_config, resolve_config, with_options

ROOT = "/data/speed plus #2"


def test_root_option_keeps_the_whole_path():
    extra = with_options(["train.epochs=2"], {"data.root": Path(ROOT), "data.split": None})
    cfg = load_config(resolve_config(None, "speedplus"), extra)
    assert cfg.data.root == ROOT and cfg.train.epochs == 2


def test_train_reports_the_whole_missing_root(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPEEDPOSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--root", ROOT]) == 2
    err = capsys.readouterr().err
    assert f"{Path(ROOT).resolve()}: no preprocessed synthetic/train" in err, err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()
