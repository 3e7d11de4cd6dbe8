"""The alignment template every crop is cut to: a module of its own, so that code which only needs the face's
place in a crop (the training loss's face weighting) does not pull in the detectors that geometry.py works with."""

from __future__ import annotations

import numpy as np
import torch

# ArcFace's 5-point template for 112×112 crops (insightface): eyes, nose tip, mouth corners.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)

def face_template(size: int, coverage: float = 0.8) -> np.ndarray:
    """The 5 template points (5, 2) in a ``size``² crop: ArcFace framing scaled by ``coverage`` about the centre."""
    t = ARCFACE_TEMPLATE_112 / 112.0
    return size * (0.5 + coverage * (t - 0.5))


def face_ellipse(size: int, coverage: float = 0.8) -> torch.Tensor:
    """(1, 1, size, size) in [0, 1]: 1 on the face, 0 off it, a feathered ellipse from the template's points.

    Centred between the eye line and the mouth, 1.15 eye distances wide and 1.35 eye-to-mouth heights tall on each
    side (brows to chin), with a logistic edge a tenth of the radius wide. Every crop shares the template, so one
    map serves a batch; the augmentation's random affine moves a face by a few percent, inside the feather. The
    training loss's face weighting and the model's masked input both use it (one face region, stated once)."""
    pts = face_template(size, coverage)
    eyes, mouth = pts[:2], pts[3:]
    d = float(np.linalg.norm(eyes[1] - eyes[0]))
    cx, cy = float(pts[:, 0].mean()), float((eyes[:, 1].mean() + mouth[:, 1].mean()) / 2)
    ax, ay = 1.15 * d, 1.35 * float(mouth[:, 1].mean() - eyes[:, 1].mean())
    centres = torch.arange(size, dtype=torch.float32) + 0.5
    yy, xx = torch.meshgrid(centres, centres, indexing="ij")
    r = torch.sqrt(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2)
    return torch.sigmoid((1.0 - r) / 0.1)[None, None]


def face_region(size: int, coverage: float = 0.8) -> np.ndarray:
    """(size, size) bool: the pixels of the face ellipse (feather above one half), where face statistics and the swap
    instruments look (colour transfer, collapse)."""
    return face_ellipse(size, coverage)[0, 0].numpy() > 0.5
