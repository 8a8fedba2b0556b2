"""Stage `predict`: poses of arbitrary SPEED+-camera images with a trained run (overlay + distribution per image).

Outputs of :func:`run` in ``out``: ``<stem>_overlay.png`` (predicted wireframe and body axes over the frame, with a
zoom on the spacecraft) and ``<stem>_so3.png`` (the SO(3) distribution in the camera frame) per image, and
``predictions.jsonl`` (one JSON object per image, the same lines the command prints).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from speedpose.camera import Camera, load_camera, speedplus_camera
from speedpose.data.image_store import load_resized, read_gray
from speedpose.devices import resolve_device
from speedpose.errors import InputError
from speedpose.io_utils import atomic_write_text
from speedpose.pose.inference import predict_split
from speedpose.pose.split_inference import distributions_in_camera
from speedpose.runs import load_run

#: preprocessed-like size (W, H) the images of `predict` are reduced to (the preprocess default)
IMAGE_SIZE = (768, 512)


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
