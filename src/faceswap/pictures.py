"""The pictures people look at (``reports/<variant>/``, training previews): one implementation each.

The preview grid (the seed's A | A rec | A→B | B→A | B rec | B), the zoom on the flattest region where a
decoder grid shows (the "window screen"), and the mean error spectrum where a grid is a lattice of peaks.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def evenly_spaced(n: int, k: int | None) -> np.ndarray:
    """``k`` indices spread evenly over ``range(n)`` (all of them when k is None or ≥ n)."""
    if k is None or k >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(int))


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float [0, 1] → (B, H, W, 3) uint8."""
    return (x.clamp(0, 1) * 255.0).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def _upscale(im: np.ndarray, k: int) -> np.ndarray:
    return np.repeat(np.repeat(im, k, axis=0), k, axis=1) if k > 1 else im


def preview_grid(outs: dict[str, torch.Tensor], identities: tuple[str, str], rows: int, gutter: int = 2,
                 min_side: int = 128) -> np.ndarray:
    """The series' grid, one row per pair of fixed held-out faces: A | A rec | A→B | B→A | B rec | B.

    Tiles are magnified (nearest) to about ``min_side`` pixels; training's previews pass 1 (native size).
    """
    a, b = identities
    cols = [f"truth_{a}", f"recon_{a}", f"swap_{a}", f"swap_{b}", f"recon_{b}", f"truth_{b}"]
    n = min(rows, len(outs[f"truth_{a}"]), len(outs[f"truth_{b}"]))
    ia = evenly_spaced(len(outs[f"truth_{a}"]), n)
    ib = evenly_spaced(len(outs[f"truth_{b}"]), n)
    tiles = {c: to_uint8(outs[c][ia if c.endswith(f"_{a}") else ib]) for c in cols}
    side = tiles[cols[0]].shape[1]
    k = max(1, min_side // side)
    s = side * k
    grid = np.full((n * (s + gutter) + gutter, 6 * (s + gutter) + gutter, 3), 255, np.uint8)
    for r in range(n):
        for c, name in enumerate(cols):
            y, x = gutter + r * (s + gutter), gutter + c * (s + gutter)
            grid[y : y + s, x : x + s] = _upscale(tiles[name][r], k)
    return grid


def flattest_window(image: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left (y, x) of the ``size``² window with the least colour variance in the crop's central part."""
    import cv2

    im = image.astype(np.float32)
    mu = cv2.boxFilter(im, -1, (size, size), normalize=True, borderType=cv2.BORDER_REPLICATE)
    mu2 = cv2.boxFilter(im * im, -1, (size, size), normalize=True, borderType=cv2.BORDER_REPLICATE)
    var = (mu2 - mu * mu).sum(axis=2)  # colour variance: skin next to a sky of equal grey is not flat
    h = image.shape[0]
    half = size // 2
    lo, hi = max(half, h // 5), min(h - size + half, h - h // 5)  # centres inside the face, away from borders
    sub = var[lo : hi + 1, lo : hi + 1]
    cy, cx = np.unravel_index(int(np.argmin(sub)), sub.shape)
    return int(cy + lo - half), int(cx + lo - half)


def zoom_panel(
    outs: dict[str, torch.Tensor], identities: tuple[str, str], size: int, factor: int, gutter: int = 4
) -> np.ndarray:
    """The flattest region of the first held-out face of each identity, magnified: truth | recon | swap."""
    rows = []
    for ident in identities:
        truth = to_uint8(outs[f"truth_{ident}"][:1])[0]
        side = truth.shape[0]
        sz = min(size, side // 2)
        y, x = flattest_window(truth, sz)
        tiles = [to_uint8(outs[f"{k}_{ident}"][:1])[0][y : y + sz, x : x + sz] for k in ("truth", "recon", "swap")]
        rows.append([_upscale(t, factor) for t in tiles])
    s = rows[0][0].shape[0]
    panel = np.full((len(rows) * (s + gutter) + gutter, 3 * (s + gutter) + gutter, 3), 255, np.uint8)
    for r, tiles in enumerate(rows):
        for c, t in enumerate(tiles):
            yy, xx = gutter + r * (s + gutter), gutter + c * (s + gutter)
            panel[yy : yy + s, xx : xx + s] = t
    return panel


def mean_error_spectrum(truth: torch.Tensor, recon: torch.Tensor) -> np.ndarray:
    """log10 of the mean power spectrum (DC centred) of the grey, Hann-windowed reconstruction errors."""
    err = (recon.float() - truth.float()).mean(dim=1).numpy().astype(np.float64)  # (N, H, W)
    err -= err.mean(axis=(1, 2), keepdims=True)
    h, w = err.shape[1:]
    win = np.outer(np.hanning(h), np.hanning(w))
    power = (np.abs(np.fft.fft2(err * win)) ** 2).mean(axis=0)
    return np.log10(np.fft.fftshift(power) + 1e-12)


def save_spectrum_figure(path: Path, spectra: dict[str, np.ndarray], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(spectra), figsize=(4 * len(spectra), 4), dpi=100, squeeze=False)
    for ax, (name, spec) in zip(axes[0], spectra.items(), strict=True):
        lo = np.percentile(spec, 5)
        im = ax.imshow(spec, cmap="magma", vmin=lo, vmax=spec.max(), extent=(-0.5, 0.5, 0.5, -0.5))
        ax.set_title(f"{name}: log10 power of error")
        ax.set_xlabel("cycles / pixel")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
