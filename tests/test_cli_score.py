"""`speedpose score`, `--version`, `--help`, and the error contract (exit 2, one line, no traceback)."""

import json
import subprocess
import sys

import pytest

from speedpose import __version__
from speedpose.cli import main


@pytest.fixture()
def root(tmp_path, real_sample):
    r = tmp_path / "root"
    (r / "lightbox").mkdir(parents=True)
    (r / "lightbox" / "test.json").write_text((real_sample / "lightbox" / "test.json").read_text())
    return r


def _csv_from_labels(root, path, tweak=None):
    rows = []
    for rec in json.loads((root / "lightbox" / "test.json").read_text()):
        q, r = rec["q_vbs2tango_true"], list(rec["r_Vo2To_vbs_true"])
        if tweak:
            r[0] += tweak
        rows.append(",".join(["lightbox", rec["filename"], *map(str, q), *map(str, r)]))
    path.write_text("\n".join(rows) + "\n")
    return path


def test_score_happy_path(root, tmp_path, capsys):
    sub = _csv_from_labels(root, tmp_path / "sub.csv", tweak=0.1)
    out_json = tmp_path / "score.json"
    assert main(["score", str(sub), "--root", str(root), "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "lightbox" in text and "10" in text
    data = json.loads(out_json.read_text())
    assert data["domains"]["lightbox"]["mean_e_t_m"] == pytest.approx(0.1)
    assert data["domains"]["lightbox"]["count"] == 10


def test_malformed_file_exits_2_with_one_line(root, tmp_path):
    sub = _csv_from_labels(root, tmp_path / "sub.csv")
    sub.write_text(sub.read_text() + "lightbox,img000099.jpg,1,0,0\n")
    proc = subprocess.run([sys.executable, "-m", "speedpose", "score", str(sub), "--root", str(root)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "line 11" in proc.stderr and "Traceback" not in proc.stderr
    debug = subprocess.run([sys.executable, "-m", "speedpose", "--debug", "score", str(sub), "--root", str(root)],
                           capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_only_the_root_option_shows_tracebacks(root, tmp_path, capsys):
    from speedpose.errors import InputError

    # a file literally named --debug is an argument, not the option: the error stays one line
    assert main(["score", "--root", str(root), "--", "--debug"]) == 2
    assert "--debug" in capsys.readouterr().err
    with pytest.raises(InputError, match="not found"):
        main(["--debug", "score", "--root", str(root), str(tmp_path / "absent.csv")])
    assert main(["score", "--root", str(root), str(tmp_path / "absent.csv")]) == 2  # the flag does not stick


def test_missing_images_in_submission_exit_2(root, tmp_path, capsys):
    sub = _csv_from_labels(root, tmp_path / "sub.csv")
    sub.write_text("".join(sub.read_text().splitlines(keepends=True)[:5]))
    assert main(["score", str(sub), "--root", str(root)]) == 2
    assert "missing" in capsys.readouterr().err


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
    assert main(["--help"]) == 0
    assert "score" in capsys.readouterr().out
