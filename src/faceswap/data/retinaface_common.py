"""What both RetinaFace back-ends share before and after their network: one resize, one set of prior boxes, one
decoding of boxes and landmarks.

The mobilenet-0.25 network (:mod:`faceswap.data.retinaface_mnet`) and the ResNet-50 one of retinaface-pytorch were
trained with biubug6's anchors (the same min sizes, steps and variances), so one prior-box grid and one decode
serve both; :class:`faceswap.data.detect.RetinaFaceDetector` and :class:`~faceswap.data.detect.RetinaFaceMnetDetector`
differ only in how a frame becomes the network's input and how its scores come out.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# biubug6 cfg_mnet / cfg_re50: anchors per level, strides, variances.
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCES = (0.1, 0.2)


def downscale(x: torch.Tensor, max_size: int) -> tuple[torch.Tensor, float]:
    """(B, 3, H, W) → the batch shrunk (antialiased bilinear) so its longer side is at most ``max_size``, and the
    scale applied (1.0: left as it is)."""
    import torch.nn.functional as F

    scale = min(1.0, max_size / max(x.shape[2:]))
    if scale < 1.0:
        x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False, antialias=True)
    return x, scale


def prior_boxes(h: int, w: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """(N, 4) cx, cy, w, h in [0, 1] units: biubug6's PriorBox (row-major grid, anchors per cell)."""
    import torch

    out = []
    for (s0, s1), step in zip(MIN_SIZES, STEPS, strict=True):
        fh, fw = math.ceil(h / step), math.ceil(w / step)
        ys, xs = torch.meshgrid(torch.arange(fh), torch.arange(fw), indexing="ij")
        cx = ((xs.flatten() + 0.5) * step / w).repeat_interleave(2)
        cy = ((ys.flatten() + 0.5) * step / h).repeat_interleave(2)
        sw = torch.tensor([s0 / w, s1 / w]).repeat(fh * fw)
        sh = torch.tensor([s0 / h, s1 / h]).repeat(fh * fw)
        out.append(torch.stack([cx, cy, sw, sh], 1))
    return torch.cat(out).to(device)


def decode(loc: torch.Tensor, land: torch.Tensor, priors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """biubug6's decode / decode_landm: boxes (…, 4) x0, y0, x1, y1 and landmarks (…, 5, 2), [0, 1] units."""
    import torch

    v0, v1 = VARIANCES
    c = priors[..., :2] + loc[..., :2] * v0 * priors[..., 2:]
    wh = priors[..., 2:] * torch.exp(loc[..., 2:] * v1)
    boxes = torch.cat([c - wh / 2, c + wh / 2], -1)
    lm = priors[..., None, :2] + land.reshape(*land.shape[:-1], 5, 2) * v0 * priors[..., None, 2:]
    return boxes, lm
