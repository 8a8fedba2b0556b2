"""Stage `synth --crops`: render a crop set (:mod:`speedpose.data.crop_set`) for the crop network.

Each crop is what the pose pipeline's training sample would show: a SPEED+-like pose
(:func:`speedpose.render.sample_poses`), the keypoint box in the real camera, jittered as in training
(:func:`speedpose.pose.crops.jitter_box`), a virtual camera covering it rotated in-plane at random
(:func:`speedpose.pose.crops.crop_camera`), and the synthetic domain rendered straight through that camera
(:func:`speedpose.render.virtual_view.render_virtual_view`): about 8 ms per crop on one core instead of several hundred
for a 1920x1200 frame.

Deterministic: crop ``i`` is a function of (seed, i) alone, whatever the number of workers.  Resumable: chunks are
written atomically and finished ones skipped; the manifest says ``complete`` at the end.  A folder holding another
crop set is refused.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from speedpose.data.crop_set import CROP_SET_FORMAT, MANIFEST, chunk_done, write_chunk
from speedpose.errors import InputError
from speedpose.io_utils import atomic_write_json
from speedpose.resumable import claim_output_folder

CHUNK_SIZE = 500


@dataclass(frozen=True)
class CropSetParams:
    """What a crop set is rendered with (its manifest's ``params``).

    Attributes:
        crops: number of crops.
        size: crop side [px]; margin: framing margin (:class:`speedpose.pose.crops.CropSpec`).
        seed: the set's seed.
        box_scale, box_shift: box jitter (as ``augment.box_scale`` / ``augment.box_shift``).
        in_plane_deg: in-plane rotation of the virtual camera, uniform in +-this [deg].
        domain: rendering style (the training domain, ``synthetic``).
    """

    crops: int
    size: int = 96
    margin: float = 1.3
    seed: int = 0
    box_scale: tuple[float, float] = (0.9, 1.2)
    box_shift: float = 0.1
    in_plane_deg: float = 180.0
    domain: str = "synthetic"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["box_scale"] = list(self.box_scale)
        return {"format": CROP_SET_FORMAT, **d}


def default_crop_dir(root: str | Path, size: int) -> Path:
    """Where ``speedpose synth --crops`` puts a crop set of side ``size``: ``ROOT/synthetic/crops-<size>px``."""
    return Path(root) / "synthetic" / f"crops-{int(size)}px"


def _render_chunk(args: tuple[dict, int, int, int]) -> tuple[int, int, float]:
    """Render and write crops [start, stop) of chunk k. Returns (k, count, cpu seconds)."""
    from speedpose.camera import speedplus_camera
    from speedpose.geometry.rotations import quat_wxyz_to_matrix
    from speedpose.pose.crops import CropSpec, crop_camera, jitter_box
    from speedpose.render.poses import sample_poses
    from speedpose.render.virtual_view import render_virtual_view
    from speedpose.tango import keypoint_box, project_keypoints

    p, k, start, stop = args
    cpu0 = time.process_time()
    camera = speedplus_camera()
    spec = CropSpec(p["size"], p["margin"])
    q_all, r_all = sample_poses(p["crops"], np.random.default_rng([p["seed"], 2024]), p["domain"])
    images = np.zeros((stop - start, spec.size, spec.size), np.uint8)
    labels: dict[str, list] = {k_: [] for k_ in ("q_wxyz", "r_cam_m", "R_cam_virt", "focal_px", "box_xyxy", "earth",
                                                 "kp_visible")}
    for j, i in enumerate(range(start, stop)):
        rng = np.random.default_rng([p["seed"], 2025, i])
        q, r = q_all[i], r_all[i]
        box = keypoint_box(project_keypoints(camera, q, r), camera.width, camera.height).unclipped
        jittered = jitter_box(box, rng, spec, tuple(p["box_scale"]), p["box_shift"])
        vc = crop_camera(camera, jittered, spec, float(np.radians(rng.uniform(-1, 1) * p["in_plane_deg"])))
        frame = render_virtual_view(camera, vc, quat_wxyz_to_matrix(q), r, p["domain"], rng)
        images[j] = frame.image
        for key, value in (("q_wxyz", q), ("r_cam_m", r), ("R_cam_virt", vc.R_cam_virt), ("focal_px", vc.focal_px),
                           ("box_xyxy", box), ("earth", frame.earth), ("kp_visible", frame.keypoints_visible)):
            labels[key].append(value)
    write_chunk(p["out"], k, images, {key: np.asarray(v) for key, v in labels.items()})
    return k, stop - start, time.process_time() - cpu0


def _claim(out: Path, params: dict) -> bool:
    """``out`` is new or this stage's output with the same parameters; True when complete."""
    return claim_output_folder(out, MANIFEST, params, what="a crop set",
                               another="choose another folder (--crops-out) or delete it")


def run(out: Path, params: CropSetParams, *, workers: int = 0, progress: bool = True) -> dict:
    """Render (or finish) the crop set ``params`` into the folder ``out``.

    Args:
        workers: processes (0 = all cores; 1 = in this process).
    Returns:
        A summary: folder, crops, rendered now, seconds, crops per second, CPU seconds per crop.
    """
    out = Path(out)
    if params.crops < 1:
        raise InputError(f"--crops: expected a positive number of crops, got {params.crops}")
    if params.size < 32:
        raise InputError(f"--crop-size: expected at least 32 px, got {params.size}")
    t0 = time.perf_counter()
    pdict = params.to_dict()
    complete = _claim(out, pdict)
    n_chunks = -(-params.crops // CHUNK_SIZE)
    manifest = {"generator": "speedpose synth --crops", "format": CROP_SET_FORMAT, "params": pdict,
                "chunk_size": CHUNK_SIZE}
    todo = []
    if not complete:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / MANIFEST, {**manifest, "complete": False})
        for stray in out.glob(".chunk_*.tmp"):
            stray.unlink(missing_ok=True)
        job = {**pdict, "out": str(out)}
        todo = [(job, k, k * CHUNK_SIZE, min(params.crops, (k + 1) * CHUNK_SIZE)) for k in range(n_chunks)
                if not chunk_done(out, k)]
    cpu = 0.0
    rendered = 0
    if todo:
        n_workers = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) \
            if workers == 0 else int(workers)
        n_workers = max(1, min(n_workers, len(todo)))
        bar = tqdm(total=sum(t[3] - t[2] for t in todo), desc="synth crops", unit="crop", disable=not progress)
        try:
            if n_workers == 1:
                results = map(_render_chunk, todo)
                for _, count, c in results:
                    rendered, cpu = rendered + count, cpu + c
                    bar.update(count)
            else:
                ctx = mp.get_context("forkserver")  # see pipelines.synth: no fork after torch/OpenCV threads
                ctx.set_forkserver_preload(["pipelines.synth_crops", "speedpose.render"])
                with ctx.Pool(n_workers, initializer=_single_thread) as pool:
                    for _, count, c in pool.imap_unordered(_render_chunk, todo, chunksize=1):
                        rendered, cpu = rendered + count, cpu + c
                        bar.update(count)
        finally:
            bar.close()
        atomic_write_json(out / MANIFEST, {**manifest, "complete": True})
    seconds = time.perf_counter() - t0
    return {"out": str(out), "crops": params.crops, "size": params.size, "rendered": rendered,
            "seconds": round(seconds, 3), "crops_per_second": round(rendered / seconds, 1) if rendered else None,
            "cpu_ms_per_crop": round(1000 * cpu / rendered, 2) if rendered else None}


def _single_thread() -> None:
    import cv2

    cv2.setNumThreads(1)


def format_summary(s: dict) -> str:
    """One line for the terminal."""
    rate = f" ({s['crops_per_second']} crops/s)" if s["crops_per_second"] else ""
    return (f"crop set written to {s['out']}: {s['crops']} crops of {s['size']} px, rendered {s['rendered']} now "
            f"in {s['seconds']} s{rate}")


__all__ = ["CHUNK_SIZE", "CropSetParams", "default_crop_dir", "format_summary", "run"]
