"""Safe loading everywhere: torch.load with weights_only=True, YAML with the safe loader, no eval/exec."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("speedpose", "pipelines", "tools") for p in (REPO / d).rglob("*.py")]


def _calls(pattern: str):
    hits = []
    for path in SOURCES:
        for no, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(pattern, line) and not line.lstrip().startswith("#"):
                hits.append((path.relative_to(REPO), no, line.strip()))
    return hits


def test_torch_load_is_weights_only():
    for path, no, line in _calls(r"torch\.load\("):
        text = "\n".join(Path(REPO / path).read_text().splitlines()[no - 1:no + 3])
        assert "weights_only=True" in text, f"{path}:{no}: torch.load without weights_only=True"


def test_yaml_is_loaded_safely():
    bad = [h for h in _calls(r"yaml\.(load|unsafe_load|full_load)\(") if "SafeLoader" not in h[2]]
    assert not bad, bad


def test_no_eval_or_exec():
    bad = _calls(r"(?<![\w.])(eval|exec)\(")
    assert not bad, bad
