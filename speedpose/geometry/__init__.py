"""Geometry: rotations, HEALPix grids on S2 and SO(3), Wigner-D features.

The public names below are loaded lazily (on first attribute access) so that importing one submodule, e.g.
``speedpose.geometry.rotations``, does not pull in healpy and e3nn.
"""

from __future__ import annotations

from speedpose.lazy_exports import lazy_exports

_EXPORTS = {
    # rotations (owned by the foundation)
    "quat_wxyz_to_matrix": "rotations",
    "matrix_to_quat_wxyz": "rotations",
    "geodesic_angle_matrix": "rotations",
    "axis_angle_to_matrix": "rotations",
    "matrix_to_axis_angle": "rotations",
    "random_rotation_matrices": "rotations",
    # S2 grids
    "s2_healpix_npix": "s2_grids",
    "s2_healpix_grid": "s2_grids",
    "s2_healpix_cap": "s2_grids",
    # SO(3) grid and hierarchy
    "so3_healpix_size": "so3_grids",
    "so3_healpix_spacing_deg": "so3_grids",
    "so3_healpix_rotations": "so3_grids",
    "so3_healpix_cells": "so3_grids",
    "so3_children": "so3_grids",
    "so3_parent": "so3_grids",
    "so3_nearest_index": "so3_grids",
    "so3_healpix_index": "so3_grids",
    "so3_healpix_factors": "so3_grids",
    "so3_healpix_wigner_features": "so3_grids",
    "so3_healpix_wigner_table": "so3_grids",
    # Wigner-D features
    "n_so3_coeffs": "wigner",
    "n_s2_coeffs": "wigner",
    "wigner_features": "wigner",
    "wigner_D_blocks": "wigner",
    "matrix_to_euler_zyz": "wigner",
    "s2_harmonics": "wigner",
    "delta_coeffs": "wigner",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
