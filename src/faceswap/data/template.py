"""The alignment template every crop is cut to: a module of its own, so that code which only needs the face's
place in a crop (the training loss's face weighting) does not pull in the detectors that geometry.py works with."""

from __future__ import annotations

import numpy as np

# ArcFace's 5-point template for 112×112 crops (insightface): eyes, nose tip, mouth corners.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)

def face_template(size: int, coverage: float = 0.8) -> np.ndarray:
    """The 5 template points (5, 2) in a ``size``² crop: ArcFace framing scaled by ``coverage`` about the centre."""
    t = ARCFACE_TEMPLATE_112 / 112.0
    return size * (0.5 + coverage * (t - 0.5))
