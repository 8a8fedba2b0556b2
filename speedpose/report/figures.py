"""Figures of the evaluation report (matplotlib, Agg backend, PNG written atomically).

* :func:`error_histograms`: E_R [deg] and E_T [m] over a domain's images;
* :func:`errors_vs_distance`: both errors against the true distance, truncated images marked;
* :func:`reliability_diagram`: observed Acc@k against the predicted rotation confidence
  (:func:`speedpose.report.tables.reliability`).

SO(3) distribution plots are :func:`speedpose.viz.so3_plot.plot_so3_distribution`.
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


def reliability_diagram(table: dict, path: str | Path, title: str = "") -> Path:
    """Observed Acc@2/5/10/15 per confidence bin against the bin's mean confidence (``table``:
    :func:`speedpose.report.tables.reliability`); the diagonal is perfect calibration for Acc@15, the radius the
    confidence measures.  Returns ``path``."""
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    bins = table.get("bins", [])
    x = [b["mean_confidence"] for b in bins]
    keys = sorted((k for k in (bins[0] if bins else {}) if k.startswith("acc@")), key=lambda k: float(k[4:]))
    for k, color in zip(keys, ("#cc3311", "#ee7733", "#009988", "#4477aa")):
        ax.plot(x, [b[k] for b in bins], "o-", color=color, label=f"Acc@{k[4:]} deg observed")
    ax.plot([0, 1], [0, 1], color="gray", lw=1, ls="--", label="calibrated (Acc@15)")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"predicted confidence (mass within {table.get('radius_deg', 15):g} deg of the mode)")
    ax.set_ylabel("fraction of images")
    ax.legend(loc="upper left", fontsize=7)
    ece = table.get("ece")
    fig.suptitle(title or (f"reliability, {len(bins)} bins" + (f", ECE {ece:.3f}" if ece is not None else "")),
                 fontsize=10)
    return _save(fig, path)
