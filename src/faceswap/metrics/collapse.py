"""Does a decoder's swap change with its source? The collapse measure (docs/metrics.md, "Swap collapse").

A decoder that ignores the code draws one face for every source (the demo's a→b column before the swap recipe).
Identity cannot see that (the target's mean face *is* the target), and a per-pixel spread of the swaps cannot
either: a smear of decoder noise varies from source to source as much as a real face does. So the spread is taken
where faces differ and noise does not: over the template's face region only, after an area low-pass to
``lowpass``² (a 4× average at 64²: pose, expression and shading survive, pixel noise and grids do not), and as a
share of the spread of the *reconstructions* of the same source faces by the source's own decoder (which follow
their source by construction, at the model's own sharpness)::

    collapse = Σᵢ ‖L(swapᵢ) − mean L(swap)‖² / Σᵢ ‖L(reconᵢ) − mean L(recon)‖²

0 = one image for every source; 1 = the swaps vary as much as the reconstructions. Spread alone cannot tell a
swap that varies *with* its source from one that varies with something else (a smear whose brightness follows the
source's light reads 2-11 on the real pair), so :func:`follow_structure` gives its companion: the correlation of
the pairwise distances between swaps with those between the same sources' reconstructions (representational
similarity): 1 = two swaps differ exactly where their sources differ, ≈ 0 for noise, a constant swap or the same
faces 0.8 s late (0.2-0.3). Per face the share
``‖L(swapᵢ) − mean‖² / mean ‖L(reconⱼ) − mean‖²`` (its mean is the ratio), so seeds and faces bootstrap as the
other per-face metrics do. Validated on the real pair's crops in docs/metrics.md (bench/swap_instruments.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["LOWPASS", "collapse", "follow_structure", "following"]

LOWPASS = 16  # side the face region is area-averaged to before the spread is taken


def _lowpassed(images: np.ndarray, region: np.ndarray, side: int) -> np.ndarray:
    """(N, H, W, 3) floats → (N, K) the low-passed face region's pixels (K = 3 × pixels of the region at ``side``²)."""
    import cv2

    small = np.stack([cv2.resize(np.asarray(im, np.float32), (side, side), interpolation=cv2.INTER_AREA)
                      for im in images])
    keep = cv2.resize(region.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA) > 0.5
    return small[:, keep].reshape(len(images), -1).astype(np.float64)


def collapse(swaps: np.ndarray, recons: np.ndarray, region: np.ndarray, lowpass: int = LOWPASS) -> dict[str, Any]:
    """The collapse ratio of ``swaps`` against ``recons`` of the same source faces (both (N, H, W, 3), any scale
    as long as it is the same): {``ratio``, ``per_face`` (shares whose mean is the ratio), ``faces``}; ratio None
    where the reconstructions themselves do not vary."""
    return _collapse(*_paired(swaps, recons, region, lowpass))


def follow_structure(swaps: np.ndarray, recons: np.ndarray, region: np.ndarray, lowpass: int = LOWPASS) -> float:
    """Pearson r between the pairwise distances of the low-passed swaps and those of the reconstructions of the
    same sources (0 where the swaps do not vary at all)."""
    return _structure(*_paired(swaps, recons, region, lowpass))


def following(swaps: np.ndarray, recons: np.ndarray, region: np.ndarray,
              lowpass: int = LOWPASS) -> tuple[dict[str, Any], float]:
    """(:func:`collapse`, :func:`follow_structure`) from one low-pass of each set: what evaluation reports."""
    s, r = _paired(swaps, recons, region, lowpass)
    return _collapse(s, r), _structure(s, r)


def _paired(swaps: np.ndarray, recons: np.ndarray, region: np.ndarray, lowpass: int) -> tuple[np.ndarray, np.ndarray]:
    swaps, recons = np.asarray(swaps), np.asarray(recons)
    if swaps.shape != recons.shape or len(swaps) < 2:
        raise ValueError(f"need ≥ 2 paired swaps and reconstructions of one shape, got {swaps.shape} and "
                         f"{recons.shape}")
    return _lowpassed(swaps, region, lowpass), _lowpassed(recons, region, lowpass)


def _collapse(s: np.ndarray, r: np.ndarray) -> dict[str, Any]:
    ds = ((s - s.mean(0)) ** 2).sum(1)
    dr = ((r - r.mean(0)) ** 2).sum(1)
    scale = float(dr.mean())
    if scale <= 1e-12:  # reconstructions that do not vary (an untrained decoder): nothing to compare the swaps with
        return {"ratio": None, "per_face": [], "faces": len(s)}
    per_face = ds / scale
    return {"ratio": float(per_face.mean()), "per_face": per_face.tolist(), "faces": len(s)}


def _structure(s: np.ndarray, r: np.ndarray) -> float:
    from scipy.spatial.distance import pdist

    ds, dr = pdist(s), pdist(r)
    if len(ds) < 3 or ds.std() < 1e-12 or dr.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(ds, dr)[0, 1])
