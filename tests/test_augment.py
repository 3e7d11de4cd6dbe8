"""The random warp: exact identity at zero strength, displacement statistics that follow the setting at any crop
size, no border artifacts, and inputs a trained model treats like unwarped ones."""

from __future__ import annotations

import numpy as np
import pytest

from faceswap.config import AugmentParams
from faceswap.data.dataset import _random_warp_maps, augment_pair, warp_displacement


@pytest.mark.parametrize("n", [64, 256])
def test_zero_strength_is_the_identity(n):
    mx, my = _random_warp_maps(np.random.default_rng(0), n, 0.0)
    grid = np.arange(n, dtype=np.float32)
    assert np.abs(mx - grid[None, :]).max() < 1e-3 and np.abs(my - grid[:, None]).max() < 1e-3


@pytest.mark.parametrize("n", [64, 256])
def test_zero_strength_leaves_the_crop_untouched(astronaut, n):
    import cv2

    im = cv2.resize(astronaut[40:300, 120:380], (n, n), interpolation=cv2.INTER_AREA)
    none = AugmentParams(warp=0.0, rotate_deg=0, scale=0, shift=0, flip=0, brightness=0, contrast=0, saturation=0)
    mx, my = _random_warp_maps(np.random.default_rng(1), n, 0.0)
    remapped = cv2.remap(im, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    assert np.abs(remapped.astype(int) - im).max() <= 1  # sub-pixel: at most a rounding step
    warped, target = augment_pair(im, np.random.default_rng(1), none)
    assert np.array_equal(warped, im) and np.array_equal(target, im)


@pytest.mark.parametrize("n", [64, 256])
@pytest.mark.parametrize("strength", [0.02, 0.04, 0.08])
def test_displacement_spread_matches_the_setting_at_any_size(n, strength):
    d = np.stack([np.stack(warp_displacement(np.random.default_rng(s), n, strength)) for s in range(400)])
    rel = d / n
    assert abs(rel.mean()) < 0.1 * strength  # unbiased: no shift common to every input
    assert rel.mean(axis=0).std() < 0.1 * strength  # ... at any pixel, not only on average
    assert rel.std() == pytest.approx(strength, rel=0.05)  # RMS displacement = strength × side


def test_warp_is_smooth_and_has_no_border_artifacts(astronaut):
    import cv2

    n = 64
    im = cv2.resize(astronaut[40:300, 120:380], (n, n), interpolation=cv2.INTER_AREA)
    # smooth and fold-free at the classic deepfake strength (5 px noise on a 40-px grid ≈ 0.025 here): the
    # warped image never folds over itself (the map stays monotonic along both axes)
    for s in range(200):
        dx, dy = warp_displacement(np.random.default_rng(s), n, 0.025)
        assert (1 + np.diff(dx, axis=1)).min() > 0 and (1 + np.diff(dy, axis=0)).min() > 0
    mx, my = _random_warp_maps(np.random.default_rng(3), n, 0.025)
    warped = cv2.remap(im, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    # no constant-colour fill along the border: border rows/columns keep the content's variation
    for edge in (warped[0], warped[-1], warped[:, 0], warped[:, -1]):
        assert edge.std() > 0.25 * im.std() or edge.std() > 5
    assert np.abs(warped.astype(int) - im).mean() > 2  # ... and it does move the face
