"""The per-split index table: one row per image, flat numeric columns, stored as parquet through pandas.

Columns (pixels are FULL-RESOLUTION distorted pixels of the dataset camera, OpenCV pixel-centre convention;
poses: ``p_cam = R(q) p_body + r``, camera frame x right, y down, z forward):

=========================================  ======================================================================
``filename``                               plain file name (key within the domain)
``source_index``                           position of the record in its label file
``image_row``                              row of the image in the split's image store
``labelled``                               False for records without a pose (all pose columns NaN then)
``q_w q_x q_y q_z``                        unit quaternion, scalar first, sign as in the label file
``qc_w qc_x qc_y qc_z``                    the same rotation with the canonical sign (w >= 0)
``r_x_m r_y_m r_z_m``                      body origin in the camera frame [m]
``distance_m``                             ``|r|`` [m]
``kp00_u kp00_v ... kp10_u kp10_v``        the 11 Tango keypoints projected with distortion [px]
``kp_box_x0 kp_box_y0 kp_box_x1 kp_box_y1``  their bounding box, not clipped [px]
``kp_box_clip_x0 ... kp_box_clip_y1``      the same box clipped to ``[0, W-1] x [0, H-1]`` [px]
``truncated``                              at least one keypoint outside the image (nullable: NA when unlabelled)
``n_kp_inside``                            keypoints inside the image (-1 when unlabelled)
``mask_box_x0 ... mask_box_y1``            box of the mask's pixels [px, inclusive]; NaN without mask or when empty
=========================================  ======================================================================
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from speedpose.camera import Camera
from speedpose.data.base import PoseRecords
from speedpose.geometry.rotations import canonical_quat_wxyz
from speedpose.io_utils import atomic_path
from speedpose.tango import keypoint_box, project_keypoints, tango_keypoints_body

N_KEYPOINTS = len(tango_keypoints_body())
Q_COLUMNS = ["q_w", "q_x", "q_y", "q_z"]
QC_COLUMNS = ["qc_w", "qc_x", "qc_y", "qc_z"]
R_COLUMNS = ["r_x_m", "r_y_m", "r_z_m"]
KP_COLUMNS = [f"kp{k:02d}_{c}" for k in range(N_KEYPOINTS) for c in ("u", "v")]
BOX = ["x0", "y0", "x1", "y1"]
KP_BOX_COLUMNS = [f"kp_box_{c}" for c in BOX]
KP_BOX_CLIP_COLUMNS = [f"kp_box_clip_{c}" for c in BOX]
MASK_BOX_COLUMNS = [f"mask_box_{c}" for c in BOX]
INDEX_COLUMNS = (["filename", "source_index", "image_row", "labelled"] + Q_COLUMNS + QC_COLUMNS + R_COLUMNS
                 + ["distance_m"] + KP_COLUMNS + KP_BOX_COLUMNS + KP_BOX_CLIP_COLUMNS
                 + ["truncated", "n_kp_inside"] + MASK_BOX_COLUMNS)


def build_index(records: PoseRecords, camera: Camera, image_rows: np.ndarray,
                mask_boxes: np.ndarray | None = None) -> pd.DataFrame:
    """The index table of ``records`` (see the module docstring for the columns).

    Args:
        records: N validated records.
        camera: the full-resolution camera the keypoints are projected with.
        image_rows: (N,) row of each record in the image store.
        mask_boxes: (N, 4) mask boxes [px] or None.
    """
    n = len(records)
    lab = np.asarray(records.labelled, dtype=bool)
    q = np.full((n, 4), np.nan)
    qc = np.full((n, 4), np.nan)
    r = np.full((n, 3), np.nan)
    kp = np.full((n, N_KEYPOINTS, 2), np.nan)
    box = np.full((n, 4), np.nan)
    box_clip = np.full((n, 4), np.nan)
    n_inside = np.full(n, -1, dtype=np.int64)
    truncated = pd.array([pd.NA] * n, dtype="boolean")
    if lab.any():
        q[lab] = records.q_wxyz[lab]
        qc[lab] = canonical_quat_wxyz(records.q_wxyz[lab])
        r[lab] = records.r_cam_m[lab]
        kp[lab] = project_keypoints(camera, q[lab], r[lab])
        kb = keypoint_box(kp[lab], camera.width, camera.height)
        box[lab], box_clip[lab] = kb.unclipped, kb.clipped
        n_inside[lab] = camera.in_image(kp[lab]).sum(axis=-1)
        truncated[np.flatnonzero(lab)] = kb.truncated
    cols: dict[str, object] = {
        "filename": pd.array(list(records.filenames), dtype="string"),
        "source_index": np.asarray(records.source_index, dtype=np.int64),
        "image_row": np.asarray(image_rows, dtype=np.int64),
        "labelled": lab,
    }
    cols.update({c: q[:, j] for j, c in enumerate(Q_COLUMNS)})
    cols.update({c: qc[:, j] for j, c in enumerate(QC_COLUMNS)})
    cols.update({c: r[:, j] for j, c in enumerate(R_COLUMNS)})
    cols["distance_m"] = np.linalg.norm(r, axis=-1)
    flat = kp.reshape(n, 2 * N_KEYPOINTS)
    cols.update({c: flat[:, j] for j, c in enumerate(KP_COLUMNS)})
    cols.update({c: box[:, j] for j, c in enumerate(KP_BOX_COLUMNS)})
    cols.update({c: box_clip[:, j] for j, c in enumerate(KP_BOX_CLIP_COLUMNS)})
    cols["truncated"] = truncated
    cols["n_kp_inside"] = n_inside
    mb = np.full((n, 4), np.nan) if mask_boxes is None else np.asarray(mask_boxes, dtype=np.float64).reshape(n, 4)
    cols.update({c: mb[:, j] for j, c in enumerate(MASK_BOX_COLUMNS)})
    return pd.DataFrame(cols, columns=INDEX_COLUMNS)


def write_index(path: str | Path, df: pd.DataFrame) -> None:
    """Write an index table as parquet, atomically."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, engine="pyarrow", index=False)


def read_index(path: str | Path) -> pd.DataFrame:
    """Read an index table written by :func:`write_index`."""
    return pd.read_parquet(path, engine="pyarrow")


# ------------------------------------------------------------------------------------------------ accessors
def q_wxyz(df: pd.DataFrame, canonical: bool = False) -> np.ndarray:
    """(N, 4) quaternions (scalar first), raw sign or canonical (w >= 0); NaN rows when unlabelled."""
    return df[QC_COLUMNS if canonical else Q_COLUMNS].to_numpy(dtype=np.float64)


def r_cam_m(df: pd.DataFrame) -> np.ndarray:
    """(N, 3) body origin in the camera frame [m]."""
    return df[R_COLUMNS].to_numpy(dtype=np.float64)


def kp_uv(df: pd.DataFrame) -> np.ndarray:
    """(N, 11, 2) projected keypoints [full-resolution px]."""
    return df[KP_COLUMNS].to_numpy(dtype=np.float64).reshape(len(df), N_KEYPOINTS, 2)


def kp_box(df: pd.DataFrame, clipped: bool = True) -> np.ndarray:
    """(N, 4) keypoint box (x0, y0, x1, y1) [full-resolution px], clipped to the image or not."""
    return df[KP_BOX_CLIP_COLUMNS if clipped else KP_BOX_COLUMNS].to_numpy(dtype=np.float64)


def mask_box(df: pd.DataFrame) -> np.ndarray:
    """(N, 4) mask box (x0, y0, x1, y1) [full-resolution px]; NaN rows without a mask."""
    return df[MASK_BOX_COLUMNS].to_numpy(dtype=np.float64)
