"""The stand-in renderer: model, rasteriser, distortion warp, keypoints on the rendered mask, occlusion."""

from __future__ import annotations

import numpy as np
import pytest

from speedpose.camera import speedplus_camera
from speedpose.geometry.rotations import quat_wxyz_to_matrix, rotation_about_z
from speedpose.render import Lighting, build_tango_mesh, distortion_warp, render_spacecraft, sample_poses
from speedpose.render.rasterize import rasterize
from speedpose.tango import keypoint_box, tango_keypoints_body


@pytest.fixture(scope="module")
def warp():
    return distortion_warp(speedplus_camera())


def _point_triangle_distance(p: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Distance from point p (3,) to triangles (F, 3, 3), by dense barycentric sampling (reference, slow is fine)."""
    s = np.linspace(0, 1, 41)
    u, v = np.meshgrid(s, s)
    keep = u + v <= 1
    u, v = u[keep], v[keep]
    pts = tri[:, None, 0] + u[None, :, None] * (tri[:, None, 1] - tri[:, None, 0]) + v[None, :, None] * (
        tri[:, None, 2] - tri[:, None, 0])
    return np.linalg.norm(pts - p, axis=-1).min(axis=1)


def test_mesh_is_closed_and_outward():
    mesh = build_tango_mesh()
    edges = {}
    for a, b, c in mesh.faces:
        for e in ((a, b), (b, c), (c, a)):
            edges[e] = edges.get(e, 0) + 1
    assert all(edges.get((b, a), 0) == n for (a, b), n in edges.items()), "every edge needs its opposite"
    tri = mesh.triangles
    signed_volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
    assert signed_volume > 0.10  # body box alone is 0.74 x 0.568 x 0.2955 = 0.124 m^3; outward winding


def test_every_keypoint_lies_on_the_model():
    mesh = build_tango_mesh()
    for i, kp in enumerate(tango_keypoints_body()):
        d = _point_triangle_distance(kp, mesh.triangles).min()
        assert d < 2e-3, f"keypoint {i + 1} is {d * 1000:.1f} mm from the model"
    # dimensions: the model spans the published Tango size (570 x 740 x 295 mm body + panel)
    v = mesh.vertices
    assert v[:, 2].max() == pytest.approx(0.3215)
    assert np.ptp(v[:, 1]) > 0.74


def test_model_is_not_symmetric():
    v = build_tango_mesh().vertices
    for R in (rotation_about_z(np.pi), np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, 1.0, -1.0])):
        w = v @ np.asarray(R).T
        hausdorff = np.linalg.norm(w[:, None] - v[None], axis=-1).min(axis=1).max()
        assert hausdorff > 0.05


def test_rasterizer_matches_naive_reference():
    rng = np.random.default_rng(3)
    H, W = 60, 80
    tri = rng.uniform([-5, -5], [W + 5, H + 5], size=(8, 3, 2))
    key = rng.uniform(0.1, 1.0, size=(8, 3))
    got_key, got_face = rasterize(tri, key, H, W)
    ys, xs = np.mgrid[0:H, 0:W]
    ref_key = np.zeros((H, W))
    ref_face = np.full((H, W), -1)
    margin = np.full((H, W), np.inf)
    for f in range(len(tri)):
        a, b, c = tri[f]
        area = (b[0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (b[1] - a[1])
        wa = ((b[0] - xs) * (c[1] - ys) - (c[0] - xs) * (b[1] - ys)) / area
        wb = ((c[0] - xs) * (a[1] - ys) - (a[0] - xs) * (c[1] - ys)) / area
        wc = 1 - wa - wb
        inside = (wa >= 0) & (wb >= 0) & (wc >= 0)
        k = wa * key[f, 0] + wb * key[f, 1] + wc * key[f, 2]
        # distance (in pixels) of the centre from this triangle's edges: ambiguous pixels are skipped below
        edge_len = np.array([np.linalg.norm(c - b), np.linalg.norm(a - c), np.linalg.norm(b - a)])
        dist = np.minimum.reduce([np.abs(wa) * abs(area) / edge_len[0], np.abs(wb) * abs(area) / edge_len[1],
                                  np.abs(wc) * abs(area) / edge_len[2]])
        near = (xs >= tri[f, :, 0].min() - 1) & (xs <= tri[f, :, 0].max() + 1) & (
            ys >= tri[f, :, 1].min() - 1) & (ys <= tri[f, :, 1].max() + 1)
        margin = np.where(near, np.minimum(margin, dist), margin)
        upd = inside & (k > ref_key)
        ref_key[upd], ref_face[upd] = k[upd], f
    clear = margin > 1.0
    assert clear.sum() > 2000
    np.testing.assert_array_equal(got_face[clear], ref_face[clear])
    np.testing.assert_allclose(got_key[clear], ref_key[clear], atol=1e-5)


def test_distortion_warp_round_trip(warp):
    cam = warp.camera
    ys, xs = np.mgrid[0:cam.height:37, 0:cam.width:41]
    u, v = warp.map_u[ys, xs].astype(np.float64), warp.map_v[ys, xs].astype(np.float64)
    xy = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy], axis=-1)
    back = cam.normalized_to_pixels(xy)  # forward model of camera.py, distortion included
    err = np.linalg.norm(back - np.stack([xs, ys], axis=-1), axis=-1)
    assert err.max() < 2e-3  # float32 storage of ~2000 px coordinates
    # distortion matters at the border: the map is not the identity there
    assert abs(warp.map_u[0, 0] - 0) > 10


def _bright(warp, R, r):
    return render_spacecraft(warp, R, r, Lighting(np.array([0.0, 0.0, -1.0]), 1.0, ambient=0.2))


def test_keypoints_on_rendered_mask(warp):
    cam = warp.camera
    q, r = sample_poses(14, np.random.default_rng(5), "synthetic")
    r[:3] *= 2.4 / np.linalg.norm(r[:3], axis=1, keepdims=True)  # a few close, truncated views too
    checked, truncated_seen = 0, 0
    for qi, ri in zip(q, r):
        R = quat_wxyz_to_matrix(qi)
        layer = _bright(warp, R, ri)
        mask = layer.mask(cam.height, cam.width)
        vis = layer.keypoints_visible
        assert vis.sum() >= 4
        for (u, v), ok in zip(layer.keypoints_uv, vis):
            if ok:
                x, y = int(round(u)), int(round(v))
                win = mask[max(0, y - 2):y + 3, max(0, x - 2):x + 3]
                assert win.max() == 255, f"visible keypoint at ({u:.1f}, {v:.1f}) is off the mask"
                checked += 1
        box = keypoint_box(layer.keypoints_uv, cam.width, cam.height)
        ys, xs = np.nonzero(mask)
        if box.truncated:
            truncated_seen += 1
            continue
        # the keypoints span the model except the thruster (5 cm below the bottom face), the rods' radius and the
        # mounts (2.5 cm): the mask box may exceed the keypoint box by at most 6 cm at the model's nearest depth
        z_near = (build_tango_mesh().vertices @ R.T + ri)[:, 2].min()
        tol = 0.06 * cam.fx / z_near + 2
        kb = box.unclipped
        mb = np.array([xs.min(), ys.min(), xs.max(), ys.max()])
        assert np.all(mb[:2] <= kb[:2] + 2) and np.all(mb[2:] >= kb[2:] - 2), (mb, kb)
        assert np.all(kb[:2] - mb[:2] <= tol) and np.all(mb[2:] - kb[2:] <= tol), (mb, kb, tol)
    assert checked > 80 and truncated_seen >= 1


def test_mask_box_matches_projected_model(warp):
    """The mask's box equals the box of the projected model vertices (distortion included) within 1.5 px.

    The mask keeps pixels at least half covered, so a pointed extremity (a corner, a rod's end) can end up to about
    a pixel inside the vertex that bounds it; the remap's bilinear interpolation adds at most half a pixel.
    """
    cam = warp.camera
    q, r = sample_poses(4, np.random.default_rng(11), "lightbox")
    mesh = build_tango_mesh()
    for qi, ri in zip(q, r):
        R = quat_wxyz_to_matrix(qi)
        uv = cam.project(mesh.vertices @ R.T + ri)
        if not cam.in_image(uv).all():
            continue
        mask = _bright(warp, R, ri).mask(cam.height, cam.width)
        ys, xs = np.nonzero(mask)
        mb = np.array([xs.min(), ys.min(), xs.max(), ys.max()])
        vb = np.array([uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max()])
        np.testing.assert_allclose(mb, vb, atol=1.5)


def test_occluded_keypoints_are_reported(warp):
    # camera looking straight at the panel (body +z towards the camera): the bottom corners 5-8 hide behind it
    R = np.diag([1.0, -1.0, -1.0])  # body z -> camera -z
    layer = _bright(warp, R, np.array([0.0, 0.0, 6.0]))
    assert layer.keypoints_visible[:4].all()
    assert not layer.keypoints_visible[4:8].any()
    # seen from below (bottom face towards the camera), the bottom corners are visible and the panel corners
    # (the panel overhangs the body in y only) are partly hidden
    layer = _bright(warp, np.eye(3), np.array([0.0, 0.0, 6.0]))
    assert layer.keypoints_visible[4:8].all()


def test_pose_statistics():
    q, r = sample_poses(4000, np.random.default_rng(0), "lightbox")
    d = np.linalg.norm(r, axis=1)
    assert 2.2 <= d.min() and d.max() <= 10.0
    assert 0.25 < (q[:, 0] < 0).mean() < 0.35
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1, atol=1e-12)
    cam = speedplus_camera()
    from speedpose.tango import project_keypoints
    trunc = keypoint_box(project_keypoints(cam, q, r), cam.width, cam.height).truncated.mean()
    assert 0.10 < trunc < 0.22  # released labels: 15-16%
    q2, _ = sample_poses(4000, np.random.default_rng(0), "synthetic")
    assert 0.45 < (q2[:, 0] < 0).mean() < 0.55


def test_tone_map_matches_power_law():
    from speedpose.render.effects import tone_map

    x = np.linspace(0, 1.3, 200_001, dtype=np.float32).reshape(1, -1)
    for gamma in (1.8, 2.0):
        ref = 0.05 + 0.95 * np.clip(2.0 * x, 0, 1) ** (1 / gamma)
        assert np.abs(tone_map(x, 2.0, gamma, 0.05) - ref).max() < 0.5 / 255


def test_domains_differ_like_the_real_ones(warp):
    """Same pose in the three styles: black space in synthetic, a lifted noisy black in lightbox, over-exposure in
    sunlamp; the mask and keypoints do not depend on the style."""
    from speedpose.render import render_frame

    q = np.array([0.8, 0.3, -0.4, 0.33])
    q /= np.linalg.norm(q)
    r = np.array([0.1, -0.2, 5.0])
    frames = {d: render_frame(warp, q, r, d, np.random.default_rng(1), earth=False)
              for d in ("synthetic", "lightbox", "sunlamp")}
    bg = frames["synthetic"].mask == 0
    syn, lb = frames["synthetic"].image[bg], frames["lightbox"].image[bg]
    assert np.median(syn) <= 4 and np.median(lb) >= 12
    assert lb.astype(float).std() > 1.5  # sensor noise
    fg = frames["sunlamp"].mask > 0
    assert (frames["sunlamp"].image[fg] >= 250).mean() > (frames["synthetic"].image[fg] >= 250).mean()
    for d in ("lightbox", "sunlamp"):
        np.testing.assert_array_equal(frames[d].mask, frames["synthetic"].mask)
        np.testing.assert_array_equal(frames[d].keypoints_visible, frames["synthetic"].keypoints_visible)
