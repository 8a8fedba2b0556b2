"""Figures of the evaluation report (matplotlib, Agg backend, PNG written atomically).

* :func:`error_histograms`: E_R [deg] and E_T [m] over a domain's images;
* :func:`errors_vs_distance`: both errors against the true distance, truncated images marked;
* :func:`so3_distribution_plot`: a predicted distribution on SO(3) in the Implicit-PDF style (Murphy et al. 2021):
  each grid rotation R (camera <- body) is drawn at the direction of the body z axis in the camera frame
  (``R[:, 2]``, Mollweide projection: longitude ``atan2(R[1,2], R[0,2])``, latitude ``asin(R[2,2])``), coloured by
  the remaining rotation about that axis (the third ZYZ Euler angle ``atan2(R[2,1], -R[2,0])``), with a marker area
  proportional to its probability; the true rotation is an open circle of the same colour code, the estimate a cross.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from speedpose.io_utils import atomic_path  # noqa: E402


def _save(fig, path: str | Path, dpi: int = 110) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def error_histograms(df: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Histograms of ``e_r_deg`` and ``e_t_m`` of a per-image table; medians marked. Returns ``path``."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, col, label in ((axes[0], "e_r_deg", "rotation error E_R [deg]"),
                           (axes[1], "e_t_m", "translation error E_T [m]")):
        v = df[col].to_numpy(dtype=float)
        hi = 180.0 if col == "e_r_deg" else max(float(np.nanmax(v)) if v.size else 1.0, 1e-3)
        ax.hist(v, bins=36, range=(0.0, hi), color="#4477aa", edgecolor="white")
        if v.size:
            med = float(np.median(v))
            ax.axvline(med, color="#cc3311", lw=1.5, label=f"median {med:.3g}")
            ax.legend(loc="upper right", fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("images")
    fig.suptitle(title or f"errors over {len(df)} images", fontsize=10)
    return _save(fig, path)


def errors_vs_distance(df: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Scatter of E_R [deg] and E_T [m] against the true distance [m]; truncated images as red triangles."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    trunc = df["truncated"].to_numpy(dtype=bool) if "truncated" in df else np.zeros(len(df), bool)
    for ax, col, label in ((axes[0], "e_r_deg", "E_R [deg]"), (axes[1], "e_t_m", "E_T [m]")):
        d, v = df["distance_m"].to_numpy(float), df[col].to_numpy(float)
        ax.scatter(d[~trunc], v[~trunc], s=12, c="#4477aa", label="whole", alpha=0.8)
        if trunc.any():
            ax.scatter(d[trunc], v[trunc], s=16, c="#cc3311", marker="^", label="truncated", alpha=0.8)
        ax.set_xlabel("true distance |r| [m]")
        ax.set_ylabel(label)
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(title or "errors versus distance", fontsize=10)
    return _save(fig, path)


def _mollweide_coords(R: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(longitude, latitude, tilt) [rad] of rotations (N, 3, 3), see the module docstring."""
    lon = np.arctan2(R[:, 1, 2], R[:, 0, 2])
    lat = np.arcsin(np.clip(R[:, 2, 2], -1.0, 1.0))
    tilt = np.arctan2(R[:, 2, 1], -R[:, 2, 0])
    return lon, lat, tilt


def so3_distribution_plot(R_grid: np.ndarray, probs: np.ndarray, path: str | Path,
                          R_true: np.ndarray | None = None, R_pred: np.ndarray | None = None,
                          title: str = "", mass: float = 0.95, max_points: int = 4000) -> Path:
    """Plot a distribution on SO(3) (see the module docstring).

    Args:
        R_grid: (N, 3, 3) grid rotations in the frame to show (e.g. camera <- body).
        probs: (N,) probability mass per grid cell (sums to 1).
        R_true, R_pred: (3, 3) the true and the estimated rotation, same frame.
        mass: the most probable cells holding this much mass are drawn (at most ``max_points``).
    """
    R_grid = np.asarray(R_grid, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    order = np.argsort(-p)
    keep = order[:max(1, min(max_points, int(np.searchsorted(np.cumsum(p[order]), mass)) + 1))]
    lon, lat, tilt = _mollweide_coords(R_grid[keep])
    cmap = plt.get_cmap("hsv")
    norm = plt.Normalize(-np.pi, np.pi)
    fig = plt.figure(figsize=(6.4, 3.6))
    ax = fig.add_subplot(111, projection="mollweide")
    size = 4 + 120 * p[keep] / max(float(p[keep].max()), 1e-12)
    ax.scatter(lon, lat, s=size, c=cmap(norm(tilt)), alpha=0.7, linewidths=0)
    for R, marker, label in ((R_true, "o", "true"), (R_pred, "x", "estimate")):
        if R is None:
            continue
        lo, la, ti = _mollweide_coords(np.asarray(R, dtype=np.float64)[None])
        if marker == "o":
            ax.scatter(lo, la, s=260, marker="o", facecolors="none", edgecolors=[cmap(norm(ti[0]))],
                       linewidths=2.5, label=label)
        else:
            ax.scatter(lo, la, s=140, marker="x", c="black", linewidths=2.0, label=label)
    ax.grid(True, alpha=0.4)
    ax.set_xticklabels([])
    ax.legend(loc="lower right", fontsize=7, framealpha=0.7)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=norm)
    cb = fig.colorbar(sm, ax=ax, fraction=0.03, pad=0.04)
    cb.set_label("rotation about body z [rad]", fontsize=7)
    ax.set_title(title or f"SO(3) distribution ({len(keep)} cells hold {mass:.0%} of the mass)", fontsize=9)
    return _save(fig, path)
