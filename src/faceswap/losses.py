"""Training losses: a pixel term (L1, MSE or SSIM) plus weight × LPIPS with real weights.

The LPIPS loss network is a parameter: ``vgg`` is the usual choice, and evaluation reports LPIPS-alex,
so a model trained against ``vgg`` is not graded by the network it was optimised for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from faceswap.config import LossParams


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004) with a uniform window, for (B, 3, H, W) images in [0, 1]."""
    c1, c2 = 0.01**2, 0.03**2
    pad = window // 2
    mu_x = F.avg_pool2d(x, window, 1, pad, count_include_pad=False)
    mu_y = F.avg_pool2d(y, window, 1, pad, count_include_pad=False)
    sxx = F.avg_pool2d(x * x, window, 1, pad, count_include_pad=False) - mu_x**2
    syy = F.avg_pool2d(y * y, window, 1, pad, count_include_pad=False) - mu_y**2
    sxy = F.avg_pool2d(x * y, window, 1, pad, count_include_pad=False) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.mean()


def pixel_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    pred, target = pred.float(), target.float()
    if kind == "l1":
        return (pred - target).abs().mean()
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "ssim":
        return 1.0 - ssim(pred, target)
    raise ValueError(f"unknown pixel loss {kind!r}; valid: l1, mse, ssim")


def uses_lpips(cfg: LossParams, step: int) -> bool:
    return cfg.lpips_net != "none" and cfg.lpips_weight > 0 and step % cfg.lpips_every == 0


def reconstruction_loss(
    pred: torch.Tensor, target: torch.Tensor, cfg: LossParams, with_lpips: bool
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Pixel + weight × LPIPS (on the first ``lpips_images`` faces) → (loss, {pixel, lpips})."""
    parts = {"pixel": pixel_loss(pred, target, cfg.pixel)}
    loss = parts["pixel"]
    if with_lpips and cfg.lpips_net != "none" and cfg.lpips_weight > 0:
        from faceswap.metrics.lpips import lpips_tensor

        k = cfg.lpips_images or pred.shape[0]
        parts["lpips"] = lpips_tensor(pred[:k].float(), target[:k].float(), net=cfg.lpips_net).mean()
        loss = loss + cfg.lpips_weight * parts["lpips"]
    return loss, parts
