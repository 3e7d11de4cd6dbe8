"""What a run measures on held-out faces while it trains: the validation loss, the decoder grid (as evaluation
scores it, on the val faces) and the preview grid. Eval mode, no gradients and no random numbers: a run takes
exactly the same steps with these as without them (tested)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from faceswap.config import Params, TrainParams
from faceswap.data.dataset import to_float
from faceswap.losses import reconstruction_loss
from faceswap.metrics.checkerboard import GridReference
from faceswap.model import FaceSwapAutoencoder


def pixel_weight(params: Params) -> torch.Tensor | None:
    """The pixel term's face weighting (``train.loss.background_weight`` < 1), from the crops' own template; None
    for the plain loss."""
    bw = params.train.loss.background_weight
    if bw >= 1.0:
        return None
    from faceswap.losses import face_weight

    return face_weight(params.base.image_size, params.align.coverage, bw)


@torch.no_grad()
def validation_loss(model: FaceSwapAutoencoder, val: dict[str, torch.Tensor], t: TrainParams,
                    device: torch.device, autocast: Any, channels_last: bool,
                    weight: torch.Tensor | None = None) -> float:
    """Mean over identities of pixel + weight × LPIPS reconstructing held-out faces (no augmentation)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for ident, faces in val.items():
        for chunk in faces.split(32):
            x = to_float(chunk, device, channels_last)
            with autocast():
                pred = model(x, ident)
            loss, _ = reconstruction_loss(pred.float(), model.mask(x).float(), t.loss, with_lpips=True,
                                          weight=weight)
            total += float(loss) * len(chunk)
            count += len(chunk)
    model.train(was_training)
    return total / max(count, 1)


def hwc(x: torch.Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) → B float HWC arrays, the images the checkerboard metrics read."""
    return list(x.float().permute(0, 2, 3, 1).cpu().numpy())


def grid_references(val: dict[str, torch.Tensor], periods: tuple[int, ...]) -> dict[str, GridReference]:
    """Each identity's clean val truth as the reference of its decoder grid, its spectrum computed once per run."""
    return {i: GridReference(hwc(faces.float() / 255.0), periods) for i, faces in val.items()}


@torch.no_grad()
def validation_grid(model: FaceSwapAutoencoder, val: dict[str, torch.Tensor], refs: dict[str, GridReference],
                    device: torch.device, autocast: Any, channels_last: bool) -> dict[str, float]:
    """The decoder grid at one validation, as evaluation measures it (docs/metrics.md) but on the val faces:

    * ``grid_recon``: each identity's val reconstructions, the ``excess`` of
      :func:`~faceswap.metrics.checkerboard.decoder_grid_score` over its own val truth, mean over identities
      (evaluation's ``recon_checkerboard_excess``);
    * ``grid_swap``: each identity's val faces through every other decoder, excess over the *target's* val truth,
      the worse direction (evaluation's ``swap_checkerboard_excess``, the registry's gate);
    * ``flat_grid``: :func:`~faceswap.metrics.flatfield.flat_field_probe`'s ``flat_grid_score`` (flat skin, flat
      grey and the val faces' mean code through every decoder, the worst): a grid no face texture can hide.

    ``refs``: each identity's val truth (:func:`grid_references`, the periods are theirs)."""
    from faceswap.metrics.flatfield import flat_field_probe

    was_training = model.training
    model.eval()
    try:
        outs: dict[tuple[str, str], list[np.ndarray]] = {}
        for src, faces in val.items():
            for chunk in faces.split(32):
                x = to_float(chunk, device, channels_last)
                with autocast():
                    z = model.encode(x)
                    for dst in val:
                        outs.setdefault((src, dst), []).extend(hwc(model.decode(z, dst)))
        recon = [refs[i].excess(outs[(i, i)]) for i in val]
        swap = [refs[d].excess(outs[(s, d)]) for s in val for d in val if s != d]
        periods = next(iter(refs.values())).periods
        flat = flat_field_probe(model, val, periods).grid_score
    finally:
        model.train(was_training)
    return {"grid_recon": float(np.mean(recon)), "grid_swap": max(swap, default=float("nan")), "flat_grid": flat}


@torch.no_grad()
def training_preview(model: FaceSwapAutoencoder, faces: dict[str, torch.Tensor], device: torch.device) -> np.ndarray:
    """The seed's grid, one row per held-out pair: A | A rec | A→B | B→A | B rec | B (uint8 HWC), drawn by
    evaluation's :func:`faceswap.pictures.preview_grid` at native size."""
    from faceswap.pictures import preview_grid as draw

    (ia, fa), (ib, fb) = list(faces.items())[:2]
    was_training = model.training
    model.eval()
    xa, xb = to_float(fa, device), to_float(fb, device)
    k = min(len(xa), len(xb))
    xa, xb = xa[:k], xb[:k]
    za, zb = model.encode(xa), model.encode(xb)
    outs = {f"truth_{ia}": xa, f"recon_{ia}": model.decode(za, ia), f"swap_{ia}": model.decode(za, ib),
            f"swap_{ib}": model.decode(zb, ia), f"recon_{ib}": model.decode(zb, ib), f"truth_{ib}": xb}
    model.train(was_training)
    return draw({n: t.float() for n, t in outs.items()}, (ia, ib), k, min_side=1)
