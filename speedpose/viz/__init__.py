"""Plots (matplotlib, PNG files).  Import the submodules directly, e.g. ``speedpose.viz.so3_plot``."""
