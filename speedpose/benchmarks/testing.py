"""Tiny ModelNet10-SO(3) npz files and a tiny PASCAL3D+ release-1.1 tree written on the fly, in exactly the formats
the adapters read, so that the adapters, the benchmark configs and tools/bench_pascal3d_views.py run without the data
(the benchmarks' counterpart of :mod:`speedpose.data.testing`).

The PASCAL3D+ images show a known 3D object (coloured dots at fixed object points) drawn with PASCAL3D+'s own
projection (``project_3d.m``: camera centre from azimuth/elevation/distance, z-backward camera, 2D rotation by
theta, y flipped, 1-based principal point), written here independently of speedpose's conversion.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from speedpose.data.modelnet10 import MODELNET10_FILES
from speedpose.data.pascal3d import PASCAL3D_CLASSES, RENDERFORCNN_SYNSETS, SYNTHETIC_DIR

# ------------------------------------------------------------------------------------------------ ModelNet10-SO(3)


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 3, 3) uniform rotations (QR of Gaussian matrices with a positive diagonal, det +1)."""
    q, r = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    q[np.linalg.det(q) < 0, :, 0] *= -1
    return q


def write_modelnet10_npz(path: Path, n: int, seed: int = 0, size: int = 224, compressed: bool = False,
                         **replace) -> dict[str, np.ndarray]:
    """Write one I2S ModelNet10-SO(3) npz: ``imgs`` uint8 (n, size, size, 1), ``rots`` float32 (n, 3, 3),
    ``cat_ids`` int64 (n,) cycling through the 10 classes.  ``replace`` swaps or adds arrays (bad-format tests;
    a value of None drops the key).  Returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {"imgs": rng.integers(0, 256, size=(n, size, size, 1), dtype=np.uint8),
              "rots": random_rotations(n, rng).astype(np.float32),
              "cat_ids": (np.arange(n) % 10).astype(np.int64)}
    for k, v in replace.items():
        if v is None:
            arrays.pop(k, None)
        else:
            arrays[k] = v
    path.parent.mkdir(parents=True, exist_ok=True)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return arrays


def write_modelnet10_root(root: Path, n_train: int = 20, n_limited: int = 10, n_test: int = 10, size: int = 224,
                          seed: int = 0) -> Path:
    """The three npz files under ``root``; returns ``root``."""
    for k, (split, n) in enumerate((("train", n_train), ("limited_train", n_limited), ("test", n_test))):
        write_modelnet10_npz(root / MODELNET10_FILES[split], n, seed + k, size)
    return root


# ------------------------------------------------------------------------------------------------ PASCAL3D+

#: object points [CAD units] drawn as dots, each with its own colour (RGB)
OBJECT_POINTS = np.array([[0.0, 0.0, 0.0], [0.6, 0.0, 0.0], [0.0, 0.45, 0.0], [0.0, 0.0, 0.35],
                          [-0.4, -0.25, 0.1], [0.3, 0.3, -0.3]])
DOT_COLOURS = np.array([[255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255]],
                       np.uint8)
DOT_RADIUS = 4


def pascal_project(points: np.ndarray, azimuth: float, elevation: float, theta: float, distance: float,
                   focal: float, viewport: float, px: float, py: float) -> np.ndarray:
    """PASCAL3D+'s ``project_3d.m`` (angles in degrees; returns 1-based MATLAB pixels). (N, 3) -> (N, 2)."""
    a, e, th = math.radians(azimuth), math.radians(elevation), math.radians(theta)
    C = distance * np.array([math.cos(e) * math.sin(a), -math.cos(e) * math.cos(a), math.sin(e)])
    a, e = -a, -(math.pi / 2 - e)
    Rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    Rx = np.array([[1, 0, 0], [0, math.cos(e), -math.sin(e)], [0, math.sin(e), math.cos(e)]])
    R = Rx @ Rz
    P = np.diag([viewport * focal, viewport * focal, -1.0]) @ np.hstack([R, -(R @ C)[:, None]])
    x = P @ np.hstack([points, np.ones((len(points), 1))]).T
    x = x[:2] / x[2]
    x = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]]) @ x
    x[1] = -x[1]
    return x.T + np.array([px, py])


def draw_dots(width: int, height: int, uv_1based: np.ndarray, background: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 RGB image with one coloured disc per point (1-based pixel centres)."""
    img = np.full((height, width, 3), background, np.uint8)
    for (u, v), c in zip(uv_1based - 1.0, DOT_COLOURS):
        cv2.circle(img, (int(round(u * 16)), int(round(v * 16))), DOT_RADIUS * 16, tuple(int(x) for x in c), -1,
                   lineType=cv2.LINE_AA, shift=4)
    return img


def dot_centroids(image: np.ndarray) -> np.ndarray:
    """(N, 2) 0-based centroid of each colour's dot in an RGB image (NaN when absent)."""
    img = image.astype(np.float64)
    out = np.full((len(DOT_COLOURS), 2), np.nan)
    for k, c in enumerate(DOT_COLOURS):
        on, off = c > 0, c == 0
        mask = (img[..., on].min(axis=-1) > 100)
        if off.any():
            mask &= img[..., off].max(axis=-1) < 0.35 * img[..., on].min(axis=-1)
        w = mask * img[..., on].min(axis=-1)
        if w.sum() > 0:
            v, u = np.mgrid[:img.shape[0], :img.shape[1]]
            out[k] = [(u * w).sum() / w.sum(), (v * w).sum() / w.sum()]
    return out


def _write_image(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, 100]
    if hasattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR"):
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    ok = cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params if path.suffix.lower() in
                     (".jpg", ".jpeg") else [])
    assert ok, path


def _objects_array(objects: list[dict]) -> np.ndarray:
    """A MATLAB 1xN struct array (savemat) from dicts with the same keys."""
    keys = list(objects[0])
    arr = np.zeros((1, len(objects)), dtype=[(k, object) for k in keys])
    for i, o in enumerate(objects):
        for k in keys:
            arr[0, i][k] = o[k]
    return arr


def make_object(cls: str, rng: np.random.Generator, width: int, height: int, **flags) -> dict:
    """A random annotated object fully inside a (width x height) image, dots at least 14 px apart."""
    for _ in range(1000):
        vp = {"azimuth": float(rng.uniform(0, 360)), "elevation": float(rng.uniform(-30, 60)),
              "theta": float(rng.uniform(-40, 40)), "distance": float(rng.uniform(14, 20)), "focal": 1.0,
              "viewport": 3000.0, "px": float(rng.uniform(0.35, 0.65) * width),
              "py": float(rng.uniform(0.35, 0.65) * height)}
        uv = pascal_project(OBJECT_POINTS, **vp)
        d = np.linalg.norm(uv[:, None] - uv[None], axis=-1) + np.eye(len(uv)) * 1e9
        lo, hi = uv.min(0) - DOT_RADIUS - 1, uv.max(0) + DOT_RADIUS + 1
        if d.min() > 14 and lo.min() > 2 and hi[0] < width - 2 and hi[1] < height - 2:
            break
    else:  # pragma: no cover
        raise RuntimeError("no valid random object")
    obj = {"class": cls, "view": "Frontal", "truncated": 0, "occluded": 0, "difficult": 0,
           "bbox": np.array([lo[0], lo[1], hi[0], hi[1]]), "viewpoint": {**vp, "azimuth_coarse": vp["azimuth"],
                                                                        "elevation_coarse": vp["elevation"],
                                                                        "error": 0.0, "interval_azimuth": 0.0,
                                                                        "interval_elevation": 0.0,
                                                                        "num_anchor": 0.0},
           "cad_index": 1}
    obj.update(flags)
    return obj


def write_annotation(path: Path, filename: str, width: int, height: int, objects: list[dict]) -> None:
    """A PASCAL3D+ annotation .mat (variable ``record``) as scipy writes MATLAB structs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"filename": filename, "folder": path.parent.name, "imgsize": np.array([width, height, 3.0]),
              "database": "fixture", "segmented": 0, "objects": _objects_array(objects)}
    scipy.io.savemat(path, {"record": record})


def write_pascal3d_tree(root: Path, classes=("aeroplane", "car", "chair"), n_pascal_train: int = 1,
                        n_imagenet_train: int = 1, n_imagenet_val: int = 1, n_test: int = 2, width: int = 320,
                        height: int = 240, seed: int = 0) -> dict:
    """A tiny PASCAL3D+_release1.1 tree under ``root``.

    Per class in ``classes``: the given numbers of usable annotations per source/split, plus in train one
    truncated object (dropped), one annotation whose first object is occluded (dropped although a good object
    follows), one two-object annotation whose first object is good (kept), and a VOC id without an image (skipped).
    List files of the other classes exist and are empty.

    Returns:
        ``{"train": [...], "test": [...]}``: per kept record (in the adapter's order) a dict with ``file``
        (``<cls>_<source>/<id>.<ext>``), ``class`` and ``object`` (the annotation dict of the kept object).
    """
    rng = np.random.default_rng(seed)
    voc = root / "PASCAL/VOCdevkit/VOC2012/ImageSets/Main"
    sets = root / "Image_sets"
    voc.mkdir(parents=True, exist_ok=True)
    sets.mkdir(parents=True, exist_ok=True)
    kept: dict[str, list] = {"train": [], "test": []}
    counter = [0]

    def add(cls: str, source: str, objects: list[dict]) -> tuple[str, str]:
        counter[0] += 1
        image_id = f"2008_{counter[0]:06d}" if source == "pascal" else f"n0000_{counter[0]}"
        ext = ".jpg" if source == "pascal" else ".JPEG"
        first = objects[0]
        img = draw_dots(width, height, pascal_project(OBJECT_POINTS, **{k: first["viewpoint"][k] for k in (
            "azimuth", "elevation", "theta", "distance", "focal", "viewport", "px", "py")}))
        _write_image(root / "Images" / f"{cls}_{source}" / f"{image_id}{ext}", img)
        write_annotation(root / "Annotations" / f"{cls}_{source}" / f"{image_id}.mat", f"{image_id}{ext}", width,
                         height, objects)
        return image_id, ext

    for cls in PASCAL3D_CLASSES:
        lists = {"voc_train": [], "voc_val": [], "in_train": [], "in_val": []}
        if cls in classes:
            for split, source, key, n in (("train", "pascal", "voc_train", n_pascal_train),
                                          ("train", "imagenet", "in_train", n_imagenet_train),
                                          ("train", "imagenet", "in_val", n_imagenet_val),
                                          ("test", "pascal", "voc_val", n_test)):
                for j in range(n):
                    objs = [make_object(cls, rng, width, height)]
                    if split == "train" and j == 0 and source == "pascal":
                        objs.append(make_object(cls, rng, width, height, truncated=1))
                    image_id, ext = add(cls, source, objs)
                    lists[key].append(f"{image_id} 1" if source == "pascal" else image_id)
                    kept[split].append({"file": f"{cls}_{source}/{image_id}{ext}", "class": cls,
                                        "object": objs[0]})
            # dropped: truncated first object; occluded first object followed by a good one
            image_id, _ = add(cls, "imagenet", [make_object(cls, rng, width, height, truncated=1)])
            lists["in_train"].append(image_id)
            image_id, _ = add(cls, "pascal", [make_object(cls, rng, width, height, occluded=1),
                                              make_object(cls, rng, width, height)])
            lists["voc_train"].append(f"{image_id} 1")
            lists["voc_train"].append("2008_999999 -1")  # listed by VOC, no PASCAL3D+ image
        (voc / f"{cls}_train.txt").write_text("".join(f"{x}\n" for x in lists["voc_train"]))
        (voc / f"{cls}_val.txt").write_text("".join(f"{x}\n" for x in lists["voc_val"]))
        (sets / f"{cls}_imagenet_train.txt").write_text("".join(f"{x}\n" for x in lists["in_train"]))
        (sets / f"{cls}_imagenet_val.txt").write_text("".join(f"{x}\n" for x in lists["in_val"]))
    # the adapter keeps the reference's order: per class, VOC train, ImageNet train, ImageNet val
    order = {f"{c}_{s}": (PASCAL3D_CLASSES.index(c), k) for c in PASCAL3D_CLASSES
             for k, s in enumerate(("pascal", "imagenet"))}
    for split in kept:
        kept[split].sort(key=lambda r: order[r["file"].split("/")[0]])
    return kept


def write_renderforcnn(root: Path, classes=("aeroplane", "car"), n_per_class: int = 2, size: int = 128,
                       seed: int = 1) -> list[dict]:
    """RenderForCNN-style crops under ``root/syn_images_cropped_bkg_overlaid/<synset>/<model>/``: the object
    drawn at distance 4, focal 3000 px, principal point at the image centre, in-plane angle ``-t`` (the
    reference's reading of the file name).  Returns per image ``file``, ``class``, ``viewpoint`` (as drawn)."""
    rng = np.random.default_rng(seed)
    out = []
    pts = OBJECT_POINTS * 0.12
    for cls in classes:
        synset = RENDERFORCNN_SYNSETS[PASCAL3D_CLASSES.index(cls)]
        for j in range(n_per_class):
            a, e, t = int(rng.integers(0, 360)), int(rng.integers(-20, 50)), int(rng.integers(-30, 30))
            vp = {"azimuth": a, "elevation": e, "theta": -t, "distance": 4.0, "focal": 1.0, "viewport": 3000.0,
                  "px": (size - 1) / 2 + 1, "py": (size - 1) / 2 + 1}
            img = draw_dots(size, size, pascal_project(pts, **vp))
            name = f"{synset}_model{j}_a{a:03d}_e{e:03d}_t{t:03d}_d004.png"
            path = root / SYNTHETIC_DIR / synset / f"model{j}" / name
            _write_image(path, img)
            out.append({"file": path, "class": cls, "viewpoint": vp, "points": pts})
    return out
