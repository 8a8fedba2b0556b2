"""Per-part materials of the stand-in Tango and the shading model (Lambert + Blinn-Phong, procedural textures).

Radiance is linear and relative: a white Lambertian surface facing a key light of intensity 1 has radiance 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speedpose.render.mesh import PARTS


@dataclass(frozen=True)
class Material:
    """Surface reflectance.

    Attributes:
        albedo: diffuse reflectance in [0, 1].
        specular: Blinn-Phong specular weight (scaled by the light's specular gain).
        shininess: Blinn-Phong exponent (larger = smaller, sharper highlight).
    """

    albedo: float
    specular: float
    shininess: float


#: dark glossy solar cells, bright foil body, metallic rods and details
MATERIALS: dict[str, Material] = {
    "body": Material(0.72, 0.55, 12.0),  # multi-layer insulation foil: bright, broad sheen
    "cells": Material(0.025, 1.2, 150.0),  # glass-covered cells: dark, sharp glints
    "panel_edge": Material(0.45, 0.6, 40.0),
    "rod": Material(0.35, 1.0, 60.0),
    "mount": Material(0.55, 0.5, 30.0),
    "dish": Material(0.85, 0.4, 20.0),
    "dome": Material(0.8, 0.9, 50.0),
    "tracker": Material(0.25, 0.5, 40.0),
    "lens": Material(0.04, 1.5, 200.0),
    "thruster": Material(0.4, 0.8, 40.0),
}

_ALBEDO = np.array([MATERIALS[p].albedo for p in PARTS], dtype=np.float32)
_SPEC = np.array([MATERIALS[p].specular for p in PARTS], dtype=np.float32)
_SHINE = np.array([MATERIALS[p].shininess for p in PARTS], dtype=np.float32)
_CELLS, _BODY = PARTS.index("cells"), PARTS.index("body")

CELL_PITCH_M = (0.046, 0.030)  # (x, y) pitch of the solar cells
CELL_GAP_M = 0.004


def surface_albedo(part: np.ndarray, p_body: np.ndarray) -> np.ndarray:
    """Diffuse albedo with procedural textures: cell grid on the panel, foil wrinkles on the body.

    Args:
        part: (N,) part indices (into :data:`speedpose.render.mesh.PARTS`).
        p_body: (N, 3) surface points in the body frame [m].
    Returns:
        (N,) float32 albedo.
    """
    albedo = _ALBEDO[part].copy()
    cells = part == _CELLS
    if cells.any():
        x, y = p_body[cells, 0], p_body[cells, 1]
        gx = np.abs(((x + 0.002) / CELL_PITCH_M[0]) % 1.0 - 0.5) * CELL_PITCH_M[0]
        gy = np.abs((y / CELL_PITCH_M[1]) % 1.0 - 0.5) * CELL_PITCH_M[1]
        line = (gx > CELL_PITCH_M[0] / 2 - CELL_GAP_M / 2) | (gy > CELL_PITCH_M[1] / 2 - CELL_GAP_M / 2)
        # a bright frame and a centre bar split the panel into two halves, as on Tango
        frame = (np.abs(x) > 0.350) | (np.abs(y) > 0.365) | (np.abs(x) < 0.008)
        albedo[cells] = np.where(frame, 0.35, np.where(line, 0.12, albedo[cells]))
    body = part == _BODY
    if body.any():
        p = p_body[body]
        wrinkle = (np.sin(41.0 * p[:, 0] + 17.0 * p[:, 2]) * np.sin(29.0 * p[:, 1] - 23.0 * p[:, 0] + 3.0 * p[:, 2])
                   + 0.5 * np.sin(97.0 * (p[:, 0] + p[:, 1] + p[:, 2])))
        albedo[body] *= (0.85 + 0.12 * wrinkle).astype(np.float32)
    return albedo


def blinn_phong(part: np.ndarray, n: np.ndarray, view: np.ndarray, light: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine and specular factors for one directional light.

    Args:
        part: (N,) part indices.
        n: (N, 3) unit surface normals; view: (N, 3) unit vectors towards the camera; light: (3,) unit vector
            towards the light.  All in the same frame.
    Returns:
        lambert (N,) = max(n.l, 0); specular (N,) = weight * max(n.h, 0)^shininess on lit faces.
    """
    ndl = n @ light.astype(np.float32)
    lambert = np.maximum(ndl, 0.0)
    h = view + light.astype(np.float32)
    h /= np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-6)
    ndh = np.maximum(np.einsum("ij,ij->i", n, h), 0.0)
    spec = _SPEC[part] * np.power(ndh, _SHINE[part]) * (ndl > 0)
    return lambert.astype(np.float32), spec.astype(np.float32)
