"""bench/mask_fit.py: the ellipse-against-hull measures on real aligned faces (the public-domain portraits)."""

from __future__ import annotations

import numpy as np

from faceswap.data.demo import astronaut, grace_hopper
from faceswap.data.geometry import face_template, umeyama, warp_face
from tests.conftest import bench_module

COVERAGE = 0.8


def _bench():
    return bench_module("mask_fit")


def test_a_hull_fills_its_polygon_and_the_extension_raises_only_the_brows():
    bench = _bench()
    square = np.array([[10.0, 10.0], [30.0, 10.0], [30.0, 30.0], [10.0, 30.0], [20.0, 20.0]])
    m = bench.hull_mask(square, 64)
    assert 400 <= m.sum() <= 441 and m[20, 20] and not m[5, 5] and not m[35, 20]
    pts = np.tile(np.array([[32.0, 40.0]]), (68, 1))
    pts[17:27, 1], pts[36:48, 1] = 20.0, 30.0
    ext = bench.extended(pts)
    np.testing.assert_allclose(ext[17:27, 1], 15.0)  # half the 10-px brow-to-eye distance above the brows
    np.testing.assert_array_equal(np.delete(ext, np.s_[17:27], 0), np.delete(pts, np.s_[17:27], 0))


def _aligned(coverage: float) -> np.ndarray:
    return np.stack([warp_face(f.image, umeyama(f.landmarks, face_template(128, coverage)), 128)
                     for f in (astronaut(), grace_hopper())])


def test_the_ellipse_fits_a_face_cut_to_its_template_and_not_one_cut_larger_or_smaller():
    """Known good: real portraits aligned at the ellipse's own coverage. Known bad: the same faces cut larger than
    the template (the ellipse crops the face) and smaller (the ellipse lets in what is round the face)."""
    bench = _bench()
    good = bench.measure(_aligned(COVERAGE), COVERAGE)["per_face"]
    assert (good["hull_in_ellipse"] > 0.95).all(), good["hull_in_ellipse"]
    assert (good["ellipse_off_ext"] < 0.3).all(), good["ellipse_off_ext"]
    larger = bench.measure(_aligned(1.1), COVERAGE)["per_face"]
    assert (larger["hull_in_ellipse"] < 0.85).all(), larger["hull_in_ellipse"]
    smaller = bench.measure(_aligned(0.6), COVERAGE)["per_face"]
    assert smaller["ellipse_off_ext"].mean() > good["ellipse_off_ext"].mean() + 0.1, (smaller, good)
