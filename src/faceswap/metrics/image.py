"""Per-image PSNR and SSIM on (B, 3, H, W) tensors in [0, 1]."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def psnr(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """PSNR in dB per image (peak 1.0); shape (B,). Identical images give 10·log10(1/eps) = 100 dB."""
    mse = ((x.float() - y.float()) ** 2).flatten(1).mean(1)
    return 10.0 * (1.0 / mse.clamp_min(eps)).log10()


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """SSIM (Wang et al. 2004) per image, Gaussian window, per channel then averaged; shape (B,).

    Constants C1 = (0.01)², C2 = (0.03)² for a data range of 1; 'valid' filtering (no padding), as the
    reference implementation.
    """
    import torch
    import torch.nn.functional as F

    x, y = x.float(), y.float()
    c = x.shape[1]
    g = torch.exp(-((torch.arange(window, dtype=torch.float32, device=x.device) - window // 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    k = (g[:, None] * g[None, :]).expand(c, 1, window, window).contiguous()

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, k, groups=c)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)
