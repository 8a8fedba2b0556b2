"""Stage `augment`: look at the training augmentation (``--preview``) or write an augmented copy (``--materialise``).

Both draw exactly the samples training draws (:class:`speedpose.pose.dataset.CropSamples` with ``train=True``):
virtual-camera crops at a jittered box with a random in-plane rotation, photometric augmentation, and the label
expressed in that crop.  The preview draws the 11 keypoints projected WITH THE TRANSFORMED LABEL over each crop, so
one can see that labels follow the pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from tqdm.auto import tqdm

from speedpose.config import load_config, with_options
from speedpose.config.shipped import resolve_config
from speedpose.data.loader import open_split
from speedpose.errors import InputError
from speedpose.geometry.rotations import matrix_to_quat_wxyz
from speedpose.io_utils import atomic_write_bytes, atomic_write_json
from speedpose.pose.config import SpeedplusExperiment
from speedpose.pose.dataset import CropSamples
from speedpose.pose.kinds import model_kind
from speedpose.pose.kinds.crop import CropKind
from speedpose.training.seeding import mix_seed

#: colours (BGR) of the keypoints: panel corners, body corners, antenna tips
KP_COLOURS = [(0, 255, 0)] * 4 + [(0, 200, 255)] * 4 + [(255, 80, 255)] * 3


def _samples(cfg: SpeedplusExperiment, root: Path | None, split: str) -> CropSamples:
    kind = model_kind(cfg, CropKind, "augment previews the crop pipeline: use a config with model.kind: crop")
    sp = open_split(cfg.data.prep_dir or cfg.data.root, "synthetic", split, root=root)
    return kind.samples(sp, np.arange(len(sp)), train=True)


def _draw(sample: dict, scale: int) -> np.ndarray:
    crop = sample["crop"][0].numpy()
    img = cv2.cvtColor(cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST),
                       cv2.COLOR_GRAY2BGR)
    for (u, v), col in zip(sample["kp_crop"].numpy(), KP_COLOURS):
        cv2.circle(img, (int(round((u + 0.5) * scale - 0.5)), int(round((v + 0.5) * scale - 0.5))), 3, col, -1)
    return img


def preview(cfg: SpeedplusExperiment, out: Path, n: int = 16, seed: int = 0, root: Path | None = None,
            split: str = "train") -> Path:
    """Write a grid PNG of ``n`` augmented crops (keypoints of the transformed label drawn). Returns ``out``."""
    ds = _samples(cfg, root, split)
    scale = max(1, 256 // cfg.data.crop_size)
    tiles = []
    for k in range(n):
        np.random.seed(mix_seed(seed, k) % (2**32))
        tiles.append(_draw(ds[k % len(ds)], scale))
    cols = int(np.ceil(np.sqrt(n)))
    blank = np.zeros_like(tiles[0])
    rows = [np.hstack(tiles[r * cols:(r + 1) * cols] + [blank] * (cols - len(tiles[r * cols:(r + 1) * cols])))
            for r in range(int(np.ceil(n / cols)))]
    _write_png(Path(out), np.vstack(rows))
    return Path(out)


def _write_png(path: Path, img: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise InputError("cannot encode the image as PNG", path)
    atomic_write_bytes(path, buf.tobytes())


def materialise(cfg: SpeedplusExperiment, out: Path, copies: int = 1, seed: int = 0, root: Path | None = None,
                split: str = "train", progress: bool = True) -> Path:
    """Write ``copies`` augmented crops per image to ``out/images/`` with ``out/labels.json``.

    Each label holds the crop file, the source file name, the rotation in the crop's camera (``q_vbs2tango_true``
    convention: scalar-first, ``p_crop = R p + r``), the translation in that camera [m], the crop's intrinsics and
    ``R_cam_virt`` (so the pose maps back to the original camera).  Existing crops are kept (resumable).
    """
    ds = _samples(cfg, root, split)
    (out / "images").mkdir(parents=True, exist_ok=True)
    labels = []
    total = len(ds) * copies
    with tqdm(total=total, desc="augment", unit="crop", disable=not progress) as bar:
        for c in range(copies):
            for k in range(len(ds)):
                np.random.seed(mix_seed(seed, c, k) % (2**32))
                s = ds[k]
                name = f"{Path(ds.split.filenames[int(s['index'])]).stem}_aug{c:02d}.png"
                path = out / "images" / name
                if not path.is_file():
                    _write_png(path, s["crop"][0].numpy())
                labels.append({"filename": name, "source": ds.split.filenames[int(s["index"])],
                               "q_vbs2tango_true": matrix_to_quat_wxyz(s["R_virt"].double().numpy()).tolist(),
                               "t_enc": s["t_enc"].tolist(), "kp_crop": s["kp_crop"].tolist()})
                bar.update(1)
    atomic_write_json(out / "labels.json", labels)
    return out


def run(root: Path | None, config: str | None, overrides: Sequence[str] = (), *, preview_png: Path | None = None,
        materialise_dir: Path | None = None, n: int = 16, copies: int = 1, seed: int = 0) -> list[Path]:
    """CLI entry: at least one of ``preview_png`` / ``materialise_dir``."""
    if preview_png is None and materialise_dir is None:
        raise InputError("nothing to do: pass --preview FILE.png and/or --materialise DIR")
    extra = with_options(overrides, {"data.root": Path(root).resolve() if root is not None else None})
    cfg = load_config(resolve_config(config, "speedplus"), extra)
    done = []
    if preview_png is not None:
        done.append(preview(cfg, Path(preview_png), n, seed, root))
    if materialise_dir is not None:
        done.append(materialise(cfg, Path(materialise_dir), copies, seed, root))
    return done
