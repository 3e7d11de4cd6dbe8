"""Checkerboard-artifact score: how much of an image is a periodic up-sampling lattice.

A stack of ×2 up-sampling stages that treats output pixels unevenly (transposed convolution,
randomly initialised sub-pixel convolution) leaves a pattern that repeats every 2, 4, 8… pixels
(Odena, Dumoulin & Olah 2016). In the spectrum such a pattern is a set of sharp peaks at the lattice
frequencies (k/p, l/p) cycles/pixel, exactly where GAN up-sampling artifacts were found by
Zhang, Karaman & Chang (2019), Durall, Keuper & Keuper (2020) and Frank et al. (2020). Natural image
content has a smooth (roughly power-law) spectrum there, so we measure each lattice peak against the
*local* spectral background rather than against zero:

1. Per channel, subtract the mean (brightness invariance); cut the image into overlapping T×T tiles
   (Welch's method, stride T/4), Hann-window each and average their power spectra over tiles and channels.
2. At every lattice frequency f of the largest period (except DC), the peak power is the sum over the
   3×3 bins around f (the Hann window spreads a pure tone over exactly them) and the background is
   what the smooth content spectrum puts there, interpolated in log-power along rows and columns
   from the bins 2..r away (see ``_background``).
3. score = sqrt( Σ_f max(0, peak − (1 + margin)·background) / Σ_{non-DC} power ), where the margin
   (PEAK_MARGIN / sqrt(tiles averaged)) keeps the estimate's own noise from reading as a grid.

The ratio makes it invariant to contrast; the square root makes it an amplitude: roughly the RMS of the
periodic lattice component relative to the RMS of the whole image's variation (0 = none; 0.1 = a grid
a tenth as strong as the content). ``docs/metrics.md`` has the full definition and how to read values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

DEFAULT_PERIODS = (2, 4, 8)
# A lattice peak counts only above (1 + PEAK_MARGIN) × its background: the Welch estimate of a smooth
# spectrum fluctuates by tens of percent per 3×3 block on small images, and without a margin those
# positive fluctuations, summed over 63 lattice points, read as a faint grid on every clean photo.
PEAK_MARGIN = 1.0
MAX_TILES = 256


@dataclass(frozen=True)
class CheckerboardScore:
    score: float
    per_period: dict[int, float]  # contribution of the lattice points whose finest listed period is p

    def as_dict(self) -> dict:
        return {"score": self.score, "per_period": {str(p): v for p, v in self.per_period.items()}}


def _tile_size(h: int, w: int, max_period: int) -> tuple[int, int]:
    """Largest power-of-two tile ≤ 64 that fits; ring radius 3 when lattice points are ≥ 8 bins apart."""
    side = min(h, w)
    tile = 64 if side >= 64 else 32
    tile = min(tile, 1 << int(np.log2(side)))
    spacing = tile // max_period
    if spacing < 4:
        raise ValueError(
            f"image {w}×{h} is too small to score period {max_period}: need a side ≥ {4 * max_period} pixels"
        )
    return tile, 3 if spacing >= 8 else 2


def _as_channels(image: np.ndarray) -> np.ndarray:
    x = np.asarray(image)
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3 or x.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {x.shape}")
    return x[..., :3].astype(np.float64).transpose(2, 0, 1)  # (C, H, W)


def _welch_power(channels: np.ndarray, tile: int) -> tuple[np.ndarray, int]:
    """Mean power spectrum over Hann-windowed tiles (stride T/4, coarser on large images) and
    channels: (tile, tile)."""
    _, h, w = channels.shape
    channels = channels - channels.mean(axis=(1, 2), keepdims=True)
    step = tile // 4
    while ((h - tile) // step + 1) * ((w - tile) // step + 1) > MAX_TILES and step < tile:
        step *= 2  # large images have tiles to spare: keep the cost bounded
    ys = range(0, h - tile + 1, step)
    xs = range(0, w - tile + 1, step)
    win = np.outer(np.hanning(tile), np.hanning(tile))
    tiles = np.stack([channels[:, y : y + tile, x : x + tile] for y in ys for x in xs], axis=1)  # (C, n, T, T)
    return (np.abs(np.fft.fft2(tiles * win)) ** 2).mean(axis=(0, 1)), tiles.shape[1]


@cache
def _line_fit(radius: int) -> np.ndarray:
    """Weights mapping log-powers at offsets ±2..±radius on a line to fitted values at −1, 0, +1
    (a straight line through ±2 for small tiles, a parabola through ±2, ±3 otherwise)."""
    t = np.array([d for d in range(-radius, radius + 1) if abs(d) >= 2], float)
    degree = 1 if radius == 2 else 2
    design = np.vander(t, degree + 1, increasing=True)
    at = np.vander(np.array([-1.0, 0.0, 1.0]), degree + 1, increasing=True)
    return at @ np.linalg.pinv(design)  # (3, n)


def _background(log_p: np.ndarray, fy: int, fx: int, radius: int) -> float:
    """What the smooth content spectrum puts into the 3×3 bins around (fy, fx).

    Each row of the 3×3 block is interpolated (in log-power) from the same row's bins beyond the peak,
    left and right, and each column from the same column's bins above and below; the larger estimate
    is kept per bin. Lines follow the axis-aligned ridges that natural images put into the spectrum,
    which a 2-D surface fit cannot, and taking the larger keeps content from reading as a peak.
    """
    tile = log_p.shape[0]
    w = _line_fit(radius)
    far = np.array([d for d in range(-radius, radius + 1) if abs(d) >= 2])
    near = np.array([-1, 0, 1])
    rows = log_p[np.ix_((fy + near) % tile, (fx + far) % tile)] @ w.T  # (3, 3): interpolated along x
    cols = w @ log_p[np.ix_((fy + far) % tile, (fx + near) % tile)]  # (3, 3): interpolated along y
    return float(np.exp(np.maximum(rows, cols)).sum())


def _lattice_excess(
    power: np.ndarray, periods: Sequence[int], ring_radius: int, margin: float
) -> dict[int, float]:
    tile = power.shape[0]
    pmax = max(periods)
    spacing = tile // pmax
    log_p = np.log(power + power.mean() * 1e-12)
    near = np.array([-1, 0, 1])
    out = {p: 0.0 for p in periods}
    for k in range(pmax):
        for m in range(pmax):
            if k == 0 and m == 0:
                continue
            # the finest listed period whose lattice holds (k, m)/pmax
            period = next(
                (p for p in periods if k % (pmax // p) == 0 and m % (pmax // p) == 0), pmax
            )
            fy, fx = k * spacing, m * spacing
            peak = power[np.ix_((fy + near) % tile, (fx + near) % tile)].sum()
            out[period] += max(0.0, peak - (1.0 + margin) * _background(log_p, fy, fx, ring_radius))
    return out


def _score_power(power: np.ndarray, n_tiles: int, periods: tuple[int, ...], radius: int) -> CheckerboardScore:
    dc = power[np.ix_([-1, 0, 1], [-1, 0, 1])].sum()
    total = power.sum() - dc
    if total <= 1e-12 * max(power.max(), 1e-300):  # a flat image has no lattice
        return CheckerboardScore(0.0, {p: 0.0 for p in periods})
    excess = _lattice_excess(power, periods, radius, PEAK_MARGIN / np.sqrt(n_tiles))
    score = float(np.sqrt(sum(excess.values()) / total))
    return CheckerboardScore(score, {p: float(np.sqrt(e / total)) for p, e in excess.items()})


def checkerboard_score(image: np.ndarray, periods: Sequence[int] = DEFAULT_PERIODS) -> CheckerboardScore:
    """Score one image ((H, W) or (H, W, C), any dtype/range). See the module docstring."""
    return checkerboard_score_set([image], periods)


def checkerboard_score_set(images: Sequence[np.ndarray], periods: Sequence[int] = DEFAULT_PERIODS) -> CheckerboardScore:
    """One score for a set of same-size images, from their spectra averaged together.

    A model's lattice is the same on every output, while content differs; averaging spectra over a
    set cuts the estimate's noise by sqrt(set size), so faint grids show up that no single 64×64
    image can reveal. Evaluation uses this on the held-out faces.
    """
    if len(images) == 0:
        raise ValueError("checkerboard_score_set needs at least one image")
    periods = tuple(sorted(set(periods)))
    chans = [_as_channels(im) for im in images]
    shape = chans[0].shape
    if any(c.shape != shape for c in chans):
        raise ValueError("checkerboard_score_set needs images of one size")
    tile, radius = _tile_size(shape[1], shape[2], max(periods))
    powers = [_welch_power(c, tile) for c in chans]
    power = np.mean([p for p, _ in powers], axis=0)
    return _score_power(power, sum(n for _, n in powers), periods, radius)


def checkerboard_report(
    image: np.ndarray, reference: np.ndarray | None = None, periods: Sequence[int] = DEFAULT_PERIODS
) -> dict:
    """Score an image, and with a reference (ground truth, or a swap's source) also report:

    * ``excess`` = score(image) − score(reference): the lattice the model added beyond what the
      reference already has (JPEG blocks, sensor patterns);
    * ``error_score`` (same shape required): the score of ``image − reference``, i.e. how much of the
      reconstruction *error* is lattice-periodic. It ignores content entirely, which is why it separates
      decoders that the output-only score cannot; swaps have no aligned target, so use ``excess`` there.
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
