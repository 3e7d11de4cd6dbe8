"""Checkerboard-artifact score: how strong a periodic up-sampling lattice is, relative to the image.

A stack of ×2 up-sampling stages that treats output pixels unevenly (transposed convolution,
randomly initialised sub-pixel convolution) adds a pattern that repeats every 2, 4, 8… pixels over the
whole output (Odena, Dumoulin & Olah 2016). Over an image whose sides are multiples of the period such a
pattern lives on *single* frequency bins, the lattice (k/p, l/p) cycles/pixel, exactly where GAN
up-sampling artifacts were found by Zhang, Karaman & Chang (2019), Durall, Keuper & Keuper (2020) and
Frank et al. (2020). Face content is not periodic: its spectrum near any lattice bin is as strong as at
the bins around it. So each lattice bin is measured against its own neighbourhood:

1. Per channel, crop to a multiple of the largest period, take the periodic component (Moisan 2011:
   removes the edge discontinuity whose cross-shaped leakage would swamp the axes), and sum the
   unwindowed power spectra of the channels: S. Images larger than ``MAX_TILE`` are cut into tiles.
2. At every lattice bin f (except DC): background bg(f) = the largest of the mean of S over the 24 bins
   around f (5×5 block), over the 4 bins beside it in its row and over the 4 in its column (lines follow
   the axis-aligned ridges faces put into the spectrum); excess(f) = max(0, S(f) − (1 + m)·bg(f)) with
   m = ``PEAK_MARGIN`` = 3: a lattice bin counts only where it is more than 4× its surroundings.
3. score = sqrt( Σ_f excess(f) / variance of the image ), capped at 1.

The square root makes it an amplitude: approximately the RMS of the lattice component relative to the RMS
variation of the whole image (a grid of 5 % of the content's RMS scores ≈ 0.05). Sets of images (all the
outputs of one decoder) average their spectra and variances first: the decoder's lattice is the same in
every output, the content's fluctuations are not. ``docs/metrics.md`` has the measured figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

DEFAULT_PERIODS = (2, 4, 8)
# Face crops put bins 3-4x above their neighbourhood at lattice frequencies by chance (an aligned face's
# features are spaced ~8 px apart at 64²); measured on the demo's held-out crops, a margin of 3 leaves
# them at ≤ 0.016 per image and 0 per set, while a planted 5 % grid of period 2 or 4 still counts fully.
PEAK_MARGIN = 3.0
MAX_TILE = 512  # larger images are scored on non-overlapping tiles of at most this side


@dataclass(frozen=True)
class CheckerboardScore:
    score: float
    per_period: dict[int, float]  # contribution of the lattice bins whose finest listed period is p

    def as_dict(self) -> dict:
        return {"score": self.score, "per_period": {str(p): v for p, v in self.per_period.items()}}


def _check_periods(periods: Sequence[int]) -> tuple[int, ...]:
    ps = tuple(sorted({int(p) for p in periods}))
    if not ps or ps[0] < 2 or any(ps[-1] % p for p in ps):
        raise ValueError(f"periods must be integers ≥ 2 that divide the largest one, got {list(periods)}")
    return ps


def _as_channels(image: np.ndarray) -> np.ndarray:
    x = np.asarray(image)
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3 or x.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {x.shape}")
    return x[..., :3].astype(np.float64).transpose(2, 0, 1)  # (C, H, W)


def _periodic_component(c: np.ndarray) -> np.ndarray:
    """Moisan's periodic + smooth decomposition, per channel: the periodic part (C, H, W), mean 0."""
    _, h, w = c.shape
    v = np.zeros_like(c)
    v[:, 0, :] += c[:, -1, :] - c[:, 0, :]
    v[:, -1, :] += c[:, 0, :] - c[:, -1, :]
    v[:, :, 0] += c[:, :, -1] - c[:, :, 0]
    v[:, :, -1] += c[:, :, 0] - c[:, :, -1]
    q, r = np.arange(h)[:, None], np.arange(w)[None, :]
    den = 2 * np.cos(2 * np.pi * q / h) + 2 * np.cos(2 * np.pi * r / w) - 4
    den[0, 0] = 1.0
    s = np.fft.fft2(v) / den
    s[:, 0, 0] = 0.0
    p = c - np.real(np.fft.ifft2(s))
    return p - p.mean(axis=(1, 2), keepdims=True)


def _spectrum(image: np.ndarray, pmax: int) -> tuple[np.ndarray, float]:
    """Power spectrum S (tile_h, tile_w), normalised so that it sums to the mean square, and the
    image variance (summed over channels), both averaged over tiles."""
    c = _as_channels(image)
    _, h, w = c.shape
    step = MAX_TILE // pmax * pmax
    th, tw = min(h - h % pmax, step), min(w - w % pmax, step)
    if min(th, tw) < 4 * pmax:
        raise ValueError(f"image {w}×{h} is too small to score period {pmax}: need a side ≥ {4 * pmax} pixels")
    powers, variances = [], []
    for y in range(0, h - th + 1, th):
        for x in range(0, w - tw + 1, tw):
            tile = c[:, y : y + th, x : x + tw]
            f = np.fft.fft2(_periodic_component(tile)) / (th * tw)
            powers.append((np.abs(f) ** 2).sum(axis=0))
            variances.append(float(tile.var(axis=(1, 2)).sum()))
    return np.mean(powers, axis=0), float(np.mean(variances))


@cache
def _lattice_index(h: int, w: int, periods: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """For every non-DC lattice bin: its position, its period, and the flat indices of its 5×5 ring,
    row line (±1, ±2) and column line (±1, ±2)."""
    pmax = periods[-1]
    pts, per = [], []
    for k in range(pmax):
        for m in range(pmax):
            if k or m:
                pts.append((k * h // pmax, m * w // pmax))
                # the finest listed period whose lattice holds (k, m)/pmax
                per.append(next(p for p in periods if k % (pmax // p) == 0 and m % (pmax // p) == 0))
    fy, fx = np.array(pts).T
    d = np.array([-2, -1, 1, 2])
    ring = [(a, b) for a in range(-2, 3) for b in range(-2, 3) if a or b]
    ry, rx = np.array(ring).T

    def flat(dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
        return ((fy[:, None] + dy[None]) % h) * w + (fx[:, None] + dx[None]) % w

    zero = np.zeros_like(d)
    return fy * w + fx, np.array(per), flat(ry, rx), flat(zero, d), flat(d, zero)


def peaks(power: np.ndarray, periods: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Power at each lattice bin, its background bg(f), and each bin's period."""
    centre, per, ring, row, col = _lattice_index(*power.shape, periods)
    s = power.ravel()
    bg = np.maximum(np.maximum(s[ring].mean(axis=1), s[row].mean(axis=1)), s[col].mean(axis=1))
    return s[centre], bg, per


def _score_power(
    power: np.ndarray, variance: float, periods: tuple[int, ...], floor: np.ndarray | None = None
) -> CheckerboardScore:
    """The score from a spectrum; ``floor`` (per lattice bin, ≥ 1) raises each bin's bar to floor × (1 + m) × bg."""
    if not variance > 0.0:  # a flat image has no lattice
        return CheckerboardScore(0.0, {p: 0.0 for p in periods})
    peak, bg, per = peaks(power, periods)
    bar = (1.0 + PEAK_MARGIN) * bg * (1.0 if floor is None else floor)
    excess = np.maximum(0.0, peak - bar)
    by_period = {p: float(excess[per == p].sum()) for p in periods}
    score = float(np.sqrt(min(1.0, excess.sum() / variance)))
    return CheckerboardScore(score, {p: float(np.sqrt(min(1.0, e / variance))) for p, e in by_period.items()})


def _set_spectrum(images: Sequence[np.ndarray], periods: tuple[int, ...]) -> tuple[np.ndarray, float]:
    if len(images) == 0:
        raise ValueError("a checkerboard set score needs at least one image")
    shape = np.shape(images[0])
    if any(np.shape(im) != shape for im in images):
        raise ValueError("a checkerboard set score needs images of one size")
    spectra = [_spectrum(im, periods[-1]) for im in images]
    return np.mean([p for p, _ in spectra], axis=0), float(np.mean([v for _, v in spectra]))


def checkerboard_score(image: np.ndarray, periods: Sequence[int] = DEFAULT_PERIODS) -> CheckerboardScore:
    """Score one image ((H, W) or (H, W, C), any dtype/range). See the module docstring."""
    return checkerboard_score_set([image], periods)


def checkerboard_score_set(images: Sequence[np.ndarray], periods: Sequence[int] = DEFAULT_PERIODS) -> CheckerboardScore:
    """One score for a set of same-size images (one decoder's outputs), from their mean spectrum.

    A decoder's lattice sits on the same bins in every output while the content's chance peaks move
    from face to face, so the mean spectrum shows the lattice and smooths the chance peaks away.
    """
    periods = _check_periods(periods)
    return _score_power(*_set_spectrum(images, periods), periods)


def decoder_grid_score(
    outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray], periods: Sequence[int] = DEFAULT_PERIODS
) -> dict:
    """The lattice a decoder adds to what it was trained to draw: set scores of its outputs and of a reference
    set, and ``excess``, the outputs' score counting a lattice bin only where it also stands (1 + m)× above the
    reference's own peak there (its peak/background ratio, when > 1).

    The reference must be clean real images of what the decoder draws (for swaps into identity b: b's held-out
    ground truth; real face crops score ≈ 0). A face's own layout can put a bin 3-4× above its surroundings
    (identity a's crops at 1/8 cycle/pixel vertically), and an under-trained decoder that draws every output
    alike sharpens exactly that peak; ``excess`` does not charge it, a lattice the data lacks counts in full.
    """
    ref = GridReference(reference, periods)
    p_out, v_out = _set_spectrum(outputs, ref.periods)
    out = _score_power(p_out, v_out, ref.periods)
    excess = _score_power(p_out, v_out, ref.periods, ref.floor)
    return {"score": out.score, "reference_score": ref.score, "excess": excess.score,
            "per_period": excess.as_dict()["per_period"]}


class GridReference:
    """A reference set of :func:`decoder_grid_score` with its spectrum computed once, for scoring many output sets
    against the same fixed truth (training scores its val faces' decoder grid at every validation):
    ``excess(outputs)`` equals ``decoder_grid_score(outputs, reference, periods)["excess"]``."""

    def __init__(self, reference: Sequence[np.ndarray], periods: Sequence[int] = DEFAULT_PERIODS) -> None:
        self.periods = _check_periods(periods)
        power, variance = _set_spectrum(reference, self.periods)
        peak, bg, _ = peaks(power, self.periods)
        self.floor = np.maximum(1.0, peak / np.maximum(bg, np.finfo(float).tiny))
        self.score = _score_power(power, variance, self.periods).score  # the reference's own set score

    def excess(self, outputs: Sequence[np.ndarray]) -> float:
        """The outputs' set score counting only the lattice bins that stand above the reference's own peaks."""
        return _score_power(*_set_spectrum(outputs, self.periods), self.periods, self.floor).score


def checkerboard_report(
    image: np.ndarray, reference: np.ndarray | None = None, periods: Sequence[int] = DEFAULT_PERIODS
) -> dict:
    """Score an image, and with a reference (ground truth, or a clean image of the target) also report:

    * ``excess`` = score(image) − score(reference): the lattice beyond what the reference already has;
    * ``error_score`` (same shape required): the score of ``image − reference``, i.e. how much of the
      reconstruction *error* is lattice-periodic; it ignores the content shared by both.
    """
    s = checkerboard_score(image, periods)
    out = {"score": s.score, "per_period": s.as_dict()["per_period"]}
    if reference is not None:
        r = checkerboard_score(reference, periods)
        out.update(reference_score=r.score, excess=s.score - r.score)
        if np.shape(reference) == np.shape(image):
            err = np.asarray(image, np.float64) - np.asarray(reference, np.float64)
            out["error_score"] = checkerboard_score(err, periods).score
    return out


# --- planted grids: what the score is validated against (tests, bench/checkerboard.py) ---


def lattice(shape: tuple[int, ...], period: int, kind: str = "checker") -> np.ndarray:
    """A zero-mean, unit-RMS lattice: a checkerboard, or a "window screen" of 1-px lines every ``period``."""
    h, w = shape[:2]
    yy, xx = np.mgrid[:h, :w]
    if kind == "checker":
        pat = np.where((yy % period < period // 2) ^ (xx % period < period // 2), 1.0, -1.0)
    elif kind == "screen":
        pat = ((yy % period == 0) | (xx % period == 0)).astype(float)
    else:
        raise ValueError(f"kind must be 'checker' or 'screen', got {kind!r}")
    pat = (pat - pat.mean()) / pat.std()
    return pat[..., None] if len(shape) == 3 else pat


def plant_lattice(img: np.ndarray, rel: float, period: int, kind: str = "checker") -> np.ndarray:
    """``img`` plus a lattice whose RMS is ``rel`` × the image's RMS variation (as a decoder would add it)."""
    x = np.asarray(img, np.float64)
    return x + rel * np.sqrt(((x - x.mean(axis=(0, 1))) ** 2).mean()) * lattice(x.shape, period, kind)

