"""Stage `predict`: poses of arbitrary SPEED+-camera images with a trained run (overlay + distribution per image),
and the shared inference helpers of `evaluate` and `submit` (device choice, resumable chunked inference, the
predicted distribution in the camera frame).

Outputs of :func:`run` in ``out``: ``<stem>_overlay.png`` (predicted wireframe and body axes over the frame, with a
zoom on the spacecraft) and ``<stem>_so3.png`` (the SO(3) distribution in the camera frame) per image, and
``predictions.jsonl`` (one JSON object per image, the same lines the command prints).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from speedpose.camera import Camera, load_camera, speedplus_camera
from speedpose.data.image_store import load_resized, read_gray
from speedpose.errors import InputError
from speedpose.io_utils import atomic_path, atomic_write_json, atomic_write_text, read_json
from speedpose.models.i2s import so3_distribution
from speedpose.pose.inference import PosePredictions, predict_split
from speedpose.pose.kinds.base import ModelKind
from speedpose.pose.run import load_run

#: images per resumable inference chunk
CHUNK = 256
#: preprocessed-like size (W, H) the images of `predict` are reduced to (the preprocess default)
IMAGE_SIZE = (768, 512)
#: SO(3) grid level of the distribution plots (36,864 rotations)
PLOT_LEVEL = 3


def resolve_device(device: str | None) -> torch.device:
    """``auto``/None -> cuda when available, else cpu; otherwise the named device."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise InputError(f"--device: expected cpu, cuda, cuda:N or auto, got {device!r}") from None


@dataclass
class ImageFiles:
    """A list of image files seen by one camera, with the interface :func:`predict_split` reads from a
    :class:`~speedpose.data.loader.PreprocessedSplit` (``domain``, ``camera``, ``camera_small``, ``image``,
    ``image_path``, ``full_image``).  Images are decoded as grayscale (1- or 3-channel files alike)."""

    paths: list[Path]
    camera: Camera
    size: tuple[int, int] = IMAGE_SIZE
    domain: str = "images"
    _full: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def camera_small(self) -> Camera:
        return self.camera.resized(*self.size)

    @property
    def filenames(self) -> list[str]:
        return [p.name for p in self.paths]

    def image_path(self, i: int) -> Path:
        return self.paths[i]

    def full_image(self, i: int) -> np.ndarray:
        """uint8 (H, W) at the camera's resolution; InputError when unreadable or of another size."""
        if i not in self._full:
            self._full.clear()  # keep one decoded frame
            path = self.paths[i]
            img = read_gray(path) if path.is_file() else None
            if img is None:
                raise InputError("not a readable image (expected a JPEG or PNG file)", path)
            if img.shape != (self.camera.height, self.camera.width):
                raise InputError(f"image is {img.shape[1]}x{img.shape[0]}, the camera expects "
                                 f"{self.camera.width}x{self.camera.height} (pass --camera)", path)
            self._full[i] = img
        return self._full[i]

    def image(self, i: int) -> np.ndarray:
        """uint8 (H, W) at ``size``, decoded exactly as ``speedpose preprocess`` stores a frame (DCT-scaled JPEG
        decoding, then area resampling): the localiser sees what it saw in training and what `evaluate` gives it."""
        self.full_image(i)  # the checks: readable, the camera's size
        img, problem = load_resized(self.paths[i], (self.camera.width, self.camera.height), self.size)
        if img is None:
            raise InputError(problem, self.paths[i])
        return img


def _cache_key_matches(cache_dir: Path, key: dict) -> bool:
    f = cache_dir / "key.json"
    try:
        return f.is_file() and read_json(f) == key
    except InputError:
        return False


def predict_cached(model, split, indices: np.ndarray, kind: ModelKind, device: torch.device, batch_size: int,
                   cache_dir: Path | None, key: dict, progress: bool = True, desc: str = "predict"
                   ) -> PosePredictions:
    """:func:`predict_split` over ``indices`` in chunks of :data:`CHUNK` images, each chunk saved to ``cache_dir``
    as it finishes, so that an interrupted run resumes; a cache made under another ``key`` (run, checkpoint,
    config, dataset fingerprint, batch size) is discarded.  ``cache_dir=None``: no cache."""
    indices = np.asarray(indices, dtype=np.int64)
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        if cache_dir.exists() and not _cache_key_matches(cache_dir, key):
            shutil.rmtree(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cache_dir / "key.json", key)
    names = ("indices", "q_wxyz", "r_cam_m", "confidence", "box_xyxy", "loc_score", "R_cam_virt", "branch")
    parts: list[PosePredictions] = []
    bar = tqdm(total=len(indices), desc=desc, unit="img", disable=not progress)
    for start in range(0, len(indices), CHUNK):
        chunk = indices[start:start + CHUNK]
        f = None if cache_dir is None else cache_dir / f"chunk_{start:08d}.npz"
        if f is not None and f.is_file():
            with np.load(f) as z:
                if np.array_equal(z["indices"], chunk) and set(names) <= set(z.files):
                    parts.append(PosePredictions(**{n: z[n] for n in names}))
                    bar.update(len(chunk))
                    continue
        pred = predict_split(model, split, chunk, kind, device, batch_size=batch_size)
        if f is not None:
            with atomic_path(f) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, **{n: getattr(pred, n) for n in names})
        parts.append(pred)
        bar.update(len(chunk))
    bar.close()
    if not parts:
        return predict_split(model, split, indices, kind, device, batch_size=batch_size)
    return PosePredictions(**{n: np.concatenate([getattr(p, n) for p in parts]) for n in names})


def distributions_in_camera(model, split, indices: Sequence[int], kind: ModelKind, device: torch.device,
                            level: int = PLOT_LEVEL) -> tuple[PosePredictions, np.ndarray, np.ndarray]:
    """Predictions for a few images with their distributions on the level-``level`` SO(3) grid, expressed in the
    real camera frame (the head's coefficients live in each crop's virtual-camera frame: ``R_cam = R_cam_virt @
    R_virt``).

    Returns:
        (predictions, R_grid_cam (B, N, 3, 3) float64, probs (B, N) float64 summing to 1 per image).
    """
    pred = predict_split(model, split, np.asarray(indices, dtype=np.int64), kind, device, batch_size=len(indices),
                         keep_coeffs=True)
    R_grid, probs = so3_distribution(torch.from_numpy(pred.coeffs).to(device), level=level)
    R_grid = R_grid.double().cpu().numpy()
    R_cam = np.einsum("bij,njk->bnik", pred.R_cam_virt, R_grid)
    return pred, R_cam, probs.double().cpu().numpy()


def _collect_images(images: Sequence[Path]) -> list[Path]:
    out: list[Path] = []
    for p in images:
        p = Path(p)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in (".jpg", ".jpeg", ".png"))
            if not found:
                raise InputError("folder holds no .jpg/.jpeg/.png image", p)
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise InputError("image not found", p)
    if not out:
        raise InputError("no image given (expected IMAGE... paths or folders)")
    stems = [p.stem for p in out]
    dup = next((s for s in stems if stems.count(s) > 1), None)
    if dup:
        raise InputError(f"two images share the name {dup!r}: their outputs would collide")
    return out


def run(images: Sequence[Path], run_dir: Path, *, camera: Path | None = None, out: Path = Path("predictions"),
        checkpoint: str = "best", device: str | None = "auto", plots: bool = True, progress: bool = True
        ) -> list[dict]:
    """Predict the pose of each image; write overlays, distribution plots and ``predictions.jsonl`` into ``out``.

    Args:
        images: image files or folders of images (1920x1200 SPEED+ frames, or the size of ``camera``).
        run_dir: a run folder written by ``speedpose train``.
        camera: camera.json of the images (default: the SPEED+ camera).
        plots: also write the overlay and distribution PNGs.
    Returns:
        One dict per image: ``image``, ``q_wxyz`` (camera <- body, scalar first), ``r_cam_m`` [m],
        ``confidence``, ``box_xyxy`` [px], and the paths of the PNGs.
    """
    from speedpose.report import pose_overlay, write_png
    from speedpose.viz.so3_plot import plot_so3_distribution

    paths = _collect_images(images)
    cam = load_camera(camera) if camera is not None else speedplus_camera()
    loaded = load_run(run_dir, checkpoint)
    dev = resolve_device(device)
    model = loaded.model.to(dev)
    files = ImageFiles(paths, cam)
    for i in range(len(files)):
        files.full_image(i)  # refuse unreadable or wrongly sized images before predicting anything
    out = Path(out)
    results = []
    for i in tqdm(range(len(files)), desc="predict", unit="img", disable=not progress):
        if plots:
            pred, R_grid, probs = distributions_in_camera(model, files, [i], loaded.kind, dev)
        else:
            pred = predict_split(model, files, np.array([i]), loaded.kind, dev, batch_size=1)
        rec = {"image": str(paths[i]), "q_wxyz": [float(v) for v in pred.q_wxyz[0]],
               "r_cam_m": [float(v) for v in pred.r_cam_m[0]], "confidence": float(pred.confidence[0]),
               "box_xyxy": [float(v) for v in pred.box_xyxy[0]], "run": str(loaded.run_dir),
               "checkpoint": loaded.checkpoint.name, "step": loaded.step}
        if plots:
            stem = paths[i].stem
            text = (f"{paths[i].name}: |r| = {np.linalg.norm(pred.r_cam_m[0]):.2f} m, "
                    f"confidence {pred.confidence[0]:.2f}")
            ov = pose_overlay(files.full_image(i), cam, pred.q_wxyz[0], pred.r_cam_m[0], box_pred_xyxy=pred.box_xyxy[0],
                              text=text)
            write_png(out / f"{stem}_overlay.png", ov)
            plot_so3_distribution(R_grid[0], probs[0], out / f"{stem}_so3.png", max_points=5000,
                                  title=f"{paths[i].name}: SO(3) distribution, camera frame")
            rec["overlay"] = str(out / f"{stem}_overlay.png")
            rec["distribution_plot"] = str(out / f"{stem}_so3.png")
        results.append(rec)
    atomic_write_text(out / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in results))
    return results
