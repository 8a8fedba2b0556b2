"""Resumable chunked work on disk: a folder of chunk files and the key of the inputs they were computed from.

Layout::

    <folder>/key.json      the key: a JSON-able dict of everything the results depend on (run, checkpoint, config,
                           dataset fingerprint, chunk size ...)
    <folder>/<chunk file>  one file per finished chunk, named by a pattern (``chunk_{k:06d}.npz``)

The rules, the same for every user (preprocessing, the inference caches of evaluate/submit, the benchmark
evaluation, adaptation):

* :func:`open_keyed` with the key the folder already holds keeps its finished chunks: an interrupted run resumes;
* another key (or none, or an unreadable key.json) either empties the folder and starts afresh
  (``on_mismatch="discard"``: a cache) or raises :class:`~speedpose.errors.InputError`
  (``on_mismatch="error"``: the folder holds work a user may want; the message says what to do);
* a chunk file appears complete or not at all: it is written under a temporary name in the same folder and renamed
  (:func:`speedpose.io_utils.atomic_path`), so neither a reader nor a resumed run ever sees half a chunk.

:class:`ChunkFiles` reads and writes the chunk files; :func:`resumable_chunks` opens both; :func:`compute_chunks`
is the usual loop (load the finished chunks, compute and save the others).  :func:`claim_output_folder` is the rule
of the stages that write a whole dataset with a manifest (``synth``, the crop sets): same parameters or refuse.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping

import numpy as np

from speedpose.errors import InputError
from speedpose.io_utils import atomic_path, atomic_write_json, read_json

KEY_NAME = "key.json"
OnMismatch = Literal["discard", "error"]
#: the content of one array chunk: name -> array
Arrays = dict[str, np.ndarray]


def _is_temporary(path: Path) -> bool:
    """A leftover of an interrupted atomic write (:func:`speedpose.io_utils.atomic_path` names)."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def _as_json(obj: Any) -> Any:
    """``obj`` as JSON gives it back (tuples become lists): what a key file holds once written."""
    return json.loads(json.dumps(obj))


def _read_key(key_file: Path) -> Any:
    try:
        return read_json(key_file)
    except InputError:
        return None  # missing or unreadable: matches no key


def open_keyed(folder: str | Path, key: Mapping[str, Any], *, on_mismatch: OnMismatch = "discard",
               key_name: str = KEY_NAME, hint: str = "") -> bool:
    """Make ``folder`` the home of the work described by ``key``; True when it already was (a resumption).

    Args:
        folder: the work folder (created when absent).
        key: JSON-able description of the inputs; compared with ``folder/key_name`` for equality after a JSON round
            trip (tuples and lists are the same).
        on_mismatch: ``discard``: a folder of another key, or without one, is emptied and started afresh;
            ``error``: an :class:`InputError` instead (an empty folder, or one holding only leftovers of interrupted
            atomic writes, is started afresh).
        key_name: the key file's name inside ``folder``.
        hint: appended to the error message (what the user should do).
    Raises:
        InputError: ``on_mismatch="error"`` and the folder holds work of another key, or files and no key.
    """
    if on_mismatch not in ("discard", "error"):
        raise ValueError(f"on_mismatch: expected 'discard' or 'error', got {on_mismatch!r}")
    folder = Path(folder)
    key_file = folder / key_name
    wanted = _as_json(key)
    if folder.is_dir():
        found = _read_key(key_file)
        if found == wanted:
            return True
        if on_mismatch == "error":
            if key_file.exists():
                raise InputError(f"holds work computed from other inputs or settings ({key_name} differs)"
                                 + (f"; {hint}" if hint else ""), folder)
            if any(not _is_temporary(p) for p in folder.iterdir()):
                raise InputError(f"holds files but no {key_name}: not a folder of this work"
                                 + (f"; {hint}" if hint else ""), folder)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(key_file, wanted)
    return False


def claim_output_folder(out: str | Path, manifest_name: str, params: Mapping[str, Any], *, what: str,
                        another: str = "choose another folder") -> bool:
    """Make sure ``out`` may receive the output ``what`` made with ``params``: absent, empty, or a folder whose
    manifest (``out/manifest_name``, a JSON dict with ``params`` and ``complete``) records the same parameters.
    Returns True when that output is already complete (a re-run has nothing to do).

    Raises:
        InputError: ``out`` is a file, a non-empty folder without the manifest, or ``what`` made with other
            parameters (the message shows both and says ``another``).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("output path exists and is not a folder", out)
    if not out.exists() or not any(out.iterdir()):
        return False
    manifest = out / manifest_name
    if not manifest.is_file():
        raise InputError(f"refusing to write into a non-empty folder that is not {what} ({another})", out)
    data = read_json(manifest)
    old = data.get("params") if isinstance(data, dict) else None
    if old != _as_json(params):
        raise InputError(f"folder holds {what} made with other parameters ({old}); requested {dict(params)}: "
                         f"{another}", out)
    return bool(data.get("complete"))


class ChunkFiles:
    """Numbered chunk files in one folder, each written atomically.

    Args:
        folder: where the files live.
        pattern: file name (may hold a sub-folder) as a :meth:`str.format` pattern of ``k`` (the chunk number) and
            ``start`` (``k * chunk_size``, when ``chunk_size`` is given): ``"chunk_{k:06d}.npz"``,
            ``"chunk_{start:08d}.npz"``, ``"pseudo_labels/round_{k}.csv"``.
        chunk_size: items per chunk (only to name files by their first item).
        resumed: True when the folder was opened with the key it already held (see :func:`resumable_chunks`).
    """

    def __init__(self, folder: str | Path, pattern: str = "chunk_{k:06d}.npz", chunk_size: int | None = None,
                 resumed: bool = False):
        self.folder = Path(folder)
        self.pattern = pattern
        self.chunk_size = chunk_size
        self.resumed = resumed

    def path(self, k: int) -> Path:
        """The file of chunk ``k``."""
        start = None if self.chunk_size is None else k * self.chunk_size
        return self.folder / self.pattern.format(k=k, start=start)

    def is_done(self, k: int) -> bool:
        """True when chunk ``k`` was written (completely: files appear only by rename)."""
        return self.path(k).is_file()

    @contextmanager
    def writing(self, k: int) -> Iterator[Path]:
        """A temporary path to write chunk ``k`` to; renamed onto :meth:`path` on success, removed on error."""
        with atomic_path(self.path(k)) as tmp:
            yield tmp

    def save_arrays(self, k: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Write chunk ``k`` as an ``.npz`` of ``arrays``."""
        with self.writing(k) as tmp, open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a name
            np.savez(fh, **arrays)

    def load_arrays(self, k: int) -> dict[str, np.ndarray] | None:
        """The arrays of chunk ``k``; None when it is not done, or unreadable (the file is then removed)."""
        f = self.path(k)
        if not f.is_file():
            return None
        try:
            with np.load(f) as z:  # not an .npz (a bare .npy): no context manager, AttributeError/TypeError
                return {name: z[name] for name in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, AttributeError, TypeError):
            f.unlink(missing_ok=True)  # damaged outside our atomic writes (disk, copy): computed again
            return None

    def save_json(self, k: int, obj: Any) -> None:
        """Write chunk ``k`` as JSON."""
        atomic_write_json(self.path(k), obj, indent=None)

    def load_json(self, k: int) -> Any | None:
        """The JSON content of chunk ``k``; None when it is not done, or unreadable (the file is then removed)."""
        f = self.path(k)
        if not f.is_file():
            return None
        try:
            return read_json(f)
        except InputError:
            f.unlink(missing_ok=True)
            return None

    def discard(self) -> None:
        """Remove the folder and everything in it (the key too)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def resumable_chunks(folder: str | Path, key: Mapping[str, Any], *, pattern: str = "chunk_{k:06d}.npz",
                     chunk_size: int | None = None, on_mismatch: OnMismatch = "discard", key_name: str = KEY_NAME,
                     hint: str = "") -> ChunkFiles:
    """:func:`open_keyed` then the folder's :class:`ChunkFiles` (``.resumed`` says whether it kept earlier work)."""
    resumed = open_keyed(folder, key, on_mismatch=on_mismatch, key_name=key_name, hint=hint)
    return ChunkFiles(folder, pattern, chunk_size, resumed)


def chunk_bounds(n: int, chunk_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of ``n`` items in chunks of ``chunk_size`` (the last one may be shorter)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected at least 1, got {chunk_size}")
    return [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]


def compute_chunks(n: int, chunk_size: int, compute: Callable[[int, int], Mapping[str, np.ndarray]],
                   files: ChunkFiles | None = None, *,
                   accept: Callable[[int, int, Arrays], bool] | None = None,
                   on_chunk: Callable[[int, int, bool], None] | None = None) -> list[Arrays]:
    """The arrays of every chunk of ``n`` items, in order: read back when finished, else computed and saved.

    Args:
        compute: ``compute(start, stop) -> {name: array}`` for the items ``start:stop``.
        files: where finished chunks are kept (None: compute everything, keep nothing).
        accept: ``accept(start, stop, arrays) -> bool``: whether a finished chunk read back fits (e.g. it holds
            the expected item indices); a chunk it refuses is computed again.
        on_chunk: ``on_chunk(start, stop, reused)`` after each chunk (progress bars).
    """
    if files is not None and files.chunk_size not in (None, chunk_size):
        raise ValueError(f"chunk_size {chunk_size} differs from the {files.chunk_size} the files are named with")
    out: list[Arrays] = []
    for k, (start, stop) in enumerate(chunk_bounds(n, chunk_size)):
        arrays = files.load_arrays(k) if files is not None else None
        reused = arrays is not None and (accept is None or accept(start, stop, arrays))
        if not reused:
            arrays = {name: np.asarray(a) for name, a in compute(start, stop).items()}
            if files is not None:
                files.save_arrays(k, arrays)
        out.append(arrays)
        if on_chunk is not None:
            on_chunk(start, stop, reused)
    return out


def concatenate_chunks(parts: list[Arrays]) -> Arrays:
    """One array per name from the chunks' arrays (``parts`` must not be empty)."""
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
