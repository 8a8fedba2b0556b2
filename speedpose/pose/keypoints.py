"""The 11 Tango keypoints on the crop: a heatmap head, its targets and loss, sub-pixel decoding, and the geometry that
turns keypoints into a pose in the crop's virtual camera (an undistorted pinhole, so no lens model here).

* :class:`KeypointHead`: the crop encoder's feature pyramid (strides 2, 4, 8 and its final map) -> 11 heatmaps at
  stride 4 (or 2, ``model.keypoints.stride``) of the crop and 11 visibility logits.
* Training: per keypoint a softmax over the heatmap's cells against a normalised Gaussian at the keypoint's position
  (:func:`keypoint_loss`), only for keypoints inside the crop and visible (not hidden by the spacecraft itself);
  visibility itself by binary cross-entropy.
* Decoding (:func:`decode_heatmaps`): soft-argmax in a window of +-4 crop px around each heatmap's peak cell (3x3
  cells at stride 4; sub-pixel) and a confidence = the softmax mass in that window times the visibility probability.
* Geometry: :func:`translation_from_keypoints` solves the translation for a known rotation (weighted linear least
  squares; the I2S rotation removes PnP's mirror ambiguity); :func:`refine_pose` runs OpenCV's Levenberg-Marquardt
  PnP refinement from that pose and keeps it only when it stays near the I2S rotation;
  :func:`solve_pose_from_keypoints` applies them to a batch of crops (``model.pose_solver``).

Pixels: crop pixel centres at integer coordinates (the pipeline's convention); heatmap cell (i, j) is centred on crop
pixel ``(stride * j + (stride - 1) / 2, stride * i + (stride - 1) / 2)`` (stride: the head's output stride).
"""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from speedpose.pose.crops import TANGO_KP
from speedpose.virtual_camera import VirtualCamera

N_KEYPOINTS = 11
HEATMAP_STRIDE = 4
#: the confidence window of :func:`decode_heatmaps`: the cells whose centres lie within this many crop px of the
#: peak cell's, in x and in y (3x3 cells at stride 4, 5x5 at stride 2)
CONFIDENCE_HALF_WINDOW_PX = 4


class KeypointHead(nn.Module):
    """Encoder features -> ``kp_logits`` (B, 11, S/stride, S/stride) and ``kp_vis_logits`` (B, 11) for crops of
    side S.

    A small feature pyramid: the encoder's final map (stride 16 or 32) is projected to ``width`` channels,
    upsampled to stride 8 and added to the projected stride-8 map, then to stride 4 with the stride-4 map (each sum
    followed by a 3x3 conv-BN-ReLU); with ``stride`` 2 once more to stride 2 with the stride-2 map, at ``width / 2``
    channels (at least 8; a quarter of the cost of a full-width level on four times the cells); 11 heatmaps on top.  The
    visibility logits come from the pooled final map.

    Args:
        in_channels: channels of the final map.
        pyramid_channels: channels of the stride-2, stride-4 and stride-8 maps.
        width: channels of the pyramid.
        stride: output stride of the heatmaps [crop px], 4 or 2.
    """

    def __init__(self, in_channels: int, pyramid_channels: tuple[int, int, int], width: int = 64,
                 stride: int = HEATMAP_STRIDE):
        super().__init__()
        _check_stride(stride)
        c2, c4, c8 = pyramid_channels
        self.stride = stride
        self.lateral = nn.ModuleList([nn.Conv2d(in_channels, width, 1), nn.Conv2d(c8, width, 1),
                                      nn.Conv2d(c4, width, 1)])
        self.smooth = nn.ModuleList([_conv_bn_relu(width), _conv_bn_relu(width)])
        out_width = width
        if stride == 2:  # names of the stride-4 head unchanged: its checkpoints load as they are
            out_width = max(8, width // 2)  # half the width, at least 8 channels
            self.fine = nn.ModuleDict({"reduce": nn.Conv2d(width, out_width, 1),
                                       "lateral": nn.Conv2d(c2, out_width, 1), "smooth": _conv_bn_relu(out_width)})
        self.heat = nn.Conv2d(out_width, N_KEYPOINTS, 1)
        self.vis = nn.Linear(in_channels, N_KEYPOINTS)

    def forward(self, fmap: torch.Tensor, pyramid: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """``fmap`` (B, C, h, w); ``pyramid`` [stride-2 map, stride-4 map, stride-8 map]."""
        f2, f4, f8 = pyramid
        x = self.lateral[0](fmap)
        for lateral, smooth, skip in ((self.lateral[1], self.smooth[0], f8), (self.lateral[2], self.smooth[1], f4)):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = smooth(x + lateral(skip))
        if self.stride == 2:
            x = F.interpolate(self.fine["reduce"](x), size=f2.shape[-2:], mode="bilinear", align_corners=False)
            x = self.fine["smooth"](x + self.fine["lateral"](f2))
        return {"kp_logits": self.heat(x), "kp_vis_logits": self.vis(fmap.mean(dim=(2, 3)))}


def _check_stride(stride: int) -> None:
    if stride not in (2, 4):
        raise ValueError(f"keypoint heatmap stride: expected 2 or 4, got {stride!r}")


def _conv_bn_relu(c: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))


def cell_centres(n: int, stride: int = HEATMAP_STRIDE) -> torch.Tensor:
    """(n,) crop-pixel coordinate of the centres of heatmap cells 0..n-1."""
    return torch.arange(n, dtype=torch.float32) * stride + (stride - 1) / 2


def keypoint_loss(out: dict[str, torch.Tensor], kp_uv: torch.Tensor, visible: torch.Tensor,
                  sigma_px: float = 2.0, stride: int = HEATMAP_STRIDE) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmap and visibility losses.

    Args:
        out: ``kp_logits`` (B, 11, H, W), ``kp_vis_logits`` (B, 11).
        kp_uv: (B, 11, 2) keypoints in crop pixels.
        visible: (B, 11) bool, inside the crop and not self-occluded.
        sigma_px: width of the Gaussian target [crop px].
        stride: the heatmaps' output stride [crop px].
    Returns:
        (heatmap loss: mean over visible keypoints of the cross-entropy between the spatial softmax and the
        normalised Gaussian, visibility loss: mean binary cross-entropy), scalars.
    """
    logits = out["kp_logits"].float()
    B, K, H, W = logits.shape
    ys, xs = cell_centres(H, stride).to(logits.device), cell_centres(W, stride).to(logits.device)
    d2 = (xs[None, None, None, :] - kp_uv[..., 0, None, None]) ** 2 + \
        (ys[None, None, :, None] - kp_uv[..., 1, None, None]) ** 2
    target = torch.softmax((-d2 / (2 * sigma_px ** 2)).reshape(B, K, -1), dim=-1)
    ce = -(target * torch.log_softmax(logits.reshape(B, K, -1), dim=-1)).sum(-1)  # (B, K)
    vis = visible.float()
    l_heat = (ce * vis).sum() / vis.sum().clamp_min(1.0)
    l_vis = F.binary_cross_entropy_with_logits(out["kp_vis_logits"].float(), vis)
    return l_heat, l_vis


@torch.no_grad()
def decode_heatmaps(out: dict[str, torch.Tensor], stride: int = HEATMAP_STRIDE) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel keypoints and their confidence (``stride``: the heatmaps' output stride [crop px]).

    The window is nearly the same in crop pixels at both strides: the cells whose centres lie within
    :data:`CONFIDENCE_HALF_WINDOW_PX` of the peak cell's (3x3 cells at stride 4, 5x5 at stride 2; they cover 12 and
    10 px), so ``model.keypoints.min_confidence`` keeps its meaning (a 2-px Gaussian: 0.98 and 0.96-0.98).

    Returns:
        (uv (B, 11, 2) [crop px], confidence (B, 11) in [0, 1]: softmax mass in that window times the visibility
        probability).
    """
    _check_stride(stride)
    logits = out["kp_logits"].float()
    B, K, H, W = logits.shape
    half = CONFIDENCE_HALF_WINDOW_PX // stride
    p = torch.softmax(logits.reshape(B, K, -1), dim=-1).reshape(B, K, H, W)
    peak = p.reshape(B, K, -1).argmax(-1)
    py, px = peak // W, peak % W
    ys, xs = torch.arange(H, device=p.device), torch.arange(W, device=p.device)
    win = ((ys[None, None, :, None] - py[..., None, None]).abs() <= half) & \
          ((xs[None, None, None, :] - px[..., None, None]).abs() <= half)
    pw = p * win
    mass = pw.sum(dim=(2, 3))
    cy, cx = cell_centres(H, stride).to(p.device), cell_centres(W, stride).to(p.device)
    u = (pw.sum(dim=2) * cx).sum(-1) / mass
    v = (pw.sum(dim=3) * cy).sum(-1) / mass
    conf = mass * torch.sigmoid(out["kp_vis_logits"].float())
    return torch.stack([u, v], -1).cpu().numpy().astype(np.float64), conf.cpu().numpy().astype(np.float64)


def keypoint_medoids(uv: np.ndarray, conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per keypoint, the medoid of several predictions of it (one per view): the prediction with the least summed
    distance to the others, with its confidence.  Not a mean or a coordinate-wise median: with predictions split
    between two corners of the near-symmetric body, those would land between them, where no view put it.

    Args:
        uv: (V, B, K, 2) keypoints of V views in one frame [px]; conf: (V, B, K).
    Returns:
        (uv (B, K, 2), conf (B, K)).
    """
    uv, conf = np.asarray(uv, dtype=np.float64), np.asarray(conf, dtype=np.float64)
    spread = np.linalg.norm(uv[:, None] - uv[None], axis=-1).sum(axis=1)  # (V, B, K)
    best = spread.argmin(axis=0)[None]  # (1, B, K); ties: the first view
    return (np.take_along_axis(uv, best[..., None], axis=0)[0], np.take_along_axis(conf, best, axis=0)[0])


def translation_from_keypoints(R_virt: np.ndarray, kp_body: np.ndarray, uv: np.ndarray, weights: np.ndarray,
                               K: np.ndarray) -> np.ndarray | None:
    """The translation that best projects ``kp_body`` rotated by ``R_virt`` onto ``uv`` (pinhole ``K``).

    With ``p_i = R_virt X_i`` and normalised image points ``(x_i, y_i)``, each keypoint gives two equations linear
    in ``t``: ``t_x - x_i t_z = x_i p_iz - p_ix`` and ``t_y - y_i t_z = y_i p_iz - p_iy`` (weighted least squares).

    Args:
        R_virt: (3, 3) rotation body -> virtual camera; kp_body: (N, 3) [m]; uv: (N, 2) [px]; weights: (N,) >= 0.
    Returns:
        (3,) translation [m] in the virtual camera frame, or None when fewer than 2 keypoints have weight or the
        solution lies behind the camera.
    """
    w = np.asarray(weights, dtype=np.float64)
    use = w > 0
    if use.sum() < 2:
        return None
    p = kp_body[use] @ np.asarray(R_virt).T
    x = (uv[use, 0] - K[0, 2]) / K[0, 0]
    y = (uv[use, 1] - K[1, 2]) / K[1, 1]
    n = len(x)
    A = np.zeros((2 * n, 3))
    b = np.zeros(2 * n)
    A[:n, 0], A[:n, 2], b[:n] = 1.0, -x, x * p[:, 2] - p[:, 0]
    A[n:, 1], A[n:, 2], b[n:] = 1.0, -y, y * p[:, 2] - p[:, 1]
    sw = np.sqrt(np.concatenate([w[use], w[use]]))
    t, *_ = np.linalg.lstsq(A * sw[:, None], b * sw, rcond=None)
    if not np.isfinite(t).all() or (p[:, 2] + t[2]).min() <= 0.1:
        return None
    return t


def reprojection_px(R: np.ndarray, t: np.ndarray, kp_body: np.ndarray, uv: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(N,) distances [px] between the projections of ``kp_body`` at pose (R, t) and ``uv``."""
    pc = kp_body @ R.T + t
    proj = np.stack([K[0, 0] * pc[:, 0] / pc[:, 2] + K[0, 2], K[1, 1] * pc[:, 1] / pc[:, 2] + K[1, 2]], -1)
    return np.linalg.norm(proj - uv, axis=1)


def refine_pose(R0: np.ndarray, t0: np.ndarray, kp_body: np.ndarray, uv: np.ndarray, weights: np.ndarray,
                K: np.ndarray, min_points: int = 6, max_change_deg: float = 15.0) -> tuple[np.ndarray, np.ndarray] | None:
    """Levenberg-Marquardt PnP refinement (``cv2.solvePnPRefineLM``) of (R0, t0) on the keypoints with weight > 0.

    Returns the refined (R (3, 3), t (3,)) in the virtual camera, or None when fewer than ``min_points`` keypoints
    are usable, the refinement did not lower the weighted reprojection error, or it moved the rotation by more than
    ``max_change_deg`` from ``R0`` (the I2S rotation decides the basin; the keypoints only sharpen it).
    """
    use = np.asarray(weights) > 0
    if use.sum() < min_points:
        return None
    obj, img = kp_body[use].astype(np.float64), uv[use].astype(np.float64)
    rvec, _ = cv2.Rodrigues(np.asarray(R0, dtype=np.float64))
    tvec = np.asarray(t0, dtype=np.float64).reshape(3, 1).copy()
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, np.asarray(K, dtype=np.float64), None, rvec, tvec)
    R1, t1 = cv2.Rodrigues(rvec)[0], tvec.ravel()
    if not (np.isfinite(R1).all() and np.isfinite(t1).all()):
        return None
    w = np.asarray(weights)[use]
    before = float((w * reprojection_px(R0, t0, obj, img, K) ** 2).sum())
    after = float((w * reprojection_px(R1, t1, obj, img, K) ** 2).sum())
    change = math.degrees(math.acos(np.clip((np.trace(R1 @ np.asarray(R0).T) - 1) / 2, -1, 1)))
    if after > before or change > max_change_deg or (obj @ R1.T + t1)[:, 2].min() <= 0.1:
        return None
    return R1, t1


def keypoint_inliers(R_virt: np.ndarray, uv: np.ndarray, weights: np.ndarray, K: np.ndarray,
                     inlier_px: float) -> tuple[np.ndarray | None, np.ndarray]:
    """The translation for the rotation ``R_virt`` from the keypoints that agree with it: with the rotation known,
    two keypoints fix the translation, so every pair of weighted keypoints is tried (at most 55: exhaustive and
    deterministic, a RANSAC without chance); the pair whose solution reprojects the largest total weight within
    ``inlier_px`` [px] wins, and the translation is solved again on its inliers.

    Returns:
        (t (3,) in the virtual camera or None, inlier weights (11,): ``weights`` where inlier, else 0).
    """
    w = np.asarray(weights, dtype=np.float64)
    idx = np.flatnonzero(w > 0)
    best_w, best_score = np.zeros_like(w), 0.0
    for a in range(len(idx)):
        for b in range(a + 1, len(idx)):
            pair = np.zeros_like(w)
            pair[[idx[a], idx[b]]] = 1.0
            t = translation_from_keypoints(R_virt, TANGO_KP, uv, pair, K)
            if t is None:
                continue
            inl = np.where((w > 0) & (reprojection_px(R_virt, t, TANGO_KP, uv, K) <= inlier_px), w, 0.0)
            if inl.sum() > best_score:
                best_w, best_score = inl, float(inl.sum())
    if (best_w > 0).sum() < 2:
        return None, np.zeros_like(w)
    return translation_from_keypoints(R_virt, TANGO_KP, uv, best_w, K), best_w


def solve_pose_from_keypoints(uv: np.ndarray, conf: np.ndarray, R_virt: np.ndarray, r_cam_m: np.ndarray,
                              cameras: list[VirtualCamera], pose_solver: Literal["kp_translation", "fused"],
                              min_confidence: float, inlier_px: float = 6.0, min_inliers: int = 4,
                              R_alt: np.ndarray | None = None, alt_gap: np.ndarray | None = None,
                              nats_per_inlier: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``model.pose_solver`` kp_translation / fused for a batch of B crops: per crop, the confident keypoints that
    the I2S rotation explains within ``inlier_px`` (:func:`keypoint_inliers`) give the translation, and with
    ``fused`` the pose refined by :func:`refine_pose`.

    With other modes of the I2S distribution (``R_alt``, e.g. the near-symmetric flip), each candidate rotation is
    scored by the confidence-weighted count of the keypoints it explains minus what the I2S density says against
    it (``-alt_gap / nats_per_inlier``: a mode 2 nats below the best needs 2 more inliers' worth); the best
    candidate with at least ``min_inliers`` inliers is solved (branch ``fused_alt`` / ``kp_translation_alt`` when
    it is not the mode).

    Args:
        uv, conf: (B, 11, 2) decoded keypoints [crop px] and (B, 11) their confidences (:func:`decode_heatmaps`).
        R_virt: (B, 3, 3) the I2S rotations in the crops' virtual cameras.
        r_cam_m: (B, 3) the regressed translations [m, real camera frame].
        cameras: the B crops' virtual cameras.
        pose_solver: ``kp_translation`` (the translation from the keypoints for the I2S rotation) or ``fused``.
        min_confidence: keypoints below this confidence are not used.
        inlier_px, min_inliers: the inlier gate [crop px]; fewer inliers than ``min_inliers`` keep the I2S pose.
        R_alt, alt_gap: (B, k, 3, 3) other modes in the virtual cameras and (B, k) their log-density gaps
            [nats, <= 0; NaN: none] (:func:`~speedpose.pose.orientation.rotation_alternatives`); None: the mode only.
        nats_per_inlier: the exchange rate between the density gap and the keypoint support.
    Returns:
        (R_virt (B, 3, 3), r_cam_m (B, 3), branch (B,) ``i2s`` | ``kp_translation`` | ``fused`` |
        ``kp_translation_alt`` | ``fused_alt``): the inputs kept (branch ``i2s``) where there are too few inliers or
        the solution is degenerate.
    """
    R_out, r_out = R_virt.copy(), r_cam_m.copy()
    branch = np.full(len(R_virt), "i2s", dtype="<U18")
    for b, vc in enumerate(cameras):
        w0 = np.where(conf[b] >= min_confidence, conf[b], 0.0)
        if (w0 > 0).sum() < min_inliers:
            continue
        candidates = [(R_virt[b], 0.0, "")]
        if R_alt is not None and alt_gap is not None:
            candidates += [(R_alt[b, j], float(alt_gap[b, j]), "_alt") for j in range(R_alt.shape[1])
                           if np.isfinite(alt_gap[b, j])]
        best = None
        for R_c, gap, tag in candidates:
            t_c, w_c = keypoint_inliers(R_c, uv[b], w0, vc.K, inlier_px)
            if t_c is None or (w_c > 0).sum() < min_inliers:
                continue
            score = float(w_c.sum()) + gap / nats_per_inlier
            if best is None or score > best[0]:
                best = (score, R_c, t_c, w_c, tag)
        if best is None:
            continue
        _, R_b, t_virt, w, tag = best
        branch[b] = "kp_translation" + tag
        if pose_solver == "fused":
            refined = refine_pose(R_b, t_virt, TANGO_KP, uv[b], w, vc.K)
            if refined is not None:
                (R_b, t_virt), branch[b] = refined, "fused" + tag
        R_out[b], r_out[b] = R_b, vc.pose_from_virtual(R_b, t_virt)[1]
    return R_out, r_out, branch


__all__ = ["HEATMAP_STRIDE", "KeypointHead", "N_KEYPOINTS", "cell_centres", "decode_heatmaps", "keypoint_inliers",
           "keypoint_loss", "refine_pose", "reprojection_px", "solve_pose_from_keypoints", "translation_from_keypoints"]
