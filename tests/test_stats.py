"""The hierarchical bootstrap: its intervals cover the truth about as often as they claim, and widen with
seed-to-seed spread."""

from __future__ import annotations

import numpy as np
import pytest

from faceswap.stats import hierarchical_bootstrap, seed_spread


def test_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = 0
    trials = 200
    for t in range(trials):
        a = rng.normal(1.0, 0.3, (1, 40))
        b = rng.normal(2.0, 0.5, (1, 35))
        est = hierarchical_bootstrap([a, b], samples=500, seed=t)
        hits += est.lo <= 1.5 <= est.hi
        assert est.lo <= est.mean <= est.hi and est.faces == 75 and est.seeds == 1
    assert 0.89 <= hits / trials <= 0.99


def test_identities_weigh_the_same_whatever_their_face_counts():
    est = hierarchical_bootstrap([np.zeros((1, 90)), np.ones((1, 10))], samples=200)
    assert est.mean == pytest.approx(0.5)


def test_seed_spread_widens_the_interval():
    rng = np.random.default_rng(1)
    faces = rng.normal(0.0, 0.1, 50)
    same = hierarchical_bootstrap([np.stack([faces, faces, faces])], samples=1000)
    spread = hierarchical_bootstrap([np.stack([faces - 0.2, faces, faces + 0.2])], samples=1000)
    assert (spread.hi - spread.lo) > 3 * (same.hi - same.lo)
    assert spread.mean == pytest.approx(same.mean)
    assert seed_spread([1.0, 2.0, 3.0]) == {"min": 1.0, "max": 3.0, "std": 1.0}


def test_overlap_and_formatting():
    a = hierarchical_bootstrap([np.linspace(0, 1, 30)], samples=300)
    b = hierarchical_bootstrap([np.linspace(0.1, 1.1, 30)], samples=300)
    c = hierarchical_bootstrap([np.linspace(5, 6, 30)], samples=300)
    assert a.overlaps(b) and not a.overlaps(c)
    assert format(a, ".2f").startswith("0.50 [")


@pytest.mark.parametrize("bad", [[np.array([[np.nan, 1.0]])], [np.zeros((2, 3)), np.zeros((1, 3))], [np.zeros((1, 0))]])
def test_bad_inputs_are_refused(bad):
    with pytest.raises(ValueError):
        hierarchical_bootstrap(bad)
