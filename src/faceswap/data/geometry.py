"""Face geometry shared by the align stage, serving and the metrics.

The 5-point template, the similarity fit (Umeyama) and its residual, warping a crop, smoothing landmarks
over time, and choosing the clip's face among several. No I/O: the align stage (``faceswap.data.align``)
and serving (``faceswap.serving.swapper``) both build on it, so a crop is cut the same way everywhere.
"""

from __future__ import annotations

import math

import numpy as np

from faceswap.data.template import ARCFACE_TEMPLATE_112, face_template  # noqa: F401  (re-exported)
from faceswap.detections import Detections


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) src → dst, as 2×3.

    Umeyama (1991), "Least-squares estimation of transformation parameters between two point patterns".
    """
    src, dst = np.asarray(src, float), np.asarray(dst, float)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    var_s = (xs**2).sum() / len(src)
    cov = xd.T @ xs / len(src)
    u, d, vt = np.linalg.svd(cov)
    s = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s[-1] = -1
    r = u @ np.diag(s) @ vt
    scale = (d * s).sum() / var_s if var_s > 0 else 1.0
    m = np.empty((2, 3))
    m[:, :2] = scale * r
    m[:, 2] = mu_d - scale * r @ mu_s
    return m


def apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return np.asarray(pts, float) @ m[:, :2].T + m[:, 2]


def rms_residual(m: np.ndarray, src: np.ndarray, dst: np.ndarray) -> float:
    """RMS distance between ``m``·src and dst (pixels of the destination)."""
    return float(np.sqrt(((apply_affine(m, src) - dst) ** 2).sum(1).mean()))


def warp_face(frame: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """The aligned ``size``² crop. Strong down-scaling warps at k× and area-averages, to avoid aliasing.

    Where the crop reaches past the frame its pixels repeat the frame's edge (``BORDER_REPLICATE``, as the peer
    tools' aligners do): a smooth smear. Reflection, used before, mirrored the face into the margin: a face near
    the top of a close-up got a second, upside-down chin and mouth in its crop for the model to learn to paint
    (issue #21). How much of a crop is out of frame is :func:`out_of_frame_share`; the validation gate
    quarantines crops where it is large (``validate.max_out_of_frame``)."""
    import cv2

    scale = math.sqrt(abs(np.linalg.det(m[:, :2])))
    k = int(min(4, max(1, round(1.0 / max(scale, 1e-6)))))
    if k == 1:
        return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    big = cv2.warpAffine(frame, m * k, (size * k, size * k), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    return cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)


def out_of_frame_share(m: np.ndarray, frame_width: int, frame_height: int, size: int) -> float:
    """Share of the ``size``² crop's pixels whose source point (the centre of the pixel mapped back through the
    forward frame → crop affine ``m``) lies outside the ``frame_width`` × ``frame_height`` frame."""
    a = np.vstack([np.asarray(m, float).reshape(2, 3), [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(a)[:2]
    c = np.arange(size, dtype=float) + 0.5
    xs, ys = np.meshgrid(c, c)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    outside = (sx < 0) | (sx > frame_width) | (sy < 0) | (sy > frame_height)
    return float(outside.mean())


def smooth_landmarks(landmarks: np.ndarray, segments: np.ndarray, sigma: float) -> np.ndarray:
    """Centred Gaussian smoothing of (T, 5, 2) landmarks along T, never across segment boundaries."""
    out = np.array(landmarks, float, copy=True)
    if sigma <= 0 or len(out) < 2:
        return out
    radius = max(1, math.ceil(3 * sigma))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    for seg in np.unique(segments):
        idx = np.flatnonzero(segments == seg)
        x = landmarks[idx]
        for j in range(len(idx)):
            lo, hi = max(0, j - radius), min(len(idx), j + radius + 1)
            w = kernel[lo - j + radius : hi - j + radius]
            out[idx[j]] = np.tensordot(w / w.sum(), x[lo:hi], axes=1)
    return out


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0, y0 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x1, y1 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-9)


def select_face(
    det: Detections,
    prev_box: np.ndarray | None,
    policy: str,
    score_threshold: float,
    min_face_size: int,
    track_iou: float,
) -> tuple[int | None, str | None, bool]:
    """(index of the kept face or None, reject reason or None, whether it continues the previous track)."""
    if len(det) == 0:
        return None, "no_face", False
    ok = det.scores >= score_threshold
    if not ok.any():
        return None, "low_score", False
    wh = np.minimum(det.boxes[:, 2] - det.boxes[:, 0], det.boxes[:, 3] - det.boxes[:, 1])
    ok &= wh >= min_face_size
    if not ok.any():
        return None, "too_small", False
    cand = np.flatnonzero(ok)
    areas = (det.boxes[cand, 2] - det.boxes[cand, 0]) * (det.boxes[cand, 3] - det.boxes[cand, 1])
    if policy == "track" and prev_box is not None:
        ious = box_iou(prev_box, det.boxes[cand])
        j = int(np.argmax(ious))
        if ious[j] >= track_iou:
            return int(cand[j]), None, True
    if policy == "score":
        return int(cand[np.argmax(det.scores[cand])]), None, False
    return int(cand[np.argmax(areas)]), None, False
