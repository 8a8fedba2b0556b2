"""speedpose.resumable: the keyed folder of chunk files behind every resumable stage (preprocess, evaluate, submit,
the benchmark evaluation, adapt)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from speedpose.errors import InputError
from speedpose.resumable import (
    ChunkFiles,
    chunk_bounds,
    compute_chunks,
    concatenate_chunks,
    open_keyed,
    resumable_chunks,
)

KEY = {"run": "r", "checkpoint_stat": [10, 20], "batch_size": 2}


class _Killed(Exception):
    """Stands for a kill in the middle of the work."""


def _squares(calls: list[int] | None = None, kill_at: int | None = None):
    """``compute(start, stop)`` -> {"i": items, "sq": items**2}; raises _Killed at the chunk starting at ``kill_at``."""

    def compute(start: int, stop: int) -> dict[str, np.ndarray]:
        if start == kill_at:
            raise _Killed(start)
        if calls is not None:
            calls.append(start)
        i = np.arange(start, stop)
        return {"i": i, "sq": i * i}

    return compute


def test_chunk_bounds():
    assert chunk_bounds(7, 3) == [(0, 3), (3, 6), (6, 7)]
    assert chunk_bounds(6, 3) == [(0, 3), (3, 6)] and chunk_bounds(0, 3) == []
    with pytest.raises(ValueError):
        chunk_bounds(3, 0)


def test_an_interrupted_computation_resumes_with_the_unfinished_chunks(tmp_path):
    folder = tmp_path / "cache"
    with pytest.raises(_Killed):
        compute_chunks(10, 3, _squares(kill_at=6), resumable_chunks(folder, KEY))
    assert sorted(p.name for p in folder.iterdir()) == ["chunk_000000.npz", "chunk_000001.npz", "key.json"]

    calls: list[int] = []
    files = resumable_chunks(folder, KEY)
    assert files.resumed
    got = concatenate_chunks(compute_chunks(10, 3, _squares(calls), files))
    assert calls == [6, 9]  # only the unfinished chunks
    np.testing.assert_array_equal(got["i"], np.arange(10))
    np.testing.assert_array_equal(got["sq"], np.arange(10) ** 2)

    calls.clear()  # everything finished: nothing is computed
    again = concatenate_chunks(compute_chunks(10, 3, _squares(calls), resumable_chunks(folder, KEY)))
    assert calls == [] and all(np.array_equal(again[k], got[k]) for k in got)


def test_another_key_discards_the_chunks(tmp_path):
    folder = tmp_path / "cache"
    compute_chunks(6, 3, _squares(), resumable_chunks(folder, KEY))
    (folder / "stray.txt").write_text("left by the old key")
    calls: list[int] = []
    files = resumable_chunks(folder, {**KEY, "batch_size": 3})
    assert not files.resumed and sorted(p.name for p in folder.iterdir()) == ["key.json"]
    compute_chunks(6, 3, _squares(calls), files)
    assert calls == [0, 3]
    assert json.loads((folder / "key.json").read_text())["batch_size"] == 3


def test_a_key_equal_after_a_json_round_trip_matches(tmp_path):
    assert not open_keyed(tmp_path / "c", {"size": (768, 512)})
    assert open_keyed(tmp_path / "c", {"size": [768, 512]})


@pytest.mark.parametrize("content", [None, "{not json", "[]"])
def test_a_missing_or_unreadable_key_is_another_key(tmp_path, content):
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "chunk_000000.npz").write_bytes(b"old")
    if content is not None:
        (folder / "key.json").write_text(content)
    assert not open_keyed(folder, KEY)
    assert sorted(p.name for p in folder.iterdir()) == ["key.json"]


def test_error_mode_refuses_another_key_and_keeps_the_work(tmp_path):
    folder = tmp_path / "work"
    assert not open_keyed(folder, KEY, on_mismatch="error")
    (folder / "state.pt").write_bytes(b"precious")
    assert open_keyed(folder, KEY, on_mismatch="error")  # same key: resume
    with pytest.raises(InputError, match="other inputs or settings.*re-run the first command") as info:
        open_keyed(folder, {**KEY, "batch_size": 9}, on_mismatch="error", hint="re-run the first command")
    assert info.value.path == folder
    assert (folder / "state.pt").read_bytes() == b"precious"
    assert json.loads((folder / "key.json").read_text()) == KEY


def test_error_mode_refuses_files_without_a_key_but_not_temporary_leftovers(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / ".key.json.x1y2.tmp").write_text("{")  # a key write killed before its rename
    assert not open_keyed(folder, KEY, on_mismatch="error")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="no key.json"):
        open_keyed(other, KEY, on_mismatch="error")
    assert (other / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError):
        open_keyed(tmp_path / "x", KEY, on_mismatch="ignore")  # type: ignore[arg-type]


def test_a_chunk_appears_complete_or_not_at_all(tmp_path, monkeypatch):
    files = resumable_chunks(tmp_path / "c", KEY)
    with pytest.raises(_Killed):
        with files.writing(0) as tmp:
            tmp.write_bytes(b"half a chunk")
            assert not files.is_done(0) and files.load_arrays(0) is None  # invisible while written
            raise _Killed
    assert not files.is_done(0)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["key.json"]  # the temporary file is gone

    def torn_savez(fh, **arrays):  # killed half-way through writing the file
        fh.write(b"PK\x03\x04 half a zip")
        raise _Killed

    monkeypatch.setattr(np, "savez", torn_savez)
    with pytest.raises(_Killed):
        compute_chunks(3, 3, _squares(), files)
    assert not files.is_done(0)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["key.json"]


def test_leftovers_of_a_hard_kill_are_ignored_and_damaged_chunks_recomputed(tmp_path):
    folder = tmp_path / "c"
    files = resumable_chunks(folder, KEY)
    (folder / ".chunk_000000.npz.abcd.tmp").write_bytes(b"torn")  # a kill -9 during a write: never renamed
    (folder / "chunk_000001.npz").write_bytes(b"damaged outside the atomic writes")
    with open(folder / "chunk_000002.npz", "wb") as fh:  # an array, not an archive of named arrays
        np.save(fh, np.arange(3))
    calls: list[int] = []
    got = concatenate_chunks(compute_chunks(9, 3, _squares(calls), files))
    assert calls == [0, 3, 6]
    np.testing.assert_array_equal(got["sq"], np.arange(9) ** 2)
    assert sorted(p.name for p in folder.iterdir() if not p.name.endswith(".tmp")) == [
        "chunk_000000.npz", "chunk_000001.npz", "chunk_000002.npz", "key.json"]


def test_accept_refuses_a_chunk_that_does_not_fit(tmp_path):
    files = resumable_chunks(tmp_path / "c", KEY)
    compute_chunks(4, 2, _squares(), files)
    files.save_arrays(1, {"i": np.array([7, 8]), "sq": np.array([49, 64])})  # not the items 2:4
    calls: list[int] = []
    got = compute_chunks(4, 2, _squares(calls), files,
                         accept=lambda start, stop, a: np.array_equal(a["i"], np.arange(start, stop)))
    assert calls == [2] and got[1]["i"].tolist() == [2, 3]
    assert files.load_arrays(1)["i"].tolist() == [2, 3]  # the recomputed chunk replaced the bad one


def test_without_files_everything_is_computed(tmp_path):
    with pytest.raises(ValueError, match="differs"):  # files named by their first item need the same chunk size
        compute_chunks(4, 2, _squares(), ChunkFiles(tmp_path, "c_{start}.npz", chunk_size=3))
    calls: list[int] = []
    seen: list[tuple[int, int, bool]] = []
    compute_chunks(5, 2, _squares(calls), None, on_chunk=lambda s, e, reused: seen.append((s, e, reused)))
    assert calls == [0, 2, 4] and seen == [(0, 2, False), (2, 4, False), (4, 5, False)]


def test_file_patterns_and_json_chunks(tmp_path):
    by_start = ChunkFiles(tmp_path, "chunk_{start:08d}.npz", chunk_size=256)
    assert by_start.path(2).name == "chunk_00000512.npz"
    rounds = ChunkFiles(tmp_path, "pseudo_labels/round_{k}.csv")
    assert rounds.path(3) == tmp_path / "pseudo_labels" / "round_3.csv"
    js = ChunkFiles(tmp_path / "w", "chunks/{k:06d}.json")
    assert js.load_json(0) is None
    js.save_json(0, [[True, "", [1.0, 2.0, 3.0, 4.0]]])
    assert js.load_json(0) == [[True, "", [1.0, 2.0, 3.0, 4.0]]]
    js.path(1).write_text("[[tru")  # damaged: dropped, to be computed again
    assert js.load_json(1) is None and not js.path(1).exists()
    js.discard()
    assert not (tmp_path / "w").exists()


def test_claim_output_folder(tmp_path):
    """A stage's whole-dataset folder: new/empty -> go; same parameters -> go (complete or not); anything else is
    refused, naming the folder."""
    from speedpose.io_utils import atomic_write_json
    from speedpose.resumable import claim_output_folder

    out = tmp_path / "set"
    params = {"n": 3, "size": [96, 96]}
    assert claim_output_folder(out, "manifest.json", params, what="a crop set") is False  # absent
    out.mkdir()
    assert claim_output_folder(out, "manifest.json", params, what="a crop set") is False  # empty
    atomic_write_json(out / "manifest.json", {"params": params, "complete": False})
    assert claim_output_folder(out, "manifest.json", {"n": 3, "size": (96, 96)}, what="a crop set") is False
    atomic_write_json(out / "manifest.json", {"params": params, "complete": True})
    assert claim_output_folder(out, "manifest.json", params, what="a crop set") is True
    with pytest.raises(InputError, match=r"a crop set made with other parameters .*'n': 4.*: delete it"):
        claim_output_folder(out, "manifest.json", {"n": 4, "size": [96, 96]}, what="a crop set", another="delete it")
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("x")
    with pytest.raises(InputError, match="non-empty folder that is not a crop set"):
        claim_output_folder(other, "manifest.json", params, what="a crop set")
    with pytest.raises(InputError, match="exists and is not a folder"):
        claim_output_folder(other / "x.txt", "manifest.json", params, what="a crop set")
