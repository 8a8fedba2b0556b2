"""A procedural triangle model of Tango (no CAD file), built from the published dimensions and keypoints.

Body frame: the Tango body frame of SPEED+ (metres), the frame of :func:`speedpose.tango.tango_keypoints_body`:
solar panel on +z, body bottom at z = 0.  Every keypoint lies on the model surface: 1-4 are corners of the panel's
top face, 5-8 corners of the body's bottom face and 9-11 the centres of the antenna rods' end caps.

Triangles are wound counter-clockwise seen from outside, so ``(v1 - v0) x (v2 - v0)`` is the outward normal, and every
part is a closed surface (back faces can be culled).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from speedpose.tango import tango_keypoints_body

#: part names; ``Mesh.part`` indexes this tuple (materials are looked up by name in :mod:`speedpose.render.materials`)
PARTS = ("body", "cells", "panel_edge", "rod", "mount", "dish", "dome", "tracker", "lens", "thruster")


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh.

    Attributes:
        vertices: (V, 3) vertex positions [m], body frame.
        faces: (F, 3) vertex indices, counter-clockwise seen from outside.
        part: (F,) index into :data:`PARTS` of each triangle.
        normals: (F, 3) unit outward face normals, body frame.
    """

    vertices: np.ndarray
    faces: np.ndarray
    part: np.ndarray
    normals: np.ndarray

    @property
    def triangles(self) -> np.ndarray:
        """(F, 3, 3) triangle corners [m], body frame."""
        return self.vertices[self.faces]

    @property
    def radius_m(self) -> float:
        """Largest distance of a vertex from the body origin [m]."""
        return float(np.linalg.norm(self.vertices, axis=1).max())


class _Builder:
    def __init__(self) -> None:
        self.vertices: list[np.ndarray] = []
        self.faces: list[np.ndarray] = []
        self.part: list[np.ndarray] = []
        self.count = 0

    def add(self, verts: np.ndarray, faces: np.ndarray, part: str | np.ndarray) -> None:
        verts = np.asarray(verts, dtype=np.float64)
        faces = np.asarray(faces, dtype=np.int64)
        self.vertices.append(verts)
        self.faces.append(faces + self.count)
        ids = np.full(len(faces), PARTS.index(part)) if isinstance(part, str) else np.asarray(part)
        self.part.append(ids)
        self.count += len(verts)

    def build(self) -> Mesh:
        v = np.concatenate(self.vertices)
        f = np.concatenate(self.faces)
        t = v[f]
        n = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
        n /= np.linalg.norm(n, axis=1, keepdims=True)
        for a in (v, f, n):
            a.setflags(write=False)
        part = np.concatenate(self.part).astype(np.int16)
        part.setflags(write=False)
        return Mesh(v, f, part, n)


def box(lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """An axis-aligned box: (8, 3) vertices and (12, 3) outward-wound faces."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    v = np.array([[x, y, z] for z in (lo[2], hi[2]) for y in (lo[1], hi[1]) for x in (lo[0], hi[0])])
    # vertex index = 4*iz + 2*iy + ix
    quads = [(0, 2, 3, 1), (4, 5, 7, 6),  # z- , z+
             (0, 1, 5, 4), (2, 6, 7, 3),  # y- , y+
             (0, 4, 6, 2), (1, 3, 7, 5)]  # x- , x+
    f = []
    for a, b, c, d in quads:
        f += [(a, b, c), (a, c, d)]
    return v, np.array(f)


def _frame(axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    axis = axis / np.linalg.norm(axis)
    helper = np.array([0.0, 0.0, 1.0]) if abs(axis[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = np.cross(axis, helper)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(axis, e1)


def cylinder(a, b, radius: float, segments: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """A closed cylinder from centre ``a`` to centre ``b`` (both caps' centres are vertices)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    e1, e2 = _frame(b - a)
    ang = 2 * np.pi * np.arange(segments) / segments
    ring = radius * (np.cos(ang)[:, None] * e1 + np.sin(ang)[:, None] * e2)
    v = np.concatenate([a + ring, b + ring, [a, b]])
    ca, cb = 2 * segments, 2 * segments + 1
    f = []
    for i in range(segments):
        j = (i + 1) % segments
        f += [(i, j, segments + j), (i, segments + j, segments + i)]  # side
        f += [(ca, j, i), (cb, segments + i, segments + j)]  # caps
    return v, _orient_outward(v, np.array(f), (a + b) / 2)


def spherical_cap(base_centre, axis, radius: float, height: float, rings: int = 5,
                  segments: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """A closed spherical cap (a dome) of base ``radius`` and ``height`` rising along ``axis`` from ``base_centre``."""
    c0, ax = np.asarray(base_centre, float), np.asarray(axis, float) / np.linalg.norm(axis)
    e1, e2 = _frame(ax)
    sphere_r = (radius**2 + height**2) / (2 * height)
    centre = c0 + ax * (height - sphere_r)
    theta_max = np.arcsin(min(1.0, radius / sphere_r))
    verts = [c0 + ax * height]  # apex
    for k in range(1, rings + 1):
        th = theta_max * k / rings
        ang = 2 * np.pi * np.arange(segments) / segments
        dirs = np.cos(th) * ax + np.sin(th) * (np.cos(ang)[:, None] * e1 + np.sin(ang)[:, None] * e2)
        verts.extend(centre + sphere_r * dirs)
    verts.append(c0)  # base centre
    v = np.array(verts)
    f = []
    for i in range(segments):
        j = (i + 1) % segments
        f.append((0, 1 + i, 1 + j))
        for k in range(rings - 1):
            a0, a1 = 1 + k * segments, 1 + (k + 1) * segments
            f += [(a0 + i, a1 + i, a1 + j), (a0 + i, a1 + j, a0 + j)]
        last = 1 + (rings - 1) * segments
        f.append((len(v) - 1, last + j, last + i))
    return v, _orient_outward(v, np.array(f), c0 + ax * height * 0.3)


def _orient_outward(v: np.ndarray, f: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Flip triangles whose normal points towards the interior point ``inside`` (convex parts only)."""
    t = v[f]
    n = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
    flip = np.einsum("ij,ij->i", n, t.mean(axis=1) - inside) < 0
    f = f.copy()
    f[flip] = f[flip][:, ::-1]
    return f


# dimensions [m]: keypoints fix the outer corners (see SPEEDPLUS.md section 4)
BODY_LO = (-0.370, -0.264, 0.0)
BODY_HI = (0.370, 0.304, 0.2955)
PANEL_LO = (-0.370, -0.385, 0.2955)
PANEL_HI = (0.370, 0.385, 0.3215)
ROD_RADIUS_M = 0.010


@lru_cache(maxsize=1)
def build_tango_mesh() -> Mesh:
    """The stand-in Tango model (a few hundred triangles), cached and read-only.

    Parts: MLI-covered body box; solar panel plate on +z (top face = cells); three antenna rods with mounts, ending
    at keypoints 9-11; a parabolic-looking dish on +x, a dome on -y, a star tracker (box + lens) on -x and a
    thruster nozzle under the body: these break the near-symmetry of the box so that every pose is distinguishable.
    """
    kp = tango_keypoints_body()
    b = _Builder()
    v, f = box(BODY_LO, BODY_HI)
    b.add(v, f, "body")
    v, f = box(PANEL_LO, PANEL_HI)
    tri = v[f]
    nz = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])[:, 2]
    b.add(v, f, np.where(nz > 0, PARTS.index("cells"), PARTS.index("panel_edge")))
    # antenna rods: from the body side face along the rod direction to the tip (tip = end-cap centre = keypoint)
    for tip_i, face_y in ((8, BODY_HI[1]), (9, BODY_HI[1]), (10, BODY_LO[1])):
        tip = kp[tip_i]
        if tip_i == 10:
            direction = np.array([0.305 - 0.306, -0.579 + 0.299, 0.0])  # SPEEDPLUS.md: (0.306,-0.299) -> tip
        else:
            direction = np.array([np.sign(tip[0]) * np.cos(np.radians(30)), np.sin(np.radians(30)), 0.0])
        direction /= np.linalg.norm(direction)
        t = (tip[1] - face_y) / direction[1]
        base = tip - t * direction
        v, f = cylinder(base, tip, ROD_RADIUS_M, 8)
        b.add(v, f, "rod")
        m = 0.022
        v, f = box(base + [-m, -m if face_y > 0 else 0, -m], base + [m, 0 if face_y > 0 else m, m])
        v[:, 1] = np.where(np.abs(v[:, 1] - base[1]) < 1e-9, face_y + (0.025 if face_y > 0 else -0.025), v[:, 1])
        b.add(v, f, "mount")
    # dish on +x face, dome on -y face, star tracker on -x face, thruster under the body
    v, f = spherical_cap((BODY_HI[0], 0.09, 0.16), (1, 0, 0), 0.085, 0.045, rings=3, segments=12)
    b.add(v, f, "dish")
    v, f = spherical_cap((0.16, BODY_LO[1], 0.13), (0, -1, 0), 0.07, 0.06, rings=3, segments=12)
    b.add(v, f, "dome")
    v, f = box((BODY_LO[0] - 0.06, -0.16, 0.05), (BODY_LO[0], -0.06, 0.13))
    b.add(v, f, "tracker")
    v, f = cylinder((BODY_LO[0] - 0.06, -0.11, 0.09), (BODY_LO[0] - 0.10, -0.11, 0.09), 0.03, 10)
    b.add(v, f, "lens")
    v, f = cylinder((-0.12, 0.10, BODY_LO[2]), (-0.12, 0.10, BODY_LO[2] - 0.05), 0.035, 10)
    b.add(v, f, "thruster")
    return b.build()
