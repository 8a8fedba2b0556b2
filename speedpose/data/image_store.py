"""Decoding SPEED+ JPEGs and storing resized copies as one memory-mappable uint8 array per split.

The store is a plain ``.npy`` file of shape (N, H, W), uint8, grayscale: ``np.load(path, mmap_mode="r")[i]`` reads
one image without decoding anything.  Writers fill rows in place with ``os.pwrite`` (several processes may write
disjoint rows of the same file); nothing stays mapped in the writer, so its memory does not grow with N.

Resizing: the JPEG is decoded at 1/2, 1/4 or 1/8 scale by libjpeg when the target is at most that size (DCT
scaling, much cheaper than a full decode), then resampled with ``cv2.INTER_AREA`` to exactly W x H (the aspect
ratio is not kept: 1920x1200 -> 768x512 scales x by 0.4 and y by 0.4267; :meth:`speedpose.camera.Camera.resized`
gives the matching intrinsics).  Pixel-centre convention as in :mod:`speedpose.camera`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np

_REDUCED_FLAGS = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
                  8: cv2.IMREAD_REDUCED_GRAYSCALE_8}


def decode_scale(full_size: tuple[int, int], target_size: tuple[int, int]) -> int:
    """Largest libjpeg scale denominator (1, 2, 4, 8) whose decoded image is still at least ``target_size``.

    Sizes are (width, height) in pixels.
    """
    (fw, fh), (tw, th) = full_size, target_size
    best = 1
    for s in (2, 4, 8):
        if math.ceil(fw / s) >= tw and math.ceil(fh / s) >= th:
            best = s
    return best


def decode_gray(data: bytes | np.ndarray, scale: int = 1) -> np.ndarray | None:
    """Decode JPEG bytes to grayscale uint8 (H/scale, W/scale), or None when the data does not decode.

    Grayscale decoding makes 1-channel and 3-channel (R=G=B) files give the same result.
    """
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
    if buf.size == 0:
        return None
    return cv2.imdecode(buf, _REDUCED_FLAGS[scale])


def read_gray(path: str | Path, scale: int = 1) -> np.ndarray | None:
    """Decode a JPEG file to grayscale uint8 (see :func:`decode_gray`); None when it does not decode."""
    return decode_gray(Path(path).read_bytes(), scale)


def resize_gray(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resample a grayscale image to ``size`` = (W, H) with area averaging (or keep it when already that size)."""
    w, h = size
    if img.shape[:2] == (h, w):
        return np.ascontiguousarray(img)
    interp = cv2.INTER_AREA if (w <= img.shape[1] and h <= img.shape[0]) else cv2.INTER_LINEAR
    return cv2.resize(img, (w, h), interpolation=interp)


def load_resized(path: str | Path, full_size: tuple[int, int], size: tuple[int, int]) -> tuple[np.ndarray | None, str]:
    """Decode ``path`` (a JPEG of ``full_size`` = (W, H)) straight to ``size`` = (W, H).

    Returns:
        (image uint8 (H, W) or None, problem ("" when fine)).
    """
    scale = decode_scale(full_size, size)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return None, f"cannot read the image ({exc.strerror})"
    img = decode_gray(data, scale)
    if img is None:
        return None, "the JPEG does not decode"
    expect = (math.ceil(full_size[1] / scale), math.ceil(full_size[0] / scale))
    if img.shape[:2] != expect:
        got = (img.shape[1] * scale, img.shape[0] * scale)
        return None, f"image decodes to about {got[0]}x{got[1]}, expected {full_size[0]}x{full_size[1]}"
    return resize_gray(img, size), ""


def mask_box(path: str | Path, full_size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """Bounding box (x0, y0, x1, y1) [full-resolution px, inclusive pixel indices] of a mask's pixels > 127.

    Returns:
        ((4,) float64 box, NaN when the mask is empty; problem ("" when fine)).
    """
    m = read_gray(path) if Path(path).is_file() else None
    if m is None:
        return np.full(4, np.nan), f"mask {path} does not decode"
    if m.shape[:2] != (full_size[1], full_size[0]):
        return np.full(4, np.nan), f"mask {path} is {m.shape[1]}x{m.shape[0]}, expected {full_size[0]}x{full_size[1]}"
    ys, xs = np.nonzero(m > 127)
    if xs.size == 0:
        return np.full(4, np.nan), ""
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float64), ""


# ------------------------------------------------------------------------------------------------ the store
def create_store(path: str | Path, n: int, size: tuple[int, int]) -> None:
    """Create an all-zero (n, H, W) uint8 ``.npy`` at ``path`` (sparse on disk until rows are written)."""
    w, h = size
    path = Path(path)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (n, h, w)})
        f.truncate(f.tell() + n * h * w)


def store_offset(path: str | Path) -> tuple[int, tuple[int, int, int]]:
    """Byte offset of the first row and the (N, H, W) shape of a store."""
    with open(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        reader = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(f)
        if dtype != np.uint8 or fortran or len(shape) != 3:
            raise ValueError(f"{path}: not an (N, H, W) uint8 C-order array")
        return f.tell(), tuple(int(s) for s in shape)


def write_rows(fd: int, offset: int, first_row: int, images: np.ndarray) -> None:
    """Write consecutive rows ``images`` (k, H, W) uint8 at row ``first_row`` of a store opened as ``fd``."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    row_bytes = images[0].nbytes if len(images) else 0
    data = memoryview(images).cast("B")
    pos = offset + first_row * row_bytes
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], pos + done)


def open_store(path: str | Path) -> np.ndarray:
    """The (N, H, W) uint8 images of a store, memory-mapped read-only (a plain empty array when N == 0)."""
    _, shape = store_offset(path)
    if shape[0] == 0:
        return np.zeros(shape, dtype=np.uint8)
    return np.load(path, mmap_mode="r")


# ------------------------------------------------------------------------------------------------ worker side
def init_worker() -> None:
    """Initialiser of a preprocessing worker process: one OpenCV thread (one process per core), Ctrl-C left to
    the parent (which keeps the finished chunks for a resume)."""
    import signal

    cv2.setNumThreads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def prepare_chunk(store: str, offset: int, first_row: int, images: list[str], masks: list[str | None],
                  full_size: tuple[int, int], size: tuple[int, int]) -> list[tuple[bool, str, list]]:
    """Decode, check and resize ``images`` and write them as rows ``first_row, ...`` of the store ``store``.

    Args:
        store: path of a store made by :func:`create_store`; ``offset``: its :func:`store_offset`.
        images: JPEG paths; masks: mask paths (or None entries).
        full_size: (W, H) the images must have; size: (W, H) of the stored rows.
    Returns:
        per image ``(ok, problem, mask_box)``: ``problem`` is "" when ok, ``mask_box`` [x0, y0, x1, y1] full-resolution
        px (NaN without mask).  Rows of failed images stay zero.
    """
    out = []
    fd = os.open(store, os.O_WRONLY)
    try:
        for j, (img_path, mask_path) in enumerate(zip(images, masks)):
            img, problem = load_resized(img_path, full_size, size)
            box = [float("nan")] * 4
            if img is not None:
                write_rows(fd, offset, first_row + j, img[None])
                if mask_path is not None:
                    mb, problem = mask_box(mask_path, full_size)
                    box = mb.tolist()
            out.append((img is not None and problem == "", problem, box))
    finally:
        os.close(fd)
    return out
