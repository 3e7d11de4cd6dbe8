"""Uncertainty of reported numbers: a hierarchical bootstrap over training seeds and test faces.

A variant's number is the mean over its training seeds of the mean over test faces (per identity, then
averaged over identities, so each identity weighs the same whatever its face count). Its 95% interval
resamples both levels: seeds with replacement (the run-to-run spread), then faces with replacement within
each identity (the face sampling). With one seed only the face level is resampled, and the interval says
nothing about retraining; the reports say how many seeds there were.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_SAMPLES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A mean with its bootstrap interval; ``seeds`` and ``faces`` say what it was estimated from."""

    mean: float
    lo: float
    hi: float
    seeds: int
    faces: int

    def overlaps(self, other: Estimate) -> bool:
        return self.lo <= other.hi and other.lo <= self.hi

    def as_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "ci_lo": self.lo, "ci_hi": self.hi, "seeds": self.seeds, "faces": self.faces}

    def __format__(self, spec: str) -> str:
        spec = spec or ".4f"
        return f"{format(self.mean, spec)} [{format(self.lo, spec)}, {format(self.hi, spec)}]"


def _as_groups(groups: Sequence[np.ndarray | Sequence[Sequence[float]]]) -> list[np.ndarray]:
    out = []
    for g in groups:
        a = np.asarray(g, dtype=np.float64)
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2 or a.shape[1] == 0:
            raise ValueError(f"each group must be (seeds, faces) with at least one face; got shape {a.shape}")
        out.append(a)
    if not out or len({a.shape[0] for a in out}) != 1:
        raise ValueError("every group needs the same number of seeds")
    return out


def hierarchical_bootstrap(
    groups: Sequence[np.ndarray | Sequence[Sequence[float]]],
    samples: int = BOOTSTRAP_SAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> Estimate:
    """Mean of per-face values and its percentile interval.

    ``groups``: one (seeds, faces) array per identity (or direction); the same seeds in every group, in the
    same order. Non-finite values are not allowed: a metric that failed on a face must say so upstream.
    """
    arrays = _as_groups(groups)
    if not all(np.isfinite(a).all() for a in arrays):
        raise ValueError("per-face values contain NaN or Inf")
    n_seeds = arrays[0].shape[0]
    point = float(np.mean([a.mean() for a in arrays]))
    rng = np.random.default_rng(seed)
    seed_idx = rng.integers(0, n_seeds, (samples, n_seeds))
    stats = np.zeros(samples)
    for a in arrays:
        face_idx = rng.integers(0, a.shape[1], (samples, a.shape[1]))
        per_seed = a[:, face_idx].mean(axis=2)  # (seeds, samples): each seed's mean on the resampled faces
        stats += np.take_along_axis(per_seed.T, seed_idx, axis=1).mean(axis=1)
    stats /= len(arrays)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return Estimate(point, float(min(lo, point)), float(max(hi, point)), n_seeds, sum(a.shape[1] for a in arrays))


def seed_spread(values: Sequence[float]) -> dict[str, float]:
    """Min, max and standard deviation of a per-seed number (how much retraining moves it)."""
    v = np.asarray(values, dtype=np.float64)
    return {"min": float(v.min()), "max": float(v.max()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
