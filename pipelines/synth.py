"""Stage `synth`: render a SPEED+-format stand-in dataset (the embedded default data of speedpose).

Output, exactly the SPEED+ layout plus the separately distributed masks::

    OUT/camera.json
    OUT/synthetic/{train.json, validation.json, images/imgNNNNNN.jpg, masks/imgNNNNNN.jpg}
    OUT/lightbox/{test.json, images/, masks/}
    OUT/sunlamp/{test.json, images/, masks/}
    OUT/.speedpose-synth.json      the stage's manifest (parameters, completion)

Images are 1920x1200 8-bit grayscale JPEGs rendered through the SPEED+ camera (distortion included); masks are 0/255
JPEGs (quality 100: threshold at 128 to read them back exactly).  Synthetic image numbers are a random permutation
shared by train and validation (as in SPEED+, not contiguous per split); like SPEED+, the upper half of the numbers is
rendered over the Earth.

Deterministic: every image is a function of (seed, split, index) alone, whatever the number of workers.  Resumable:
images are written atomically, finished ones are skipped, labels are written last; a folder holding anything but this
stage's output with the same parameters is refused.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from speedpose.camera import Camera, speedplus_camera
from speedpose.errors import InputError
from speedpose.io_utils import atomic_path, atomic_write_json, sha256_file
from speedpose.labels import PoseLabel, label_file, read_labels, write_labels
from speedpose.resumable import claim_output_folder
from speedpose.tango import keypoint_box, project_keypoints

MANIFEST = ".speedpose-synth.json"
#: bumped whenever the rendered bytes change for the same parameters: an output made by another version is not
#: resumed (it would mix two looks)
FORMAT_VERSION = 2
#: (split, domain, label-file split) in rendering order
SPLITS = (("train", "synthetic", "train"), ("validation", "synthetic", "validation"),
          ("lightbox", "lightbox", None), ("sunlamp", "sunlamp", None))
POSE_KEYS = tuple(s[0] for s in SPLITS)
JPEG_QUALITY = 95
#: below this many images per worker, starting worker processes costs more than it saves: render in-process
MIN_IMAGES_PER_WORKER = 8
MASK_JPEG_QUALITY = 100
#: decimals of the written labels (SPEED+: 6 in synthetic, 12 in lightbox/sunlamp); images use the rounded values
LABEL_DECIMALS = {"synthetic": 6, "lightbox": 12, "sunlamp": 12}


@dataclass(frozen=True)
class Job:
    """One image to render: where it goes, its pose and the seed words of its randomness."""

    domain: str
    filename: str
    q_wxyz: tuple[float, float, float, float]
    r_cam_m: tuple[float, float, float]
    seed_words: tuple[int, ...]
    earth: bool | None


def plan(train: int, val: int, lightbox: int, sunlamp: int, seed: int = 0,
         poses: dict[str, Path] | None = None) -> dict[str, list[tuple[PoseLabel, Job]]]:
    """Labels and render jobs of every split (no rendering, no writing).

    Args:
        train, val, lightbox, sunlamp: number of images per split.
        seed: the dataset's seed.
        poses: optional label files per split key (``train``, ``validation``, ``lightbox``, ``sunlamp``): the split
            is rendered at the first N poses of that file, under its file names.
    Returns:
        ``{split: [(label, job), ...]}``.
    """
    from speedpose.render.poses import sample_poses

    counts = {"train": train, "validation": val, "lightbox": lightbox, "sunlamp": sunlamp}
    for k, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise InputError(f"number of {k} images: expected an integer >= 0, got {n!r}")
    poses = dict(poses or {})
    unknown = sorted(set(poses) - set(POSE_KEYS))
    if unknown:
        raise InputError(f"poses: unknown split(s) {', '.join(unknown)}; expected some of {', '.join(POSE_KEYS)}")
    n_syn = train + val
    numbers = np.random.default_rng([seed, 7]).permutation(n_syn) + 1
    out: dict[str, list[tuple[PoseLabel, Job]]] = {}
    for split_i, (split, domain, _) in enumerate(SPLITS):
        n = counts[split]
        dec = LABEL_DECIMALS[domain]
        if split in poses:
            path = Path(poses[split])
            given = read_labels(path, require_poses=True)
            if n > len(given):
                raise InputError(f"{n} {split} images requested but the pose file holds {len(given)} labels", path)
            names = [lab.filename for lab in given[:n]]
            q = np.array([lab.q_wxyz for lab in given[:n]]).reshape(n, 4)
            r = np.array([lab.r_cam_m for lab in given[:n]]).reshape(n, 3)
            earth: list[bool | None] = [None] * n
        else:
            q, r = sample_poses(n, np.random.default_rng([seed, 1000 + split_i]), domain)
            if domain == "synthetic":
                nums = numbers[:train] if split == "train" else numbers[train:]
                names = [f"img{k:06d}.jpg" for k in nums]
                earth = [bool(k > n_syn / 2) for k in nums]
            else:
                names = [f"img{k:06d}.jpg" for k in range(1, n + 1)]
                earth = [None] * n
        q, r = np.round(q, dec), np.round(r, dec)
        out[split] = [(PoseLabel(name, q[i], r[i]),
                       Job(domain, name, tuple(map(float, q[i])), tuple(map(float, r[i])), (seed, split_i, i),
                           earth[i]))
                      for i, name in enumerate(names)]
    syn_names = [lab.filename for s in ("train", "validation") for lab, _ in out[s]]
    if len(set(syn_names)) != len(syn_names):
        raise InputError("synthetic train and validation share file names (they share one images/ folder)")
    return out


def _params(train, val, lightbox, sunlamp, seed, poses) -> dict:
    return {"format": FORMAT_VERSION, "train": train, "validation": val, "lightbox": lightbox, "sunlamp": sunlamp,
            "seed": seed, "poses": {k: sha256_file(v) for k, v in sorted((poses or {}).items())}}


def _claim(out: Path, params: dict) -> bool:
    """``out`` is empty or this stage's output with the same parameters; True when complete."""
    return claim_output_folder(out, MANIFEST, params, what="a `speedpose synth` output",
                               another="choose an empty or new folder")


# ------------------------------------------------------------------------------------------------ workers
_WORKER: dict = {}


def _init_worker(warp, root: str) -> None:
    from speedpose.render.backgrounds import noise_bank
    from speedpose.render.distortion import register_warp

    _WORKER["warp"] = register_warp(warp)
    _WORKER["root"] = Path(root)
    noise_bank()


def _init_pool_worker(warp, root: str) -> None:
    cv2.setNumThreads(1)  # the pool parallelises over images
    _init_worker(warp, root)


def _render(job: Job) -> dict:
    from speedpose.render.domains import render_frame

    import resource

    cpu0 = time.process_time()
    root: Path = _WORKER["root"]
    rng = np.random.default_rng(list(job.seed_words))
    frame = render_frame(_WORKER["warp"], np.array(job.q_wxyz), np.array(job.r_cam_m), job.domain, rng, job.earth)
    for sub, img, quality in (("masks", frame.mask, MASK_JPEG_QUALITY), ("images", frame.image, JPEG_QUALITY)):
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:  # pragma: no cover - OpenCV failure
            raise RuntimeError(f"JPEG encoding failed for {job.domain}/{sub}/{job.filename}")
        with atomic_path(root / job.domain / sub / job.filename) as tmp:
            tmp.write_bytes(buf.tobytes())
            tmp.chmod(0o644)  # a dataset is shared: mkstemp's 0600 would hide it from other users
    return {"domain": job.domain, "filename": job.filename, "earth": frame.earth,
            "visible_keypoints": int(frame.keypoints_visible.sum()), "cpu_s": time.process_time() - cpu0,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "pid": os.getpid()}


def _done(root: Path, job: Job) -> bool:
    return all((root / job.domain / sub / job.filename).is_file() for sub in ("images", "masks"))


def _remove_stale_temporaries(root: Path) -> None:
    for domain in ("synthetic", "lightbox", "sunlamp"):
        for sub in ("images", "masks"):
            d = root / domain / sub
            if d.is_dir():
                for p in d.glob(".*.tmp"):
                    p.unlink(missing_ok=True)


def run(out: Path, train: int, val: int, lightbox: int, sunlamp: int, *, seed: int = 0, workers: int = 0,
        poses: dict[str, Path] | None = None, progress: bool = True) -> dict:
    """Render the stand-in dataset into ``out`` (see the module docstring); resumes an interrupted run.

    Args:
        out: output folder (created; must be empty or a previous output of this stage with the same parameters).
        train, val, lightbox, sunlamp: images per split.
        seed: dataset seed (same seed and parameters -> the same bytes).
        workers: processes (0 = all cores; 1 = in this process).  Small jobs (fewer than
            :data:`MIN_IMAGES_PER_WORKER` images per worker) use fewer workers, down to rendering in this process.
        poses: optional pose files per split key (``train``, ``validation``, ``lightbox``, ``sunlamp``).
        progress: show a tqdm progress bar.
    Returns:
        A summary: counts per split, images rendered now and skipped, seconds, images per second, the fraction of
        truncated images (a keypoint outside the frame) and of Earth backgrounds, the number of rendering processes,
        their CPU seconds per image and their largest peak resident memory.
    """
    out = Path(out)
    t0 = time.perf_counter()
    params = _params(train, val, lightbox, sunlamp, seed, poses)
    jobs_by_split = plan(train, val, lightbox, sunlamp, seed, poses)
    complete = _claim(out, params)
    camera = speedplus_camera()
    if not complete:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / MANIFEST, {"generator": "speedpose synth", "params": params, "complete": False})
        atomic_write_json(out / "camera.json", camera.to_json_dict())
        _remove_stale_temporaries(out)
    jobs = [job for split in jobs_by_split.values() for _, job in split]
    todo = [job for job in jobs if not _done(out, job)]
    results: list[dict] = []
    if todo:
        n_workers = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) \
            if workers == 0 else int(workers)
        if n_workers < 1:
            raise InputError(f"workers: expected 0 (all cores) or a positive number, got {workers}")
        n_workers = max(1, min(n_workers, len(todo) // MIN_IMAGES_PER_WORKER))
        bar = tqdm(total=len(todo), desc="synth", unit="img", disable=not progress)
        try:
            from speedpose.render.distortion import distortion_warp

            warp = distortion_warp(camera)
            if n_workers == 1:
                _init_worker(warp, str(out))
                for job in todo:
                    results.append(_render(job))
                    bar.update()
            else:
                # forkserver, not fork: a process that has run torch, OpenBLAS or OpenCV threads can deadlock its
                # forked children (seen in a test session); the warp travels to the workers pickled (18 MB)
                ctx = mp.get_context("forkserver")
                # the server imports the renderer once; workers fork from it (no effect if it already runs)
                ctx.set_forkserver_preload(["pipelines.synth", "speedpose.render"])
                with ctx.Pool(n_workers, initializer=_init_pool_worker, initargs=(warp, str(out))) as pool:
                    for res in pool.imap_unordered(_render, todo, chunksize=1):
                        results.append(res)
                        bar.update()
        finally:
            bar.close()
    if not complete:  # a finished dataset is left untouched (rewriting its labels would outdate preprocessing)
        for split, domain, file_split in SPLITS:  # labels last: a dataset with label files is a finished one
            write_labels(label_file(out, domain, file_split), [lab for lab, _ in jobs_by_split[split]])
        atomic_write_json(out / MANIFEST, {"generator": "speedpose synth", "params": params, "complete": True})
    seconds = time.perf_counter() - t0
    return _summary(out, jobs_by_split, camera, results, len(jobs) - len(todo), seconds)


def _summary(out: Path, jobs_by_split, camera: Camera, results: list[dict], skipped: int, seconds: float) -> dict:
    counts = {split: len(v) for split, v in jobs_by_split.items()}
    trunc = {}
    for split, items in jobs_by_split.items():
        if items:
            q = np.array([lab.q_wxyz for lab, _ in items])
            r = np.array([lab.r_cam_m for lab, _ in items])
            box = keypoint_box(project_keypoints(camera, q, r), camera.width, camera.height)
            trunc[split] = float(box.truncated.mean())
    rendered = len(results)
    return {"out": str(out), "images": counts, "rendered": rendered, "skipped": skipped,
            "seconds": round(seconds, 3), "images_per_second": round(rendered / seconds, 3) if rendered else None,
            "truncated_fraction": trunc,
            "earth_fraction": (sum(r["earth"] for r in results) / rendered) if rendered else None,
            "workers": len({r["pid"] for r in results}),
            "cpu_s_per_image": (sum(r["cpu_s"] for r in results) / rendered) if rendered else None,
            "peak_rss_mib_per_process": max((r["peak_rss_mib"] for r in results), default=None)}


def format_summary(summary: dict) -> str:
    """A few lines for the terminal."""
    lines = [f"stand-in SPEED+ written to {summary['out']}"]
    lines.append("images: " + ", ".join(f"{k} {v}" for k, v in summary["images"].items()))
    ips = summary["images_per_second"]
    lines.append(f"rendered {summary['rendered']} now, {summary['skipped']} already present; {summary['seconds']} s"
                 + (f" ({ips} images/s)" if ips else ""))
    return "\n".join(lines)

