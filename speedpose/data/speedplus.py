"""SPEED+ reader and record validation (real dataset or stand-in, same layout).

Layout under a root (any domain may be missing; a test file may carry labels or only file names)::

    camera.json
    synthetic/train.json  synthetic/validation.json  synthetic/images/  [synthetic/masks/]
    lightbox/test.json    lightbox/images/           [lightbox/masks/]
    sunlamp/test.json     sunlamp/images/            [sunlamp/masks/]

Validation (every message names the domain, split, label file, record index, file name and what is wrong):
label records are objects with a plain ``filename`` (no directory part, no ``..``: a label file never makes speedpose
read or write outside the dataset), unique within the domain (synthetic train and validation share ``images/``);
poses, when present, have a finite quaternion of norm 1 within 1e-3 (renormalised) and a finite translation with
z > 0; the image exists and is a JPEG of the camera's size (checked from its header and end marker here, and by
decoding it during preprocessing); when ``<domain>/masks/`` exists each image has a mask of the same name.
Malformed JSON and a bad ``camera.json`` always stop; record-level problems stop unless ``skip_bad`` is set, in which
case the record is left out and listed as a :class:`~speedpose.data.base.Reject`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from speedpose.camera import Camera, load_camera
from speedpose.data.base import DatasetAdapter, PoseRecords, Reject
from speedpose.errors import InputError
from speedpose.io_utils import read_json
from speedpose.labels import DOMAINS, Q_KEY, R_KEY, check_plain_filename, label_file, validate_quat, \
    validate_translation

#: the splits of each domain, in the order they are read (a duplicate name is reported in the later split)
SPLITS: dict[str, tuple[str, ...]] = {"synthetic": ("train", "validation"), "lightbox": ("test",),
                                      "sunlamp": ("test",)}


def available_splits(root: str | Path, domains: tuple[str, ...] | list[str] | None = None) -> list[tuple[str, str]]:
    """``(domain, split)`` pairs whose label file exists under ``root`` (all domains when ``domains`` is None)."""
    out = []
    for domain in domains if domains is not None else DOMAINS:
        for split in SPLITS[domain]:
            if label_file(root, domain, split).is_file():
                out.append((domain, split))
    return out


# ------------------------------------------------------------------------------------------------ JPEG headers
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_header_problem(path: Path, width: int, height: int) -> str | None:
    """Cheap check of a JPEG file without decoding it: ``None`` when it looks whole and is ``width x height``.

    Reads the start-of-image marker, walks the segments to the frame header (SOFn) for the size and checks that
    the file ends with the end-of-image marker (a truncated file does not).  Returns the problem otherwise.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if f.read(2) != b"\xff\xd8":
                return "not a JPEG file (no start-of-image marker)"
            f.seek(max(0, size - 64))
            tail = f.read().rstrip(b"\x00\r\n ")
            if not tail.endswith(b"\xff\xd9"):
                return "truncated JPEG (no end-of-image marker)"
            f.seek(2)
            while True:
                byte = f.read(1)
                if not byte:
                    return "truncated JPEG (no frame header)"
                if byte != b"\xff":
                    continue
                marker = f.read(1)
                while marker == b"\xff":  # fill bytes
                    marker = f.read(1)
                if not marker:
                    return "truncated JPEG (no frame header)"
                m = marker[0]
                if m == 0xD8 or 0xD0 <= m <= 0xD7 or m == 0x01 or m == 0x00:
                    continue
                if m in (0xD9, 0xDA):
                    return "malformed JPEG (image data before the frame header)"
                seg = f.read(2)
                if len(seg) < 2:
                    return "truncated JPEG (no frame header)"
                length = int.from_bytes(seg, "big")
                if m in _SOF_MARKERS:
                    body = f.read(5)
                    if len(body) < 5:
                        return "truncated JPEG (short frame header)"
                    h, w = int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big")
                    if (w, h) != (width, height):
                        return f"image is {w}x{h}, expected the camera's {width}x{height}"
                    return None
                f.seek(length - 2, 1)
    except OSError as exc:
        return f"cannot read the image ({exc.strerror})"


# ------------------------------------------------------------------------------------------------ the adapter
class SpeedplusAdapter(DatasetAdapter):
    """Validated records of one SPEED+ domain.

    Args:
        root: SPEED+ root (the folder holding ``camera.json``).
        domain: ``synthetic``, ``lightbox`` or ``sunlamp``.
        camera: the dataset's camera (default: ``root/camera.json``, validated).
        skip_bad: leave bad records out and list them (default: raise on the first one).
        check_images: check existence, JPEG markers and size of every image (and mask) from its header.
        progress: show a tqdm bar while validating.
    """

    def __init__(self, root: str | Path, domain: str, camera: Camera | None = None, skip_bad: bool = False,
                 check_images: bool = True, progress: bool = False):
        if domain not in SPLITS:
            raise InputError(f"unknown domain {domain!r}; expected one of {', '.join(SPLITS)}")
        self.root = Path(root)
        self.domain = domain
        self.splits = SPLITS[domain]
        self.camera = camera if camera is not None else load_camera(self.root / "camera.json")
        self.skip_bad = skip_bad
        self.check_images = check_images
        self.progress = progress
        self._raw_cache: dict[str, list] = {}

    @property
    def image_dir(self) -> Path:
        return self.root / self.domain / "images"

    @property
    def mask_dir(self) -> Path | None:
        """``<domain>/masks`` when it exists (masks are then required for every image)."""
        d = self.root / self.domain / "masks"
        return d if d.is_dir() else None

    def _raw(self, split: str) -> list:
        """The parsed label file of ``split`` (read once)."""
        if split not in self._raw_cache:
            path = label_file(self.root, self.domain, split)
            data = read_json(path)
            if not isinstance(data, list):
                raise InputError(f"expected a JSON list of label records, got {type(data).__name__}", path)
            self._raw_cache[split] = data
        return self._raw_cache[split]

    def _names_before(self, split: str) -> set[str]:
        """Plain file names of the splits read before ``split`` in this domain (duplicates are per domain)."""
        names: set[str] = set()
        for other in self.splits[:self.splits.index(split)]:
            if label_file(self.root, self.domain, other).is_file():
                names.update(r.get("filename") for r in self._raw(other)
                             if isinstance(r, dict) and isinstance(r.get("filename"), str))
        return names

    def _generate_records(self, split: str) -> PoseRecords:
        if split not in self.splits:
            raise InputError(f"domain {self.domain} has no split {split!r}; expected one of {', '.join(self.splits)}")
        path = label_file(self.root, self.domain, split)
        raw = self._raw(split)
        earlier = self._names_before(split)
        seen: dict[str, int] = {}
        mask_dir = self.mask_dir
        names, q_rows, r_rows, lab, src, rejects = [], [], [], [], [], []

        for i, rec in enumerate(tqdm(raw, desc=f"validating {self.domain}/{split}", unit="rec", leave=False,
                                     disable=not self.progress)):
            name_repr = rec.get("filename") if isinstance(rec, dict) else None
            name_repr = name_repr if isinstance(name_repr, str) else repr(name_repr)
            try:
                q, r, name = self._validate_record(i, rec, path, earlier, seen)
            except InputError as exc:
                reject = Reject(self.domain, split, i, name_repr, exc.detail)
                if not self.skip_bad:
                    raise InputError(exc.detail, path, f"{self.domain}/{split} index {i} ({name_repr})") from None
                rejects.append(reject)
                continue
            seen[name] = i
            names.append(name)
            lab.append(q is not None)
            q_rows.append(q if q is not None else np.full(4, np.nan))
            r_rows.append(r if r is not None else np.full(3, np.nan))
            src.append(i)

        n = len(names)
        records = PoseRecords(
            domain=self.domain, split=split, filenames=names,
            image_paths=[self.image_dir / nm for nm in names],
            q_wxyz=np.asarray(q_rows, dtype=np.float64).reshape(n, 4),
            r_cam_m=np.asarray(r_rows, dtype=np.float64).reshape(n, 3),
            labelled=np.asarray(lab, dtype=bool).reshape(n), source_index=np.asarray(src, dtype=np.int64).reshape(n),
            camera=self.camera, mask_paths=None if mask_dir is None else [mask_dir / nm for nm in names],
            label_path=path, rejects=rejects)
        return self.check_record_images(records) if self.check_images else records

    def check_record_images(self, records: PoseRecords) -> PoseRecords:
        """Check each record's image (exists, JPEG start/end markers, the camera's size from the frame header) and
        mask (exists, when the domain has ``masks/``) without decoding; bad records raise or, with ``skip_bad``, are
        dropped and added to ``rejects``."""
        keep, rejects = [], list(records.rejects)
        masks = records.mask_paths or [None] * len(records)
        for k, (name, img, mask) in enumerate(tqdm(list(zip(records.filenames, records.image_paths, masks)),
                                                   desc=f"checking {self.domain}/{records.split} images",
                                                   unit="img", leave=False, disable=not self.progress)):
            if not img.is_file():
                problem = f"image file missing: {img}"
            else:
                problem = jpeg_header_problem(img, self.camera.width, self.camera.height)
                problem = f"image {img}: {problem}" if problem else None
            if problem is None and mask is not None and not mask.is_file():
                problem = f"mask file missing: {mask} (the domain has a masks/ folder)"
            if problem is None:
                keep.append(k)
                continue
            i = int(records.source_index[k])
            if not self.skip_bad:
                raise InputError(problem, records.label_path, f"{self.domain}/{records.split} index {i} ({name})")
            rejects.append(Reject(self.domain, records.split, i, name, problem))
        rejects.sort(key=lambda r: r.index)
        out = records.subset(keep)
        return replace(out, rejects=rejects)

    def _validate_record(self, i: int, rec: object, path: Path, earlier: set[str], seen: dict[str, int]
                         ) -> tuple[np.ndarray | None, np.ndarray | None, str]:
        """Raise InputError (its ``detail`` is the reason) or return ``(q_wxyz | None, r_cam_m | None, name)``."""
        where = f"index {i}"
        if not isinstance(rec, dict):
            raise InputError(f"expected an object with 'filename', got {type(rec).__name__}")
        name = check_plain_filename(rec.get("filename"), where)
        if name in seen:
            raise InputError(f"duplicate file name in {self.domain} (first at index {seen[name]} of this file)")
        if name in earlier:
            raise InputError(f"duplicate file name in {self.domain} (already listed in an earlier split)")
        has_q, has_r = Q_KEY in rec, R_KEY in rec
        if has_q != has_r:
            raise InputError(f"record has only {Q_KEY if has_q else R_KEY}; need both or neither")
        q = r = None
        if has_q:
            q = validate_quat(rec[Q_KEY], where)
            r = validate_translation(rec[R_KEY], where)
        return q, r, name


def read_split(root: str | Path, domain: str, split: str, skip_bad: bool = False) -> PoseRecords:
    """Shortcut: the validated records of one split of a SPEED+ root (see :class:`SpeedplusAdapter`)."""
    return SpeedplusAdapter(root, domain, skip_bad=skip_bad).get_records(split)
