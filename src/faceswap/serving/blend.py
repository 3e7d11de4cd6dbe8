"""Putting a swapped face back into its frame: mask from the 5 landmarks, colour transfer, paste-back.

All functions take and return RGB uint8 frames (H, W, 3) and work inside the region the aligned crop
covers, so a 1280×720 frame costs little more than a 256² crop.

- **mask**: ``hull``: the convex hull of the landmarks extended to the brows (eyes moved up) and the
  chin (mouth corners moved down), ``ellipse``: an ellipse through the same extent, turned with the eye
  line. Both are feathered: eroded by half the feather width, then blurred, so the soft edge stays
  inside the face and the frame's own pixels show at the border (faceswap #212, DFL #5274).
- **colour transfer**: Reinhard et al. (2001), "Color Transfer between Images": per-channel mean and
  standard deviation in CIE L*a*b* moved to the frame's face under the mask.
- **paste-back**: the swapped crop is warped into the frame with the inverse of the alignment matrix
  and alpha-blended with the mask, or Poisson-blended (``cv2.seamlessClone``) when asked for.
"""

from __future__ import annotations

import math

import numpy as np

# Where the face outline sits relative to the landmarks, in units of the eye-to-mouth distance.
BROW_LIFT = 0.75  # eyes → top of the brows / lower forehead
CHIN_DROP = 0.75  # mouth corners → chin
SIDE_PAD = 0.45  # eyes and mouth corners → cheeks


def face_outline(landmarks: np.ndarray) -> np.ndarray:
    """(5, 2) landmarks (eyes, nose, mouth corners) → (12, 2) points around brows, cheeks and chin."""
    lm = np.asarray(landmarks, float)
    eye_l, eye_r, _nose, mouth_l, mouth_r = lm
    eyes, mouth = (eye_l + eye_r) / 2, (mouth_l + mouth_r) / 2
    down = mouth - eyes  # face's vertical axis, eye line → mouth
    h = float(np.linalg.norm(down)) or 1.0
    down /= h
    right = np.array([-down[1], down[0]])  # perpendicular, towards the right eye (image left→right)
    if np.dot(right, eye_r - eye_l) < 0:
        right = -right
    side = SIDE_PAD * h
    pts = [
        eye_l - BROW_LIFT * h * down - 0.3 * side * right,
        eye_r - BROW_LIFT * h * down + 0.3 * side * right,
        eye_l - 0.3 * h * down - side * right,
        eye_r - 0.3 * h * down + side * right,
        eye_l - side * right,
        eye_r + side * right,
        mouth_l - side * right,
        mouth_r + side * right,
        mouth_l + 0.5 * CHIN_DROP * h * down - 0.6 * side * right,
        mouth_r + 0.5 * CHIN_DROP * h * down + 0.6 * side * right,
        mouth_l + CHIN_DROP * h * down,
        mouth_r + CHIN_DROP * h * down,
    ]
    return np.array(pts)


def face_size(landmarks: np.ndarray) -> float:
    """A face's scale in pixels: the larger of the eye distance and the eye-to-mouth distance."""
    lm = np.asarray(landmarks, float)
    eyes, mouth = (lm[0] + lm[1]) / 2, (lm[3] + lm[4]) / 2
    return float(max(np.linalg.norm(lm[1] - lm[0]), np.linalg.norm(mouth - eyes), 1.0))


def face_mask(shape: tuple[int, int], landmarks: np.ndarray, kind: str = "hull", feather: float = 0.08) -> np.ndarray:
    """(H, W) float32 mask in [0, 1] of the face described by ``landmarks`` (coordinates in that image)."""
    import cv2

    h, w = shape
    outline = face_outline(landmarks)
    mask = np.zeros((h, w), np.uint8)
    if kind == "hull":
        hull = cv2.convexHull(np.round(outline).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 255, lineType=cv2.LINE_AA)
    elif kind == "ellipse":
        lm = np.asarray(landmarks, float)
        angle = math.degrees(math.atan2(lm[1, 1] - lm[0, 1], lm[1, 0] - lm[0, 0]))
        rot = np.array([[math.cos(math.radians(angle)), math.sin(math.radians(angle))],
                        [-math.sin(math.radians(angle)), math.cos(math.radians(angle))]])
        local = (outline - outline.mean(0)) @ rot.T  # outline in the face's own axes
        centre = outline.mean(0)
        axes = np.abs(local).max(0)
        c = np.round(centre).astype(int)
        ax = np.maximum(1, np.round(axes)).astype(int)
        cv2.ellipse(mask, (int(c[0]), int(c[1])), (int(ax[0]), int(ax[1])), angle, 0, 360, 255, -1, cv2.LINE_AA)
    else:
        raise ValueError(f"mask must be hull or ellipse, got {kind!r}")
    width = feather * face_size(landmarks) * 2
    if width >= 1:
        k = max(1, round(width / 2))
        mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
        mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=width / 2)
    return mask.astype(np.float32) / 255.0


def reinhard(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``source`` (RGB uint8) recoloured so that its L*a*b* mean/std under ``mask`` match ``target``'s."""
    import cv2

    sel = mask > 0.5
    if sel.sum() < 16:
        return source
    src = cv2.cvtColor(source.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    tgt = cv2.cvtColor(target.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    s_mean, s_std = src[sel].mean(0), src[sel].std(0)
    t_mean, t_std = tgt[sel].mean(0), tgt[sel].std(0)
    out = (src - s_mean) * (t_std / np.maximum(s_std, 1e-3)) + t_mean
    out[..., 0] = np.clip(out[..., 0], 0, 100)
    rgb = cv2.cvtColor(out, cv2.COLOR_LAB2RGB)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _roi(m: np.ndarray, size: int, shape: tuple[int, int], pad: int = 2) -> tuple[int, int, int, int] | None:
    """The frame rectangle (x0, y0, x1, y1) the ``size``² crop of matrix ``m`` covers, clipped; None if off-frame."""
    import cv2

    inv = cv2.invertAffineTransform(m)
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], float) @ inv[:, :2].T + inv[:, 2]
    h, w = shape
    x0, y0 = np.floor(corners.min(0)).astype(int) - pad
    x1, y1 = np.ceil(corners.max(0)).astype(int) + pad
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return int(x0), int(y0), int(x1), int(y1)


def paste_back(
    frame: np.ndarray,
    crop: np.ndarray,
    m: np.ndarray,
    landmarks: np.ndarray,
    *,
    mask_kind: str = "hull",
    feather: float = 0.08,
    colour: str = "reinhard",
    seamless: bool = False,
) -> np.ndarray:
    """The frame with the swapped ``crop`` (aligned by ``m``: frame → crop) blended over the face at ``landmarks``."""
    import cv2

    size = crop.shape[0]
    roi = _roi(m, size, frame.shape[:2])
    if roi is None:
        return frame.copy()
    x0, y0, x1, y1 = roi
    shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], float)
    inv = cv2.invertAffineTransform(m)
    inv_roi = (shift @ np.vstack([inv, [0, 0, 1]]))[:2]  # crop → ROI
    rw, rh = x1 - x0, y1 - y0
    face = cv2.warpAffine(crop, inv_roi, (rw, rh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    valid = cv2.warpAffine(np.full((size, size), 255, np.uint8), inv_roi, (rw, rh), flags=cv2.INTER_LINEAR)
    valid = cv2.erode(valid, np.ones((3, 3), np.uint8)).astype(np.float32) / 255.0
    lm = np.asarray(landmarks, float) - [x0, y0]
    mask = face_mask((rh, rw), lm, mask_kind, feather) * valid
    out = frame.copy()
    region = frame[y0:y1, x0:x1]
    if colour == "reinhard":
        face = reinhard(face, region, mask)
    if seamless:
        binary = (mask > 0.5).astype(np.uint8) * 255
        binary[[0, -1], :] = 0
        binary[:, [0, -1]] = 0
        ys, xs = np.nonzero(binary)
        if len(xs) >= 16:
            centre = (int((xs.min() + xs.max() + 1) // 2), int((ys.min() + ys.max() + 1) // 2))
            try:  # source, mask and destination are all the ROI: the clone stays where the face is
                out[y0:y1, x0:x1] = cv2.seamlessClone(face, np.ascontiguousarray(region), binary, centre,
                                                      cv2.NORMAL_CLONE)
                return out
            except cv2.error:
                pass  # degenerate geometry: fall back to the feathered blend
    a = mask[..., None]
    out[y0:y1, x0:x1] = np.clip(face.astype(np.float32) * a + region.astype(np.float32) * (1 - a) + 0.5, 0, 255).astype(
        np.uint8
    )
    return out
