"""A static ``report.html`` for one evaluation: the numbers, the breakdowns and the pictures (relative links).

No JavaScript and no external resources: the page renders offline and in a headless browser.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Mapping, Sequence

from speedpose.io_utils import atomic_write_text

_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 0.5em 0 1.2em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 3px 8px; text-align: right; }
th { background: #eee; } td.l, th.l { text-align: left; }
figure { display: inline-block; margin: 0.4em; vertical-align: top; }
figcaption { font-size: 0.8em; color: #444; max-width: 900px; }
img { border: 1px solid #ccc; max-width: 100%; }
.meta { font-size: 0.85em; color: #444; }
"""

#: (key, column title, format) of the metric tables
METRIC_COLUMNS = (("count", "images", "{:d}"), ("score", "score", "{:.4f}"),
                  ("score_orientation", "orient.", "{:.4f}"), ("score_position", "position", "{:.4f}"),
                  ("e_t_mean_m", "E_T mean [m]", "{:.3f}"), ("e_t_median_m", "E_T med. [m]", "{:.3f}"),
                  ("e_r_mean_deg", "E_R mean [deg]", "{:.2f}"), ("e_r_median_deg", "E_R med. [deg]", "{:.2f}"),
                  ("acc@2", "Acc@2", "{:.3f}"), ("acc@5", "Acc@5", "{:.3f}"), ("acc@10", "Acc@10", "{:.3f}"),
                  ("loc_iou", "loc IoU", "{:.3f}"))


def _fmt(v, f: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "&ndash;"
    return html.escape(f.format(v))


def metrics_table(rows: Mapping[str, Mapping[str, float]], first: str = "") -> str:
    """An HTML table with one row per entry of ``rows`` and the columns of :data:`METRIC_COLUMNS`."""
    cols = [c for c in METRIC_COLUMNS if any(c[0] in r for r in rows.values())]
    out = [f"<table><tr><th class='l'>{html.escape(first)}</th>"
           + "".join(f"<th>{html.escape(t)}</th>" for _, t, _ in cols) + "</tr>"]
    for name, r in rows.items():
        out.append(f"<tr><td class='l'>{html.escape(str(name))}</td>"
                   + "".join(f"<td>{_fmt(r.get(k), f)}</td>" for k, _, f in cols) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _figure(src: str, caption: str, width: int | None = None) -> str:
    w = f" width='{width}'" if width else ""
    return (f"<figure><img src='{html.escape(src, quote=True)}' alt='{html.escape(caption, quote=True)}'{w}>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def write_report_html(path: str | Path, report: Mapping, figures: Sequence[tuple[str, str]],
                      worst: Sequence[tuple[str, str]], best: Sequence[tuple[str, str]],
                      distributions: Sequence[tuple[str, str]]) -> Path:
    """Write ``report.html``.

    Args:
        path: the HTML file (pictures are linked relative to its folder).
        report: the content of report.json (``domain``, ``metrics``, ``breakdowns``, ``run``...).
        figures, worst, best, distributions: (relative PNG path, caption) lists.
    """
    r = report
    m = r["metrics"]
    title = f"speedpose evaluation: {r['domain']}/{r['split']}"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             "<p class='meta'>" + "<br>".join(html.escape(f"{k}: {v}") for k, v in (
                 ("run", r["run"]["dir"]), ("checkpoint", f"{r['run']['checkpoint']} (step {r['run']['step']})"),
                 ("config hash", r["run"]["config_hash"]), ("dataset", r["dataset"]["root"]),
                 ("dataset fingerprint", r["dataset"]["fingerprint"]),
                 ("SPEC2021 thresholds", "applied" if r["thresholds"] else "not applied (synthetic)"),
                 ("created", r["created_utc"]))) + "</p>",
             "<h2>Metrics</h2>", metrics_table({r["domain"]: m}, "domain"),
             "<h2>By true distance</h2>", metrics_table(r["breakdowns"]["distance"], "distance"),
             "<h2>By truncation</h2>", metrics_table(r["breakdowns"]["truncation"], "spacecraft")]
    parts += ["<h2>Error distributions</h2>"] + [_figure(s, c) for s, c in figures]
    legend = ("orange: estimate (with body axes x red, y green, z blue); green: truth; grey: localiser box; "
              "right: zoom on the white square")
    for name, items in (("Worst images", worst), ("Best images", best)):
        parts += [f"<h2>{name}</h2><p class='meta'>{html.escape(legend)}</p>"]
        parts += [_figure(s, c, 900) for s, c in items]
    parts += ["<h2>SO(3) distributions</h2>"] + [_figure(s, c, 560) for s, c in distributions]
    parts.append("</body></html>\n")
    atomic_write_text(path, "\n".join(parts))
    return Path(path)
