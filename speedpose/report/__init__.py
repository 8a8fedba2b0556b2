"""Evaluation reports: per-image tables, figures, wireframe overlays and a static HTML page.

Public API::

    per_image_table(filenames, q_est, r_est, q_gt, r_gt, thresholds, ...) -> DataFrame   # one row per image
    summarise(df) -> dict             # score, E_T/E_R mean and median, Acc@2/5/10/30, loc IoU
    breakdowns(df) -> dict            # summarise() per distance bin and per truncation
    reliability(df) -> dict           # observed Acc@2/5/10/15 per rotation-confidence bin, ECE
    keypoint_errors(kp_uv, kp_conf, camera, q, r, min_conf) -> (err_px, n_confident)   # keypoint head vs labels
    pose_overlay(image, camera, q_pred, r_pred, q_true, r_true, box) -> BGR uint8   # wireframes + zoom
    error_histograms, errors_vs_distance, reliability_diagram   # PNG figures (Agg); SO(3): speedpose.viz.so3_plot
    write_report_html(path, report, figures, worst, best, distributions)
"""

from speedpose.report.figures import error_histograms, errors_vs_distance, reliability_diagram
from speedpose.report.html import write_report_html
from speedpose.report.overlays import pose_overlay, project_wireframe, wireframe_edges_body, write_png
from speedpose.report.tables import (DISTANCE_BINS_M, breakdowns, keypoint_errors, per_image_table, reliability,
                                     summarise)

__all__ = ["DISTANCE_BINS_M", "breakdowns", "error_histograms", "keypoint_errors", "errors_vs_distance", "per_image_table",
           "pose_overlay", "project_wireframe", "reliability", "reliability_diagram", "summarise",
           "wireframe_edges_body",
           "write_png", "write_report_html"]
