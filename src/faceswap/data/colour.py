"""Colour transfer between the two identities' faces, for training (``train.augment.colour_transfer``).

The two sets of a face swap are usually filmed in different light (the demo: a blue screen against a lit room). A
decoder trained only on its own person's light learns the light as part of the person, and the shared encoder
codes the light instead of the face. Recolouring a training face with the colour statistics of a random face of
the *other* set (DeepFaceLab's ``ct_mode``, faceswap-GAN's random colour match) takes that cue away. Statistics
are taken over the face region only (the template's ellipse), so the backgrounds do not set the colours:

- ``rct``: Reinhard et al. 2001 in CIE Lab: per channel, (x − μ_src) · σ_ref / σ_src + μ_ref;
- ``lct``: linear colour transfer in RGB: x ↦ Σ_ref^½ Σ_src^−½ (x − μ_src) + μ_ref with symmetric matrix square
  roots, which matches the full covariance (colour casts that mix channels) rather than each channel alone.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MODES", "lct", "rct", "transfer"]

MODES = ("rct", "lct")
_EPS = 1e-6


def _lab(im: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(im.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def _rgb8(lab_or_rgb: np.ndarray, from_lab: bool) -> np.ndarray:
    import cv2

    x = cv2.cvtColor(lab_or_rgb.astype(np.float32), cv2.COLOR_LAB2RGB) * 255.0 if from_lab else lab_or_rgb
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def rct(image: np.ndarray, reference: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``image`` (H, W, 3) uint8 RGB recoloured so its face region has ``reference``'s face mean and spread in Lab."""
    src, ref = _lab(image), _lab(reference)
    s, r = src[region], ref[region]
    mu_s, sd_s, mu_r, sd_r = s.mean(0), s.std(0), r.mean(0), r.std(0)
    out = (src - mu_s) * (sd_r / np.maximum(sd_s, _EPS)) + mu_r
    return _rgb8(out, from_lab=True)


def _sqrtm(c: np.ndarray, inverse: bool = False) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    w = np.maximum(w, _EPS)
    return (v * (w ** (-0.5 if inverse else 0.5))) @ v.T


def lct(image: np.ndarray, reference: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``image`` recoloured so its face region has ``reference``'s face mean and RGB covariance."""
    src, ref = image.astype(np.float64), reference.astype(np.float64)
    s, r = src[region], ref[region]
    mu_s, mu_r = s.mean(0), r.mean(0)
    m = _sqrtm(np.cov(r, rowvar=False) + _EPS * np.eye(3)) @ _sqrtm(np.cov(s, rowvar=False) + _EPS * np.eye(3),
                                                                   inverse=True)
    out = (src - mu_s) @ m.T + mu_r
    return _rgb8(out, from_lab=False)


def transfer(mode: str, image: np.ndarray, reference: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Dispatch on ``mode`` (:data:`MODES`)."""
    if mode == "rct":
        return rct(image, reference, region)
    if mode == "lct":
        return lct(image, reference, region)
    raise ValueError(f"unknown colour transfer {mode!r}; valid: {', '.join(MODES)}")
