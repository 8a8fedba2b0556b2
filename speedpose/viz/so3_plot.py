"""Distributions over SO(3) drawn the Implicit-PDF / I2S way.

Each rotation R is a dot on a Mollweide map at the direction of its rotated z axis ``R @ e_z`` (longitude =
azimuth from +x towards +y, latitude = elevation above the xy plane), coloured by the in-plane angle about that
axis (the third ZYZ Euler angle, cyclic colour map) and sized by its probability.  The true rotation is a large open
circle in the colour of its own in-plane angle.  Axes are those of the frame of the rotations (the camera frame for
I2S outputs).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from speedpose.errors import ShapeError
from speedpose.io_utils import atomic_path

__all__ = ["so3_plot_coordinates", "plot_so3_distribution"]


def so3_plot_coordinates(R) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(longitude, latitude, in-plane angle) in radians of rotations (N, 3, 3); in-plane angle in [0, 2 pi)."""
    R = R.detach().cpu().double().numpy() if isinstance(R, torch.Tensor) else np.asarray(R, dtype=np.float64)
    if R.ndim != 3 or R.shape[1:] != (3, 3):
        raise ShapeError(f"rotations: expected shape (N, 3, 3), got {R.shape}")
    z = R[:, :, 2]
    lon = np.arctan2(z[:, 1], z[:, 0])
    lat = np.arcsin(np.clip(z[:, 2], -1.0, 1.0))
    psi = np.mod(np.arctan2(R[:, 2, 1], -R[:, 2, 0]), 2 * math.pi)
    return lon, lat, psi


def plot_so3_distribution(rotations, probs, path: str | Path, R_true=None, title: str | None = None,
                          max_points: int = 20000, max_dot_size: float = 400.0, dpi: int = 120) -> Path:
    """Write a PNG of a distribution over SO(3).

    Args:
        rotations: (N, 3, 3) grid rotations.
        probs: (N,) probabilities (or any non-negative weights) of the rotations.
        path: output PNG (written atomically).
        R_true: (3, 3) or (K, 3, 3) ground-truth rotation(s) to mark, optional.
        max_points: only the most probable points are drawn.
    Returns:
        the path written.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    p = probs.detach().cpu().double().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs, float)
    lon, lat, psi = so3_plot_coordinates(rotations)
    if p.shape != lon.shape:
        raise ShapeError(f"probs: expected shape ({len(lon)},) matching the rotations, got {p.shape}")
    order = np.argsort(-p)[:max_points]
    order = order[p[order] > p[order[0]] * 1e-3]
    order = order[::-1]  # most probable drawn last (on top)
    cmap = colormaps["hsv"]
    fig = Figure(figsize=(8, 4.6))
    FigureCanvasAgg(fig)
    ax = fig.add_axes([0.03, 0.08, 0.8, 0.84], projection="mollweide")
    ax.scatter(lon[order], lat[order], s=max_dot_size * p[order] / p[order].max(), c=psi[order] / (2 * math.pi),
               cmap=cmap, vmin=0, vmax=1, linewidths=0)
    if R_true is not None:
        Rt = R_true.detach().cpu().double().numpy() if isinstance(R_true, torch.Tensor) else np.asarray(R_true)
        Rt = Rt.reshape(-1, 3, 3)
        tl, tb, tp = so3_plot_coordinates(Rt)
        # a black ring around a ring in the in-plane colour: visible on top of any dot colour
        ax.scatter(tl, tb, s=3.0 * max_dot_size, facecolors="none", edgecolors="black", linewidths=3.5, zorder=3)
        ax.scatter(tl, tb, s=3.0 * max_dot_size, facecolors="none", edgecolors=cmap(tp / (2 * math.pi)),
                   linewidths=1.8, zorder=4, label="true rotation")
        ax.legend(loc="lower left", fontsize=8, frameon=False, bbox_to_anchor=(0.0, -0.12))
    ax.grid(True, alpha=0.4)
    ax.tick_params(labelsize=7)
    if title:
        ax.set_title(title, fontsize=10, pad=14)
    # colour wheel of the in-plane angle
    wheel = fig.add_axes([0.84, 0.36, 0.14, 0.28], projection="polar")
    theta = np.linspace(0, 2 * math.pi, 256)
    wheel.scatter(theta, np.ones_like(theta), c=theta / (2 * math.pi), cmap=cmap, s=30, linewidths=0)
    wheel.set_yticks([])
    wheel.set_ylim(0, 1.3)
    wheel.set_xticks(np.linspace(0, 2 * math.pi, 4, endpoint=False))
    wheel.set_xticklabels(["0", "90", "180", "270"], fontsize=7)
    wheel.set_title("in-plane angle (deg)", fontsize=8)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path

