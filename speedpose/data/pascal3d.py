"""PASCAL3D+ release 1.1 (Xiang et al. 2014) for orientation benchmarks, with the Image2Sphere splits.

Layout read (under ``root`` = the ``PASCAL3D+_release1.1`` folder)::

    Images/<cls>_pascal/<id>.jpg, Images/<cls>_imagenet/<id>.JPEG
    Annotations/<cls>_{pascal,imagenet}/<id>.mat          # MATLAB struct `record` (scipy.io.loadmat)
    Image_sets/<cls>_imagenet_{train,val}.txt              # one image id per line
    PASCAL/VOCdevkit/VOC2012/ImageSets/Main/<cls>_{train,val}.txt   # "<id> <label>" per line

Splits (the reference's, i.e. the matrix-Fisher code reused by I2S): ``train`` = PASCAL train + ImageNet train +
ImageNet val, ``test`` = PASCAL val, for the 12 classes; a PASCAL id counts when its image exists.  One record per
annotation file: its FIRST object, dropped when it has no usable viewpoint (missing, or distance 0), is difficult,
truncated or occluded, or has an empty box.  ``synthetic``: RenderForCNN renderings
``<synthetic_root>/syn_images_cropped_bkg_overlaid/<synset>/<model>/*_a<az>_e<el>_t<theta>_d<dist>.png``.

Camera model of an annotation (PASCAL3D+'s ``project_3d.m``): a pinhole with focal ``focal * viewport`` [px] and
principal point ``(px, py)``, looking at the object's origin from distance ``distance``, with the viewpoint
(azimuth, elevation, in-plane theta).  Converted here to speedpose's camera frame (x right, y down, z forward):

    R_gl = Rx(elevation - 90 deg) Rz(-azimuth)          (object -> PASCAL3D+'s camera, y up, z backward)
    R_cam_obj = Rz(-theta) diag(1, -1, -1) R_gl,   t_cam = (0, 0, distance),   K = [[f, 0, px], [0, f, py], [0, 0, 1]]

so that ``K (R_cam_obj p + t_cam)`` gives exactly the pixels of ``project_3d.m`` (1-based MATLAB pixels; we
subtract 1 from ``px, py`` and the box to get speedpose's 0-based pixel centres).  Each object is then viewed by a
224x224 :class:`~speedpose.virtual_camera.VirtualCamera` that looks at its box centre and covers the box
(:func:`object_view`); the label becomes ``R_virt_obj = R_cam_virt^T R_cam_obj``.

Differences from the reference, and why:

* principal point ``(px, py)``: the reference passes ``(px, px)`` (a typo), which shifts the assumed camera and
  biases the label of every object whose ``py != px``;
* the virtual camera looks at the box centre with the smallest rotation (no roll) and fills the crop with the box
  times ``margin``; the reference looks at the centre of the smallest cone containing the box corners with its
  "up" vector along x (a 90-degree roll of the crop) and fits the box exactly.  A fixed roll changes nothing for a
  model trained and tested with it; ours keeps the crops upright, as the photos are;
* labels use speedpose's camera frame (the reference keeps PASCAL3D+'s y-up, z-backward frame): errors between
  rotations are unchanged by a fixed change of frame, so the metrics are comparable;
* RenderForCNN: the reference sets distance 4, focal 3000, principal point at the image centre and ``theta = -t``
  from the file name; we do the same (the distance does not change the rotation).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import cv2
import numpy as np
import scipy.io
from tqdm import tqdm

from speedpose.camera import Camera
from speedpose.data.base import DatasetAdapter, Reject
from speedpose.data.category_records import CategoryRecords
from speedpose.errors import InputError
from speedpose.geometry.rotations import matrix_to_quat_wxyz
from speedpose.virtual_camera import VirtualCamera

PASCAL3D_CLASSES = ("aeroplane", "bicycle", "boat", "bottle", "bus", "car", "chair", "diningtable", "motorbike",
                    "sofa", "train", "tvmonitor")
#: ShapeNet synset of each class (RenderForCNN folders), same order
RENDERFORCNN_SYNSETS = ("02691156", "02834778", "02858304", "02876657", "02924116", "02958343", "03001627",
                        "04379243", "03790512", "04256520", "04468005", "03211117")
SYNTHETIC_DIR = "syn_images_cropped_bkg_overlaid"
SYNTHETIC_FOCAL_PX = 3000.0
SYNTHETIC_DISTANCE = 4.0
VOC_SETS = Path("PASCAL/VOCdevkit/VOC2012/ImageSets/Main")
_SYN_NAME = re.compile(r"_a(-?\d+)_e(-?\d+)_t(-?\d+)_d(-?\d+(?:\.\d+)?)\.(png|jpg|jpeg)$", re.IGNORECASE)


# ------------------------------------------------------------------------------------------------- geometry
def _rz(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rx(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def viewpoint_to_R_cam_obj(azimuth_deg: float, elevation_deg: float, theta_deg: float) -> np.ndarray:
    """PASCAL3D+ viewpoint angles [deg] -> (3, 3) rotation object -> camera (x right, y down, z forward)."""
    a, e, th = (math.radians(v) for v in (azimuth_deg, elevation_deg, theta_deg))
    R_gl = _rx(e - math.pi / 2) @ _rz(-a)
    return _rz(-th) @ np.diag([1.0, -1.0, -1.0]) @ R_gl


def annotation_camera(focal_px: float, px: float, py: float, width: int, height: int) -> Camera:
    """The pinhole camera of an annotation: focal ``focal_px``, principal point (px, py) in 0-based pixels."""
    K = np.array([[focal_px, 0.0, px], [0.0, focal_px, py], [0.0, 0.0, 1.0]])
    return Camera(K, np.zeros(5), int(width), int(height))


def object_view(camera: Camera, box_xyxy: np.ndarray, size: int = 224, margin: float = 1.0,
                in_plane_rad: float = 0.0) -> VirtualCamera:
    """The square virtual camera of one object: looks at the box centre and shows the whole box.

    Args:
        camera: the annotation camera (:func:`annotation_camera`).
        box_xyxy: (4,) object box in 0-based pixels.
        size: side of the virtual image [px].
        margin: the box's larger angular half-extent times ``margin`` fills half the image (1 = tight).
        in_plane_rad: roll of the virtual camera about its optical axis (augmentation).
    Returns:
        the virtual camera; the label in it is ``vc.R_cam_virt.T @ R_cam_obj`` (``vc.pose_to_virtual``) and the
        image ``vc.warp(image, camera)``.
    """
    return VirtualCamera.covering_box(camera, np.asarray(box_xyxy, float), size, margin=margin,
                                      in_plane_rad=in_plane_rad)


# ------------------------------------------------------------------------------------------------- .mat reading
def _field(obj, name: str, path: Path, where: str):
    if not hasattr(obj, name):
        raise InputError(f"missing field {name!r}", path, where)
    return getattr(obj, name)


def _scalar(value, name: str, path: Path, where: str) -> float:
    arr = np.asarray(value)
    if arr.size != 1 or not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"field {name!r}: expected a number, got {arr.dtype} of shape {arr.shape}", path, where)
    return float(arr.reshape(-1)[0])


def read_first_object(path: Path) -> tuple[dict | None, str]:
    """Read the first object of an annotation file.

    Returns:
        (object dict, "") for a usable object, or (None, reason) when the reference drops it.  The dict holds
        ``class``, ``box_xyxy`` (0-based), ``azimuth``, ``elevation``, ``theta`` [deg], ``distance``, ``focal_px``
        (= focal * viewport), ``px``, ``py`` (0-based), ``width``, ``height`` [px].
    Raises:
        InputError: unreadable file or missing fields (naming the file and the field).
    """
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except FileNotFoundError:
        raise InputError("annotation file not found", path) from None
    except Exception as exc:  # scipy raises ValueError/TypeError/MatReadError on corrupt files
        raise InputError(f"not a readable MATLAB file: {exc}", path) from None
    if "record" not in mat:
        raise InputError("missing variable 'record'", path)
    record = mat["record"]
    objects = np.atleast_1d(_field(record, "objects", path, "record"))
    if objects.size == 0:
        return None, "no object"
    obj = objects.reshape(-1)[0]
    where = "record.objects(1)"
    cls = _field(obj, "class", path, where)
    if not isinstance(cls, str):
        raise InputError(f"field 'class': expected a string, got {type(cls).__name__}", path, where)
    flags = {k: _scalar(_field(obj, k, path, where), k, path, where) for k in ("difficult", "truncated", "occluded")}
    box = np.asarray(_field(obj, "bbox", path, where), dtype=np.float64).reshape(-1)
    if box.shape != (4,):
        raise InputError(f"field 'bbox': expected 4 numbers, got {box.shape}", path, where)
    vp = _field(obj, "viewpoint", path, where)
    if not hasattr(vp, "_fieldnames") or "distance" not in vp._fieldnames:
        return None, "no viewpoint"
    vwhere = where + ".viewpoint"
    v = {k: _scalar(_field(vp, k, path, vwhere), k, path, vwhere)
         for k in ("azimuth", "elevation", "theta", "distance", "focal", "viewport", "px", "py")}
    if v["distance"] == 0:
        return None, "distance 0"
    if any(flags.values()):
        return None, "hard (" + ", ".join(k for k, f in flags.items() if f) + ")"
    if not (box[0] < box[2] and box[1] < box[3]):
        return None, "empty box"
    size = np.asarray(_field(record, "imgsize", path, "record"), dtype=np.int64).reshape(-1)
    if size.size < 2:
        raise InputError(f"field 'imgsize': expected [width height depth], got {size}", path, "record")
    return {"class": cls, "box_xyxy": box - 1.0, "azimuth": v["azimuth"], "elevation": v["elevation"],
            "theta": v["theta"], "distance": v["distance"], "focal_px": v["focal"] * v["viewport"],
            "px": v["px"] - 1.0, "py": v["py"] - 1.0, "width": int(size[0]), "height": int(size[1])}, ""


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError("image list not found (is the root the PASCAL3D+_release1.1 folder?)", path)
    ids = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) > 2:
            raise InputError(f"expected '<image id>' or '<image id> <label>', got {line!r}", path, f"line {lineno}")
        ids.append(parts[0])
    return ids


class Pascal3DAdapter(DatasetAdapter):
    """PASCAL3D+ (and optional RenderForCNN images) -> :class:`CategoryRecords`.

    ``R_cam_obj`` is the rotation in the annotation camera of the FULL image (the crop's virtual camera is chosen
    by the dataset, with augmentation).  ``extras``: ``K`` (N, 3, 3) annotation intrinsics [px], ``box_xyxy``
    (N, 4) 0-based box [px], ``image_size`` (N, 2) (width, height), ``distance`` (N,) [CAD units],
    ``viewpoint_deg`` (N, 3) (azimuth, elevation, theta) [deg] as used for ``R_cam_obj``.  RenderForCNN records
    have NaN principal point and box and size 0 (see :func:`resolve_camera_and_box`).
    ``rejects`` lists the annotations the reference drops, with the reason.

    Args:
        root: the ``PASCAL3D+_release1.1`` folder.
        synthetic_root: folder holding ``syn_images_cropped_bkg_overlaid/`` (split ``synthetic``), or None.
        progress: show a progress bar while the annotation files are read (about 11,000 for ``train``).
    """

    splits = ("train", "test", "synthetic")

    def __init__(self, root: str | Path, synthetic_root: str | Path | None = None, progress: bool = False):
        self.root = Path(root)
        self.synthetic_root = None if synthetic_root is None else Path(synthetic_root)
        self.progress = progress

    def _sources(self, split: str) -> list[tuple[str, str, Path]]:
        """(class, source, list file) of a split, in the reference's order."""
        out = []
        for cls in PASCAL3D_CLASSES:
            if split == "train":
                out += [(cls, "pascal", self.root / VOC_SETS / f"{cls}_train.txt"),
                        (cls, "imagenet", self.root / "Image_sets" / f"{cls}_imagenet_train.txt"),
                        (cls, "imagenet", self.root / "Image_sets" / f"{cls}_imagenet_val.txt")]
            else:
                out.append((cls, "pascal", self.root / VOC_SETS / f"{cls}_val.txt"))
        return out

    def _generate_records(self, split: str) -> CategoryRecords:
        if split == "synthetic":
            return self._synthetic_records()
        if split not in ("train", "test"):
            raise InputError(f"unknown PASCAL3D+ split {split!r}; expected one of {', '.join(self.splits)}")
        if not self.root.is_dir():
            raise InputError("PASCAL3D+ root not found (expected the PASCAL3D+_release1.1 folder)", self.root)
        rows, files, rejects = [], [], []
        sources = [(cls, source, list_file, _read_list(list_file)) for cls, source, list_file in self._sources(split)]
        bar = tqdm(total=sum(len(ids) for *_, ids in sources), desc=f"pascal3d {split} annotations", unit="file",
                   disable=not self.progress)
        for cls, source, list_file, ids in sources:
            ext = ".jpg" if source == "pascal" else ".JPEG"
            for image_id in ids:
                bar.update()
                image = self.root / "Images" / f"{cls}_{source}" / f"{image_id}{ext}"
                if source == "pascal" and not image.is_file():
                    continue  # VOC lists every image; only those with the class have a PASCAL3D+ copy
                if not image.is_file():
                    raise InputError(f"image {image} of the list not found", list_file, f"id {image_id}")
                ann = self.root / "Annotations" / f"{cls}_{source}" / f"{image_id}.mat"
                obj, reason = read_first_object(ann)
                if obj is not None and obj["class"] not in PASCAL3D_CLASSES:
                    obj, reason = None, f"class {obj['class']!r} is not one of the 12"
                name = f"{cls}_{source}/{image_id}{ext}"
                if obj is None:
                    rejects.append(Reject("pascal3d", split, len(files) + len(rejects), name, reason))
                    continue
                rows.append(obj)
                files.append((name, image, ann))
        bar.close()
        return self._records(split, rows, files, rejects)

    def _records(self, split, rows, files, rejects) -> CategoryRecords:
        n = len(rows)
        R = np.array([viewpoint_to_R_cam_obj(r["azimuth"], r["elevation"], r["theta"]) for r in rows]).reshape(n, 3, 3)
        K = np.array([annotation_camera(r["focal_px"], r["px"], r["py"], r["width"], r["height"]).K
                      for r in rows]).reshape(n, 3, 3)
        return CategoryRecords(
            domain="pascal3d", split=split, filenames=[f[0] for f in files], image_paths=[f[1] for f in files],
            q_wxyz=np.asarray(matrix_to_quat_wxyz(R)).reshape(n, 4), r_cam_m=np.full((n, 3), np.nan),
            labelled=np.ones(n, bool), source_index=np.arange(n, dtype=np.int64), rejects=rejects,
            R_cam_obj=R, category_ids=np.array([PASCAL3D_CLASSES.index(r["class"]) for r in rows], np.int64),
            category_names=PASCAL3D_CLASSES,
            extras={"K": K, "box_xyxy": np.array([r["box_xyxy"] for r in rows]).reshape(n, 4),
                    "image_size": np.array([(r["width"], r["height"]) for r in rows], np.int64).reshape(n, 2),
                    "distance": np.array([r["distance"] for r in rows], np.float64),
                    "viewpoint_deg": np.array([(r["azimuth"], r["elevation"], r["theta"]) for r in rows],
                                              np.float64).reshape(n, 3)})

    def _synthetic_records(self) -> CategoryRecords:
        if self.synthetic_root is None:
            raise InputError("no synthetic_root given for the RenderForCNN split")
        base = self.synthetic_root / SYNTHETIC_DIR
        if not base.is_dir():
            raise InputError(f"RenderForCNN folder {SYNTHETIC_DIR}/ not found", self.synthetic_root)
        rows, files = [], []
        for cls, synset in zip(PASCAL3D_CLASSES, RENDERFORCNN_SYNSETS):
            for image in sorted((base / synset).glob("*/*")):
                m = _SYN_NAME.search(image.name)
                if m is None:
                    if image.suffix.lower() in (".png", ".jpg", ".jpeg"):
                        raise InputError("expected a name ending in _a<az>_e<el>_t<theta>_d<dist>.png", image)
                    continue
                # sizes are read when the image is (RenderForCNN has millions of files): NaN = "the whole image,
                # principal point at its centre", resolved by :func:`resolve_camera_and_box`
                rows.append({"class": cls, "azimuth": float(m[1]), "elevation": float(m[2]), "theta": -float(m[3]),
                             "distance": SYNTHETIC_DISTANCE, "focal_px": SYNTHETIC_FOCAL_PX,
                             "px": np.nan, "py": np.nan, "width": 0, "height": 0,
                             "box_xyxy": np.full(4, np.nan)})
                files.append((f"{synset}/{image.parent.name}/{image.name}", image, None))
        return self._records("synthetic", rows, files, [])


def resolve_camera_and_box(K: np.ndarray, box_xyxy: np.ndarray, width: int, height: int
                           ) -> tuple[Camera, np.ndarray]:
    """The annotation camera and box of a record whose image is (height, width); NaN principal point / box (the
    RenderForCNN records) mean "at the image centre" / "the whole image"."""
    K = np.array(K, dtype=np.float64)
    if np.isnan(K[0, 2]) or np.isnan(K[1, 2]):
        K[0, 2], K[1, 2] = (width - 1) / 2, (height - 1) / 2
    box = np.asarray(box_xyxy, dtype=np.float64)
    if np.isnan(box).any():
        box = np.array([0.0, 0.0, width - 1.0, height - 1.0])
    return Camera(K, np.zeros(5), int(width), int(height)), box


def read_rgb(path: Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB (grey images repeated); InputError when unreadable."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError("unreadable image (expected a JPEG or PNG)", path)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
