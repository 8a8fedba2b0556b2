"""The repository's text files carry no leftovers of a merge (a conflict marker in README.md landed once)."""

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^(<{7} |>{7} |={7}$)")


def _tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files")
    suffixes = {".py", ".md", ".yaml", ".yml", ".toml", ".cfg", ".txt", ".sh", ".in", ""}
    return [REPO / f for f in out.splitlines() if Path(f).suffix in suffixes and (REPO / f).is_file()]


def test_no_merge_conflict_markers():
    hits = []
    for path in _tracked_text_files():
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            continue
        hits += [f"{path.relative_to(REPO)}:{no}" for no, line in enumerate(lines, 1) if MARKER.match(line)]
    assert not hits, f"merge conflict markers at {', '.join(hits)}"


def test_the_marker_pattern_finds_a_conflict():
    assert MARKER.match("<<<<<<< HEAD") and MARKER.match(">>>>>>> branch") and MARKER.match("=======")
    assert not MARKER.match("======= heading underline with text") and not MARKER.match("<<< not one")
