"""The spacecraft layer: Tango rendered through the real camera, with coverage (anti-aliased mask) and keypoints.

Pipeline: pose -> ideal pinhole projection of the mesh -> z-buffered rasterisation on a supersampled grid covering only
the spacecraft -> per-pixel shading (Lambert + Blinn-Phong, procedural textures, shadow map) -> area downsampling ->
remap through the lens distortion onto the distorted image.  Frames: camera = SPEED+ VBS (x right, y down, z forward),
``p_cam = R_cam_body @ p_body + r_cam_m``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from speedpose.errors import InputError
from speedpose.render.distortion import DistortionWarp
from speedpose.render.materials import blinn_phong, surface_albedo
from speedpose.render.mesh import Mesh, build_tango_mesh
from speedpose.render.rasterize import rasterize
from speedpose.tango import tango_keypoints_body

#: nearest allowed distance of any model vertex to the camera plane [m]
MIN_DEPTH_M = 0.2
#: shaded pixels per image at most: a nearer spacecraft is shaded on a coarser grid and upsampled by the lens remap
SHADING_BUDGET = 300_000
#: supersampled pixels of the silhouette fill at most
SUPERSAMPLE_BUDGET = 4_000_000
#: a keypoint counts as occluded when the visible surface at its pixel is this much nearer [m]
OCCLUSION_TOLERANCE_M = 0.02


@dataclass(frozen=True)
class Lighting:
    """Lights of one image, camera frame.

    Attributes:
        key_dir_cam: (3,) unit vector from the spacecraft towards the key light (sun or lamp).
        key: key light intensity (radiance of a white surface facing it).
        fill_dir_cam: (3,) unit vector towards a diffuse fill (Earth albedo, light-box panels), or None.
        fill: fill intensity.
        ambient: direction-less light.
        specular_gain: multiplies every material's specular weight.
        shadows: whether the key light casts shadows (self-shadowing via a shadow map).
    """

    key_dir_cam: np.ndarray
    key: float = 1.0
    fill_dir_cam: np.ndarray | None = None
    fill: float = 0.0
    ambient: float = 0.03
    specular_gain: float = 1.0
    shadows: bool = True


@dataclass(frozen=True)
class SpacecraftLayer:
    """The rendered spacecraft on a box of the distorted image.

    Attributes:
        box: (x0, y0, x1, y1) inclusive pixel box of the distorted image, or None when nothing is in the frame.
        radiance: (h, w) float32 linear radiance premultiplied by coverage (composite: ``bg * (1 - cov) + radiance``).
        coverage: (h, w) float32 fraction of each pixel covered by the model, in [0, 1].
        keypoints_uv: (11, 2) keypoints projected with the camera (distortion included) [px].
        keypoints_visible: (11,) True where the keypoint is inside the frame and not hidden by the model itself.
        supersampling: supersampling factor of the silhouette per axis, relative to the shading grid.
        shading_scale: shading grid pixels per image pixel (1, or less for a near, large spacecraft).
    """

    box: tuple[int, int, int, int] | None
    radiance: np.ndarray
    coverage: np.ndarray
    keypoints_uv: np.ndarray
    keypoints_visible: np.ndarray
    supersampling: int
    shading_scale: float = 1.0

    def paste(self, background: np.ndarray) -> np.ndarray:
        """Composite onto a full-frame (H, W) float32 linear image in place; returns it."""
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            sub = background[y0:y1 + 1, x0:x1 + 1]
            sub *= 1.0 - self.coverage
            sub += self.radiance
        return background

    def mask(self, height: int, width: int) -> np.ndarray:
        """(H, W) uint8 binary mask, 255 where at least half of the pixel is covered."""
        out = np.zeros((height, width), dtype=np.uint8)
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            out[y0:y1 + 1, x0:x1 + 1] = np.where(self.coverage >= 0.5, 255, 0).astype(np.uint8)
        return out


def render_spacecraft(warp: DistortionWarp, R_cam_body: np.ndarray, r_cam_m: np.ndarray, lighting: Lighting,
                      mesh: Mesh | None = None, max_supersampling: int = 3) -> SpacecraftLayer:
    """Render Tango at a pose through the real camera.

    Args:
        warp: the camera's distortion warp (:func:`speedpose.render.distortion.distortion_warp`).
        R_cam_body: (3, 3) rotation body -> camera; r_cam_m: (3,) body origin in the camera frame [m].
        lighting: lights in the camera frame.
        mesh: the model (default: :func:`build_tango_mesh`).
        max_supersampling: largest supersampling factor per axis (lowered at close range to stay within
            :data:`SUPERSAMPLE_BUDGET`).
    Raises:
        InputError: when part of the model is behind or too close to the camera (z < MIN_DEPTH_M).
    """
    mesh = mesh or build_tango_mesh()
    cam = warp.camera
    R = np.asarray(R_cam_body, dtype=np.float64)
    r = np.asarray(r_cam_m, dtype=np.float64)
    v_cam = mesh.vertices @ R.T + r
    if v_cam[:, 2].min() < MIN_DEPTH_M:
        raise InputError(f"pose puts part of the spacecraft at z = {v_cam[:, 2].min():.3f} m, closer than "
                         f"{MIN_DEPTH_M} m to the camera plane (r = {r.tolist()})")
    kp_cam = tango_keypoints_body() @ R.T + r
    kp_uv = cam.project(kp_cam)
    kp_in = cam.in_image(kp_uv)
    uv = cam.project(v_cam, distort=False)
    obj_box = (uv[:, 0].min() - 2, uv[:, 1].min() - 2, uv[:, 0].max() + 2, uv[:, 1].max() + 2)
    dbox = warp.distorted_box(obj_box)
    empty = np.zeros((0, 0), np.float32)
    if dbox is None:
        return SpacecraftLayer(None, empty, empty, kp_uv, np.zeros(len(kp_uv), bool), 0)
    x0, y0, x1, y1 = dbox
    mu, mv = warp.map_u[y0:y1 + 1, x0:x1 + 1], warp.map_v[y0:y1 + 1, x0:x1 + 1]
    ux0 = int(math.floor(max(obj_box[0], float(mu.min()) - 2)))
    uy0 = int(math.floor(max(obj_box[1], float(mv.min()) - 2)))
    ux1 = int(math.ceil(min(obj_box[2], float(mu.max()) + 2)))
    uy1 = int(math.ceil(min(obj_box[3], float(mv.max()) + 2)))
    if ux1 < ux0 or uy1 < uy0:
        return SpacecraftLayer(None, empty, empty, kp_uv, np.zeros(len(kp_uv), bool), 0)
    # shading grid: pinhole pixels scaled by sc <= 1; grid pixel (i, j) is centred on pinhole (ux0, uy0) +
    # ((j + 0.5) / sc - 0.5, (i + 0.5) / sc - 0.5)
    sc = min(1.0, math.sqrt(SHADING_BUDGET / ((ux1 - ux0 + 1) * (uy1 - uy0 + 1))))
    w = int(math.ceil((ux1 - ux0 + 1) * sc))
    h = int(math.ceil((uy1 - uy0 + 1) * sc))
    ss = int(max(1, min(max_supersampling + 2 * (sc < 1), math.floor(math.sqrt(SUPERSAMPLE_BUDGET / (w * h))))))

    # front faces only (closed mesh): the outward normal points towards the camera
    tri_cam = v_cam[mesh.faces]
    n_cam_all = mesh.normals @ R.T
    front = np.einsum("ij,ij->i", n_cam_all, tri_cam.mean(axis=1)) < 0
    faces_idx = np.nonzero(front)[0]
    tri_uv = (uv[mesh.faces[faces_idx]] - (ux0, uy0) + 0.5) * sc - 0.5
    # visible surface (depth test on 1/z, affine in the image) at pixel centres: shading happens per pixel ...
    key, face = rasterize(tri_uv, 1.0 / tri_cam[faces_idx, :, 2], h, w)
    # ... and the silhouette is supersampled (sub-pixel polygon fill) for anti-aliased edges and the mask
    coverage_pin = silhouette_coverage(tri_uv, h, w, ss)

    rows, cols = np.nonzero(face >= 0)
    f = faces_idx[face[rows, cols]]
    z = 1.0 / key[rows, cols]
    K = cam.K
    pu = (cols + 0.5) / sc - 0.5 + ux0
    pv = (rows + 0.5) / sc - 0.5 + uy0
    ry = (pv - K[1, 2]) / K[1, 1]
    rx = (pu - K[0, 2] - K[0, 1] * ry) / K[0, 0]
    p_cam = np.stack([rx * z, ry * z, z], axis=1).astype(np.float32)
    n_cam = n_cam_all[f].astype(np.float32)
    part = mesh.part[f]
    p_body = (p_cam - r.astype(np.float32)) @ R.astype(np.float32)
    view = -p_cam / np.linalg.norm(p_cam, axis=1, keepdims=True)
    albedo = surface_albedo(part, p_body)

    L = np.asarray(lighting.key_dir_cam, dtype=np.float64)
    L = L / np.linalg.norm(L)
    lam, spec = blinn_phong(part, n_cam, view, L)
    lit = np.ones(len(f), np.float32)
    if lighting.shadows:
        lit = shadow_factor(tri_cam, n_cam_all, p_cam, n_cam, L, texel_m=2.0 * float(np.median(z)) / (K[0, 0] * sc))
    rad = albedo * (lighting.ambient + lighting.key * lam * lit) + lighting.specular_gain * lighting.key * spec * lit
    if lighting.fill_dir_cam is not None and lighting.fill > 0:
        F = np.asarray(lighting.fill_dir_cam, dtype=np.float64)
        F = F / np.linalg.norm(F)
        lam_f, spec_f = blinn_phong(part, n_cam, view, F)
        rad += lighting.fill * (albedo * lam_f + 0.3 * lighting.specular_gain * spec_f)

    rad_pin = np.zeros((h, w), np.float32)
    rad_pin[rows, cols] = rad
    # edge pixels whose centre missed the model take the mean radiance of their covered neighbours
    hit = (face >= 0).astype(np.float32)
    num = cv2.boxFilter(rad_pin, -1, (3, 3), normalize=False, borderType=cv2.BORDER_CONSTANT)
    den = cv2.boxFilter(hit, -1, (3, 3), normalize=False, borderType=cv2.BORDER_CONSTANT)
    fringe = (hit == 0) & (den > 0)
    rad_pin[fringe] = num[fringe] / den[fringe]
    rad_pin *= coverage_pin
    radiance = warp.remap(rad_pin, (ux0, uy0), dbox, sc)
    coverage = np.clip(warp.remap(coverage_pin, (ux0, uy0), dbox, sc), 0.0, 1.0)

    # keypoint occlusion from the z-buffer at the keypoint's (supersampled) pinhole pixel
    kp_pin = (cam.project(kp_cam, distort=False) - (ux0, uy0) + 0.5) * sc - 0.5
    visible = kp_in.copy()
    for i, (x, y) in enumerate(np.rint(kp_pin).astype(np.int64)):
        if visible[i] and 0 <= x < w and 0 <= y < h and face[y, x] >= 0:
            visible[i] = 1.0 / key[y, x] > kp_cam[i, 2] - OCCLUSION_TOLERANCE_M
    return SpacecraftLayer(dbox, radiance, coverage, kp_uv, visible, ss, sc)


def silhouette_coverage(tri_uv: np.ndarray, height: int, width: int, ss: int) -> np.ndarray:
    """Fraction of each pixel covered by the union of triangles, from an ``ss x ss`` supersampled fill.

    Args:
        tri_uv: (F, 3, 2) triangle corners in pixel coordinates (pixel centres at integers).
        height, width: output size; ss: supersampling factor per axis.
    Returns:
        (height, width) float32 in [0, 1].
    """
    shift = 4  # sub-pixel precision of the polygon fill: 1/16 of a supersampled pixel
    buf = np.zeros((height * ss, width * ss), np.uint8)
    pts = np.rint(((tri_uv + 0.5) * ss - 0.5) * (1 << shift)).astype(np.int32)
    for tri in pts:
        cv2.fillConvexPoly(buf, tri, 255, lineType=cv2.LINE_8, shift=shift)
    cov = buf.astype(np.float32) * np.float32(1 / 255)
    return cv2.resize(cov, (width, height), interpolation=cv2.INTER_AREA) if ss > 1 else cov


def shadow_factor(tri: np.ndarray, tri_normals: np.ndarray, points: np.ndarray, normals: np.ndarray,
                  light: np.ndarray, texel_m: float, max_res: int = 768) -> np.ndarray:
    """Fraction of light reaching each point from a directional light, via an orthographic shadow map.

    Args:
        tri: (F, 3, 3) occluding triangles of a closed mesh and tri_normals (F, 3) their outward normals; points,
            normals: (N, 3) surface points and unit normals; light: (3,) unit vector towards the light.  All in one
            frame [m].
        texel_m: wanted shadow-map texel size [m] (about the image pixel footprint); coarsened to fit ``max_res``.
    Returns:
        (N,) float32: 1 lit, 0 in shadow.
    """
    tri = tri[tri_normals @ light > 0]  # closed mesh: the faces turned to the light are the first hits
    e1 = np.cross(light, [0.0, 0.0, 1.0] if abs(light[2]) < 0.9 else [1.0, 0.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(light, e1)
    basis = np.stack([e1, e2])
    s_tri = tri @ basis.T
    d_tri = tri @ light
    lo = s_tri.reshape(-1, 2).min(axis=0)
    extent = float((s_tri.reshape(-1, 2).max(axis=0) - lo).max())
    texel = max(texel_m, extent / (max_res - 3))
    res = int(math.ceil(extent / texel)) + 3
    smap, _ = rasterize((s_tri - lo) / texel + 1, d_tri, res, res, empty_key=-1e3)
    p = points + normals * np.float32(1.5 * texel)  # normal offset against self-shadowing acne
    sp = ((p @ basis.T.astype(np.float32) - lo.astype(np.float32)) / np.float32(texel) + 1).astype(np.float32)
    dp = p @ light.astype(np.float32) + np.float32(0.5 * texel)
    # bilinear depth lookup (empty texels hold a far finite key so that the interpolation stays finite)
    n = len(sp)
    cols = 1024  # cv2.remap wants both sides below 32767: lay the points out as a (rows, 1024) image
    padded = np.zeros((-(-n // cols) * cols, 2), np.float32)
    padded[:n] = sp
    grid = padded.reshape(-1, cols, 2)
    d_map = cv2.remap(smap, grid[..., 0], grid[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                      borderValue=-1e3).reshape(-1)[:n]
    return (d_map <= dp).astype(np.float32)
