"""Flat-field probe: the grid a decoder draws where there is no face texture to hide it (issue #22).

A face's own detail can mask or mimic a faint lattice; a flat image cannot. Sugawara et al. ("Checkerboard
artifacts free convolutional neural networks", 2019) characterise an up-sampling layer by its response to a
constant input, which must stay constant; LTX-2 #202 checks a video VAE's decoder the same way, with constant
colours. Here each identity's decoder decodes

* ``skin``: the code of a flat image of mean skin colour (``DEFAULT_SKIN`` = (0.78, 0.60, 0.52), or pass
  :func:`mean_colour` of a face set);
* ``grey``: the code of a flat mid-grey image (0.5);
* ``mean_code`` (when faces are given): the mean latent code of those faces, the decoder's "average face".

and each output is measured three ways (all on the output alone; the input is flat, so no reference is needed):

* ``grid_score``: :func:`faceswap.metrics.checkerboard.checkerboard_score` at the configured periods, the
  validated lattice score; an *amplitude relative to the output's own variation* (≈ RMS of the lattice over
  the RMS of everything that is not the mean);
* ``lattice_share``: the energy the score counts (lattice bins above (1 + m) × their neighbourhood, not capped)
  over the output's **total** energy, mean included: the grid's energy as a share of the whole image's. Its
  square root is the grid's RMS relative to the image's RMS brightness, so it says whether the grid the score
  finds is big enough to see (a nearly flat output with a faint grid has a score near 1 and a share near 0);
* ``offdc_share``: the energy of everything except the mean over the total energy: how far from flat the output
  is at all (a decoder that paints its average face over a flat code has a large one, grid or not).

Why the headline second number is the lattice share and not the plain off-DC share: measured on untrained
models (``tests/test_flatfield.py``) the off-DC energy of a flat field's decode is mostly smooth shading from the
zero padding and the 3×3 code's edges, in every variant, and does not tell the variants apart; the raw energy at
the lattice bins does not either, because that smooth content leaks onto the coarse (period-8) bins. Only the
energy *above the neighbourhood*, the score's own numerator, isolates the grid, and over the total energy it is
in absolute units.

The probe runs the model in eval mode (BatchNorm on its running statistics, as at inference; a fresh model's
are 0 and 1, so its BatchNorm is ≈ the identity), in fp32 without autocast (a near-flat output must not be read
through bf16 rounding), under ``torch.no_grad``, and draws no random numbers: the same model gives the same
result, and a training run that calls it computes exactly what it would without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from faceswap.metrics.checkerboard import (
    DEFAULT_PERIODS,
    PEAK_MARGIN,
    _check_periods,
    _spectrum,
    checkerboard_score,
    peaks,
)

DEFAULT_SKIN = (0.78, 0.60, 0.52)  # RGB in [0, 1]: a mid skin tone
GREY = (0.5, 0.5, 0.5)
INPUTS = ("skin", "grey", "mean_code")  # in this order; mean_code only when faces are given
MEASURES = ("grid_score", "lattice_share", "offdc_share")
Faces = torch.Tensor | Mapping[str, torch.Tensor] | Sequence[torch.Tensor]  # (N, 3, H, W): one, a list, per identity


@dataclass(frozen=True)
class FlatOutput:
    """One decoded flat field: which input, through which identity's decoder, and its three measures."""

    input: str  # skin | grey | mean_code
    identity: str
    grid_score: float
    lattice_share: float
    offdc_share: float


@dataclass(frozen=True)
class FlatFieldResult:
    """Every output of the probe, and ``metrics``: flat names → floats.

    ``flat_<measure>`` is the worst (largest) over identities and inputs, ``flat_<measure>_<input>`` the worst
    over identities for one input, ``flat_<measure>_<input>_<identity>`` one output; ``<measure>`` is
    ``grid_score``, ``lattice_share`` or ``offdc_share``. The headline is ``flat_grid_score``.
    """

    outputs: tuple[FlatOutput, ...]
    skin: tuple[float, float, float]
    periods: tuple[int, ...]
    metrics: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        m: dict[str, float] = {}
        inputs = [i for i in INPUTS if any(o.input == i for o in self.outputs)]
        for measure in MEASURES:
            m[f"flat_{measure}"] = max(getattr(o, measure) for o in self.outputs)
            for inp in inputs:
                outs = [o for o in self.outputs if o.input == inp]
                m[f"flat_{measure}_{inp}"] = max(getattr(o, measure) for o in outs)
                m.update({f"flat_{measure}_{inp}_{o.identity}": getattr(o, measure) for o in outs})
        object.__setattr__(self, "metrics", m)

    @property
    def grid_score(self) -> float:
        return self.metrics["flat_grid_score"]

    def as_dict(self) -> dict:
        return {"skin": list(self.skin), "periods": list(self.periods), "metrics": dict(self.metrics),
                "outputs": [o.__dict__.copy() for o in self.outputs]}


def _pool(faces: Faces) -> torch.Tensor:
    """One (N, 3, H, W) float tensor in [0, 1] from a tensor, a list of them or {identity: tensor} (uint8 → /255)."""
    parts = list(faces.values()) if isinstance(faces, Mapping) else [faces] if torch.is_tensor(faces) else list(faces)
    if not parts:
        raise ValueError("no faces given")
    out = [p.float().div(255.0) if p.dtype == torch.uint8 else p.float() for p in parts]
    x = torch.cat(out)
    if x.ndim != 4 or x.shape[1] != 3 or len(x) == 0:
        raise ValueError(f"faces must be (N, 3, H, W), got {tuple(x.shape)}")
    return x


def mean_colour(faces: Faces) -> tuple[float, float, float]:
    """The mean RGB (in [0, 1]) of a face set, for ``skin=``: whole crops, so hair and background count too."""
    r, g, b = (float(v) for v in _pool(faces).double().mean(dim=(0, 2, 3)))
    return r, g, b


def flat_measures(image: np.ndarray, periods: Sequence[int] = DEFAULT_PERIODS) -> tuple[float, float, float]:
    """``(grid_score, lattice_share, offdc_share)`` of one (H, W, C) image (module docstring)."""
    ps = _check_periods(periods)
    x = np.asarray(image, np.float64)
    total = float((x**2).mean(axis=(0, 1)).sum())  # mean square summed over channels: the energy, DC included
    variance = float(x.var(axis=(0, 1)).sum())
    score = checkerboard_score(x, ps).score
    if not total > 0.0:
        return score, 0.0, 0.0
    power, _ = _spectrum(x, ps[-1])
    peak, bg, _ = peaks(power, ps)
    excess = float(np.maximum(0.0, peak - (1.0 + PEAK_MARGIN) * bg).sum())
    return score, excess / total, variance / total


@torch.no_grad()
def flat_field_probe(
    model: torch.nn.Module,
    faces: Faces | None = None,
    periods: Sequence[int] = DEFAULT_PERIODS,
    *,
    skin: tuple[float, float, float] = DEFAULT_SKIN,
    identities: Sequence[str] | None = None,
    batch_size: int = 32,
) -> FlatFieldResult:
    """Decode flat fields (and, given ``faces``, their mean code) through every decoder of a
    :class:`~faceswap.model.FaceSwapAutoencoder` and measure each output (module docstring).

    ``faces``: (N, 3, H, W) uint8 or float in [0, 1], a list of them or {identity: tensor}, pooled over identities
    (the encoder is shared); ``identities``: the decoders to probe (default all). The model's mode is restored.
    """
    ps = _check_periods(periods)
    device = next(model.parameters()).device
    n = model.config.image_size
    idents = tuple(model.decoders) if identities is None else tuple(identities)
    was_training = model.training
    model.eval()
    try:
        codes: dict[str, torch.Tensor] = {}
        for name, rgb in (("skin", skin), ("grey", GREY)):
            flat = torch.tensor(rgb, dtype=torch.float32, device=device).view(1, 3, 1, 1).expand(1, 3, n, n)
            codes[name] = model.encode(flat.contiguous()).float()
        if faces is not None:
            x = _pool(faces)
            total = None
            for chunk in x.split(batch_size):
                z = model.encode(chunk.to(device)).double().sum(dim=0, keepdim=True)
                total = z if total is None else total + z
            codes["mean_code"] = (total / len(x)).float()
        outputs = []
        for name, z in codes.items():
            for ident in idents:
                y = model.decode(z, ident).float()[0].permute(1, 2, 0).cpu().numpy()
                outputs.append(FlatOutput(name, ident, *flat_measures(y, ps)))
    finally:
        model.train(was_training)
    return FlatFieldResult(tuple(outputs), tuple(float(v) for v in skin), ps)
