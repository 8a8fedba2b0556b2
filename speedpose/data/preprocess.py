"""Preprocessing of a SPEED+ root: per domain/split, an index table, resized images and a manifest (layout in
:mod:`speedpose.data.loader`); the library side of the ``speedpose preprocess`` stage, also run on demand by
:func:`open_or_preprocess` for the stages that need a preprocessed split.

Caching: each split's manifest records two fingerprints built from file sizes and modification times (like make):
``images`` (the ordered image/mask files, the size, the resize method, the format version) and ``inputs`` (that
plus the label file, camera.json, the speedpose version and ``skip_bad``).  Same ``inputs``: nothing is done (cost:
parsing the labels and one stat per file).  Same ``images`` only (a label file touched or edited): the index is rebuilt,
the images are kept.  Otherwise everything is recomputed; ``force`` always does.
Resuming: image rows are written in chunks to ``<split>/.partial/`` (:mod:`speedpose.resumable`: ``work.json`` is the
key, ``chunks/<k>.json`` the finished chunks, ``images.npy`` the rows they filled); an interrupted run picks up the
finished chunks when it is started again with the same inputs.
Failure: the labels of every split, then the image headers of every split to recompute, are validated before anything
is written; a decoding failure found later removes that split's partial work (splits finished before it stay, complete).
A split's outputs are swapped in and its manifest written last.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from speedpose import __version__
from speedpose.camera import Camera, load_camera
from speedpose.data.base import PoseRecords, Reject
from speedpose.data.image_store import create_store, init_worker, prepare_chunk, store_offset
from speedpose.data.index import MASK_BOX_COLUMNS, build_index, write_index
from speedpose.data.loader import (IMAGES, INDEX, MANIFEST, PREP_FORMAT, REJECTS, SCAN, PreprocessedSplit,
                                   default_prep_dir, open_split, split_dir)
from speedpose.data.speedplus import SPLITS, SpeedplusAdapter, available_splits
from speedpose.errors import InputError
from speedpose.io_utils import atomic_path, atomic_write_json, atomic_write_text, read_json
from speedpose.labels import DOMAINS
from speedpose.resumable import chunk_bounds, resumable_chunks

#: images per task sent to a worker (and per resumable chunk)
CHUNK = 32
#: how the stored images are made (part of the images fingerprint)
RESIZE_METHOD = "cv2 JPEG DCT-scaled grayscale decode + INTER_AREA"
DEFAULT_SIZE = (768, 512)


@dataclass(frozen=True)
class SplitSummary:
    """What was done for one split."""

    domain: str
    split: str
    records: int
    rejected: int
    labelled: int
    truncated: int
    action: str  # "up to date", "index rebuilt", "computed"
    seconds: float
    directory: Path


def default_workers() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# ------------------------------------------------------------------------------------------------ fingerprints
def _stat(path: Path | None) -> list:
    if path is None:
        return [None]
    try:
        st = path.stat()
    except OSError:
        return ["missing"]
    return [st.st_size, st.st_mtime_ns]


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:32]


def images_fingerprint(records: PoseRecords, size: tuple[int, int]) -> str:
    """Depends on the ordered image (and mask) files' names, sizes and modification times, the output size and
    the format version."""
    masks = records.mask_paths or [None] * len(records)
    files = [[n] + _stat(p) + _stat(m) for n, p, m in zip(records.filenames, records.image_paths, masks)]
    return _digest({"format": PREP_FORMAT, "method": RESIZE_METHOD, "size": list(size), "files": files,
                    "camera_size": [records.camera.width, records.camera.height]})


def inputs_fingerprint(images_fp: str, records: PoseRecords, camera_path: Path, skip_bad: bool) -> str:
    """``images_fp`` plus the label file, camera.json, the code version and ``skip_bad``."""
    return _digest({"images": images_fp, "labels": _stat(records.label_path), "camera": _stat(camera_path),
                    "skip_bad": skip_bad, "version": __version__})


# ------------------------------------------------------------------------------------------------ workers
class WorkerPool:
    """A process pool started on first use and shared by the splits of one run.

    Spawned, not forked: forking a parent whose OpenCV/OpenMP thread pools are live can deadlock the children.  The
    workers import only numpy, OpenCV and :mod:`speedpose.data.image_store` (no torch); as with any spawned pool, a
    script that calls :func:`preprocess_speedplus` needs an ``if __name__ == "__main__":`` guard.
    """

    def __init__(self, workers: int):
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def get(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=init_worker)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class _ChunkFailure(Exception):
    pass


def _prepare_images(records: PoseRecords, partial: Path, images_fp: str, size: tuple[int, int],
                    pool_holder: WorkerPool, skip_bad: bool, progress: bool) -> pd.DataFrame:
    """Fill ``partial/images.npy`` (resuming finished chunks) and return the scan table (one row per record)."""
    n = len(records)
    store = partial / IMAGES
    if not store.is_file():  # chunk records without the image rows they describe are worthless
        shutil.rmtree(partial, ignore_errors=True)
    done = resumable_chunks(partial, {"images": images_fp, "n": n, "size": list(size), "chunk": CHUNK},
                            key_name="work.json", pattern="chunks/{k:06d}.json")
    if not done.resumed:
        with atomic_path(store) as tmp:  # the store appears complete or not at all
            create_store(tmp, n, size)
    offset, _ = store_offset(store)
    cam = records.camera
    full_size = (cam.width, cam.height)
    masks = [str(m) for m in records.mask_paths] if records.mask_paths is not None else [None] * n
    chunks = [(k, s, e) for k, (s, e) in enumerate(chunk_bounds(n, CHUNK))]
    results: dict[int, list] = {}
    for k, _, _ in chunks:
        res = done.load_json(k)
        if res is not None:
            results[k] = res
    todo = [c for c in chunks if c[0] not in results]
    done_imgs = sum(len(v) for v in results.values())

    def args(c):
        k, s, e = c
        return (str(store), offset, s, [str(p) for p in records.image_paths[s:e]], masks[s:e], full_size, size)

    def accept(k: int, res: list) -> None:
        if not skip_bad:
            for j, (ok, problem, _) in enumerate(res):
                if not ok:
                    i = chunks[k][1] + j
                    raise _ChunkFailure(i, problem)
        done.save_json(k, res)
        results[k] = res

    bar = tqdm(total=n, initial=done_imgs, desc=f"{records.domain}/{records.split}", unit="img",
               disable=not progress, leave=False)
    try:
        workers = pool_holder.workers
        if workers <= 1 or len(todo) <= 1:
            for c in todo:
                accept(c[0], prepare_chunk(*args(c)))
                bar.update(c[2] - c[1])
        else:
            pool = pool_holder.get()
            pending = {}
            it = iter(todo)
            try:
                for c in it:  # a bounded number of tasks in flight (memory flat in N)
                    pending[pool.submit(prepare_chunk, *args(c))] = c
                    if len(pending) >= 4 * workers:
                        break
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        c = pending.pop(fut)
                        accept(c[0], fut.result())
                        bar.update(c[2] - c[1])
                        nxt = next(it, None)
                        if nxt is not None:
                            pending[pool.submit(prepare_chunk, *args(nxt))] = nxt
            except BaseException:
                for fut in pending:
                    fut.cancel()
                raise
    except _ChunkFailure as exc:
        i, problem = exc.args
        bar.close()
        done.discard()
        for d in (partial.parent, partial.parent.parent):  # the split's folders when this run made them
            try:
                d.rmdir()
            except OSError:
                break
        raise InputError(f"image {records.image_paths[i]}: {problem}", records.label_path,
                         f"{records.domain}/{records.split} index {records.source_index[i]} "
                         f"({records.filenames[i]})") from None
    finally:
        bar.close()

    flat = [r for k, _, _ in chunks for r in results[k]]
    boxes = np.array([r[2] for r in flat], dtype=np.float64).reshape(n, 4)
    scan = pd.DataFrame({"filename": pd.array(records.filenames, dtype="string"),
                         "image_row": np.arange(n, dtype=np.int64),
                         "ok": np.array([bool(r[0]) for r in flat], dtype=bool).reshape(n),
                         "problem": pd.array([r[1] for r in flat], dtype="string")})
    for j, c in enumerate(MASK_BOX_COLUMNS):
        scan[c] = boxes[:, j]
    return scan


# ------------------------------------------------------------------------------------------------ one split
def _write_rejects(path: Path, rejects: list[Reject]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["domain", "split", "index", "filename", "reason"])
    for r in rejects:
        w.writerow([r.domain, r.split, r.index, r.filename, r.reason])
    atomic_write_text(path, buf.getvalue())


def _read_manifest(path: Path) -> dict | None:
    try:
        m = read_json(path)
    except InputError:
        return None
    return m if isinstance(m, dict) and m.get("format") == PREP_FORMAT else None


@dataclass
class SplitPlan:
    """A split's label-validated records, its fingerprints and its previous manifest (None when absent/forced)."""

    records: PoseRecords
    directory: Path
    images_fp: str
    inputs_fp: str
    old: dict | None

    @property
    def have_outputs(self) -> bool:
        return self.old is not None and all((self.directory / f).is_file() for f in (INDEX, IMAGES, SCAN, REJECTS))

    @property
    def up_to_date(self) -> bool:
        return self.have_outputs and self.old["fingerprints"]["inputs"] == self.inputs_fp

    @property
    def images_reusable(self) -> bool:
        return self.have_outputs and self.old["fingerprints"]["images"] == self.images_fp

    def summary(self, seconds: float = 0.0) -> SplitSummary:
        c = self.old["counts"]
        return SplitSummary(self.records.domain, self.records.split, c["records"], c["rejected"], c["labelled"],
                            c["truncated"], "up to date", seconds, self.directory)


def plan_split(records: PoseRecords, out: Path, camera_path: Path, size: tuple[int, int], skip_bad: bool,
               force: bool) -> SplitPlan:
    """Fingerprint a split from its label-validated records (stat calls only, no image is opened)."""
    images_fp = images_fingerprint(records, size)
    sdir = split_dir(out, records.domain, records.split)
    return SplitPlan(records, sdir, images_fp, inputs_fingerprint(images_fp, records, camera_path, skip_bad),
                     None if force else _read_manifest(sdir / MANIFEST))


def process_split(plan: SplitPlan, records: PoseRecords, camera: Camera, root: Path, size: tuple[int, int],
                  pool: WorkerPool, skip_bad: bool, progress: bool) -> SplitSummary:
    """Write one split's outputs (see the module docstring).

    Args:
        plan: from :func:`plan_split`.
        records: ``plan.records`` after the image header checks (bad ones dropped with ``skip_bad``).
    """
    t0 = time.perf_counter()
    sdir = plan.directory
    images_fp, inputs_fp = plan.images_fp, plan.inputs_fp
    partial = sdir / ".partial"
    scan = None
    if plan.images_reusable:
        scan = pd.read_parquet(sdir / SCAN)
        if scan["filename"].tolist() != records.filenames:  # cannot happen with unchanged files; never trust it
            scan = None
    if scan is not None:
        action = "index rebuilt"
        reuse_images = True
    else:
        scan = _prepare_images(records, partial, images_fp, size, pool, skip_bad, progress)
        action = "computed"
        reuse_images = False

    ok = scan["ok"].to_numpy(dtype=bool)
    if not skip_bad and not ok.all():  # reachable when images are reused after --skip-bad was turned off
        i = int(np.flatnonzero(~ok)[0])
        raise InputError(f"image {records.image_paths[i]}: {scan['problem'].iat[i]}", records.label_path,
                         f"{records.domain}/{records.split} index {records.source_index[i]} "
                         f"({records.filenames[i]})")
    rejects = list(records.rejects) + [
        Reject(records.domain, records.split, int(records.source_index[i]), records.filenames[i],
               f"image {records.image_paths[i]}: {scan['problem'].iat[i]}") for i in np.flatnonzero(~ok)]
    rejects.sort(key=lambda r: r.index)
    keep = np.flatnonzero(ok)
    good = records.subset(keep)
    masks = scan[MASK_BOX_COLUMNS].to_numpy(dtype=np.float64)[keep] if records.mask_paths is not None else None
    df = build_index(good, camera, scan["image_row"].to_numpy()[keep], masks)

    # swap the outputs in: invalidate the old manifest first, write the new one last
    partial.mkdir(parents=True, exist_ok=True)
    write_index(partial / INDEX, df)
    _write_rejects(partial / REJECTS, rejects)
    if not reuse_images:
        with atomic_path(partial / SCAN) as tmp:
            scan.to_parquet(tmp, index=False)
    (sdir / MANIFEST).unlink(missing_ok=True)
    names = [INDEX, REJECTS] + ([] if reuse_images else [IMAGES, SCAN])
    for name in names:
        os.replace(partial / name, sdir / name)
    counts = {"records": len(df), "rejected": len(rejects), "labelled": int(df["labelled"].sum()),
              "truncated": int(df["truncated"].fillna(False).sum()), "image_rows": len(scan)}
    seconds = time.perf_counter() - t0
    manifest = {
        "format": PREP_FORMAT, "speedpose_version": __version__, "domain": records.domain, "split": records.split,
        "root": str(root.resolve()), "label_file": str(records.label_path.relative_to(root)),
        "params": {"size": list(size), "skip_bad": skip_bad, "resize_method": RESIZE_METHOD},
        "fingerprints": {"inputs": inputs_fp, "images": images_fp},
        "camera": {"K": camera.K.tolist(), "dist": camera.dist.tolist(), "width": camera.width,
                   "height": camera.height},
        "has_masks": records.mask_paths is not None, "counts": counts,
        "files": {"index": INDEX, "images": IMAGES, "scan": SCAN, "rejects": REJECTS},
        "action": action, "seconds": round(seconds, 3), "workers": pool.workers,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(sdir / MANIFEST, manifest)
    shutil.rmtree(partial, ignore_errors=True)
    return SplitSummary(records.domain, records.split, counts["records"], counts["rejected"], counts["labelled"],
                        counts["truncated"], action, seconds, sdir)


# ------------------------------------------------------------------------------------------------ a root
def preprocess_speedplus(root: str | Path, *, out: str | Path | None = None,
                         domains: tuple[str, ...] | None = None, size: tuple[int, int] = DEFAULT_SIZE,
                         workers: int | None = None, skip_bad: bool = False, force: bool = False,
                         progress: bool = True) -> list[SplitSummary]:
    """Preprocess the splits of ``domains`` (default: every domain with a label file) under the SPEED+ ``root``.

    Args:
        root: SPEED+ root (holds camera.json).
        out: output folder (default :func:`speedpose.data.loader.default_prep_dir`, in the user's cache).
        domains: subset of synthetic, lightbox, sunlamp; a domain named here must have a label file.
        size: (W, H) of the stored images [px].
        workers: processes decoding images (default: the usable CPU cores).
        skip_bad: leave bad records out and list them in ``rejects.csv`` instead of stopping.
        force: recompute everything.
        progress: show tqdm bars.
    Raises:
        InputError: bad input (names the file, record index and problem); nothing of the failing split is left.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError("SPEED+ root not found (expected a folder with camera.json)", root)
    camera_path = root / "camera.json"
    camera = load_camera(camera_path)
    out = default_prep_dir(root) if out is None else Path(out)
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise InputError(f"--workers: expected at least 1, got {workers}")
    pairs = available_splits(root, domains if domains is not None else DOMAINS)
    if domains is not None:
        missing = [d for d in domains if not any(p[0] == d for p in pairs)]
        if missing:
            raise InputError(f"no label file for domain(s) {', '.join(missing)} (expected "
                             + "; ".join(f"{d}/{{{','.join(SPLITS[d])}}}.json" for d in missing) + ")", root)
    if not pairs:
        raise InputError("no label files (expected synthetic/train.json, synthetic/validation.json, "
                         "lightbox/test.json or sunlamp/test.json)", root)

    # every label record, then every image header of the splits to (re)compute, before anything is written;
    # a split that is up to date costs its label parsing and one stat per file
    adapters = {d: SpeedplusAdapter(root, d, camera=camera, skip_bad=skip_bad, check_images=False, progress=progress)
                for d in {p[0] for p in pairs}}
    plans = [plan_split(adapters[d].get_records(s), out, camera_path, size, skip_bad, force) for d, s in pairs]
    checked = {id(p): adapters[p.records.domain].check_record_images(p.records) for p in plans if not p.up_to_date}
    pool = WorkerPool(workers)
    try:
        return [p.summary() if p.up_to_date else
                process_split(p, checked[id(p)], camera, root, size, pool, skip_bad, progress) for p in plans]
    finally:
        pool.close()


def open_or_preprocess(root: str | Path, domain: str, split: str, prep_dir: str | Path | None = None,
                       progress: bool = True) -> PreprocessedSplit:
    """Open ``domain/split`` preprocessed in ``prep_dir`` (default: the root's cache folder); preprocess the
    domain first when it is not (with the defaults of ``speedpose preprocess``)."""
    where = Path(prep_dir) if prep_dir is not None else Path(root)
    try:
        return open_split(where, domain, split, root=root)
    except InputError:
        if progress:
            print(f"{domain}/{split} is not preprocessed yet: running `speedpose preprocess` for {domain}")
        preprocess_speedplus(root, out=prep_dir, domains=(domain,), progress=progress)
        return open_split(where, domain, split, root=root)
