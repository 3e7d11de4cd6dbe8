"""Training losses: a pixel term (L1, MSE or SSIM) plus weight × LPIPS with real weights.

The LPIPS loss network is a parameter: ``vgg`` is the usual choice, and evaluation reports LPIPS-alex,
so a model trained against ``vgg`` is not graded by the network it was optimised for.

The training term is :class:`LpipsLoss`: the same distance as the metric (``lpips.LPIPS``, spatially averaged,
real weights from :func:`faceswap.metrics.lpips.load_lpips`), arranged for the training step on a GPU.
"""

from __future__ import annotations

import copy
import threading

import torch
import torch.nn.functional as F
from torch import nn

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


def face_weight(size: int, coverage: float, background: float) -> torch.Tensor:
    """(1, 1, size, size) weights for the pixel term: 1 on the face, ``background`` outside it, feathered (the
    template's face ellipse, :func:`faceswap.data.template.face_ellipse`). Peers' "masked training" (DeepFaceLab)
    with a fixed mask."""
    from faceswap.data.template import face_ellipse

    return background + (1.0 - background) * face_ellipse(size, coverage)


def pixel_loss(pred: torch.Tensor, target: torch.Tensor, kind: str,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """The pixel term, a weighted mean over pixels where ``weight`` (broadcastable, e.g. :func:`face_weight`) is
    given (l1 and mse only)."""
    pred, target = pred.float(), target.float()
    if weight is not None and kind != "ssim":
        err = (pred - target).abs() if kind == "l1" else (pred - target) ** 2
        w = weight.to(err.device, err.dtype)
        return (err * w).mean() / w.mean()
    if kind == "l1":
        return (pred - target).abs().mean()
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "ssim":
        return 1.0 - ssim(pred, target)
    raise ValueError(f"unknown pixel loss {kind!r}; valid: l1, mse, ssim")


def _unit(f: torch.Tensor) -> torch.Tensor:
    """``lpips.normalize_tensor`` in fp32: unit-length feature vectors along the channels."""
    f = f.float()
    return f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)


class LpipsLoss(nn.Module):
    """LPIPS(pred, target) per image, the value of ``lpips.LPIPS(normalize=True)`` with the real weights,
    arranged so the step keeps a GPU busy.

    * The target branch runs under ``no_grad``: its features need no gradient, so nothing of it is kept.
    * The backbone runs in the autocast dtype (bf16 on the GPU) and, with ``channels_last``, in NHWC with
      NHWC weights (cuDNN's fast layout); the images are not copied to fp32 first.
    * Feature normalisation, differences and means run in fp32: bf16 differences of nearly equal unit
      features would bias the distance upwards.
    * The 1×1 linear layers are applied after the spatial mean (both are linear, so the value is the same),
      which removes a 1-output-channel convolution over every full-size feature map.
    * Nothing is read back to the host; ``compile=True`` wraps the forward in ``torch.compile``.

    Its own copy of the backbone (so the metric's cached module keeps its layout); parameters frozen.
    """

    def __init__(self, net: str = "vgg", device: str | torch.device = "cpu", channels_last: bool = False,
                 compile: bool = False) -> None:
        from faceswap.metrics.lpips import load_lpips

        super().__init__()
        ref = load_lpips(net, device)
        self.net_name = net
        self.backbone = copy.deepcopy(ref.net).eval()
        if channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        shift, scale = ref.scaling_layer.shift.float(), ref.scaling_layer.scale.float()
        # [0, 1] → [-1, 1] → (x - shift) / scale as one affine map
        self.register_buffer("gain", 2.0 / scale)
        self.register_buffer("offset", (-1.0 - shift) / scale)
        for i, lin in enumerate(ref.lins):
            self.register_buffer(f"lin{i}", lin.model[-1].weight.detach().float().reshape(-1).clone())
        self.layers = len(ref.lins)
        for p in self.parameters():
            p.requires_grad_(False)
        self.channels_last = channels_last
        self._forward = torch.compile(self._distance) if compile else self._distance

    def train(self, mode: bool = True) -> LpipsLoss:  # the backbone has no dropout/batch-norm, keep it in eval
        return super().train(False)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x * self.gain + self.offset
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return list(self.backbone(x))

    def _distance(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ty = [_unit(f) for f in self._features(target)]
        total = pred.new_zeros(pred.shape[0], dtype=torch.float32)
        for i, (fx, uy) in enumerate(zip(self._features(pred), ty, strict=True)):
            d = (_unit(fx) - uy).pow(2).mean((2, 3))  # (B, C): spatial mean first, then the linear layer
            total = total + (d * getattr(self, f"lin{i}")).sum(1)  # not `@`: autocast would run it in bf16
        return total

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.ndim != 4 or pred.shape[1] != 3 or pred.shape != target.shape:
            raise ValueError(f"expected two (B, 3, H, W) tensors of equal shape, got {tuple(pred.shape)} and "
                             f"{tuple(target.shape)}")
        return self._forward(pred, target.detach())


_losses: dict[tuple[str, str, bool, bool], LpipsLoss] = {}
_losses_lock = threading.Lock()


def lpips_loss(net: str, device: str | torch.device, channels_last: bool | None = None,
               compile: bool = False) -> LpipsLoss:
    """The cached :class:`LpipsLoss` for this net and device (channels-last by default on CUDA)."""
    dev = torch.device(device)
    cl = dev.type == "cuda" if channels_last is None else channels_last
    key = (net, str(dev), cl, compile)
    with _losses_lock:
        if key not in _losses:
            _losses[key] = LpipsLoss(net, dev, cl, compile).to(dev)
        return _losses[key]


def uses_lpips(cfg: LossParams, step: int) -> bool:
    return cfg.lpips_net != "none" and cfg.lpips_weight > 0 and step % cfg.lpips_every == 0


def phase_offset(seed: int, step: int, shift: int) -> tuple[int, int]:
    """The phase control's crop offset (dy, dx) in 0..shift for one step: drawn from (seed, step) alone, so a
    resumed run draws what an uninterrupted one would, and the training's own random streams are untouched."""
    if shift <= 0:
        return 0, 0
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step) + 0x5EED)
    dy, dx = torch.randint(0, shift + 1, (2,), generator=g).tolist()
    return int(dy), int(dx)


def shifted_crop(x: torch.Tensor, offset: tuple[int, int], shift: int) -> torch.Tensor:
    """``x`` (B, C, H, W) cropped to (H − shift, W − shift) from ``offset``: the LPIPS network's own lattice (its
    strides and pools) then lands at a different phase of the decoder's up-sampling lattice every step."""
    if shift <= 0:
        return x
    dy, dx = offset
    if not (0 <= dy <= shift and 0 <= dx <= shift):
        raise ValueError(f"offset {offset} outside 0..{shift}")
    h, w = x.shape[-2:]
    return x[..., dy:h - shift + dy, dx:w - shift + dx]


def reconstruction_loss(
    pred: torch.Tensor, target: torch.Tensor, cfg: LossParams, with_lpips: bool, lpips: LpipsLoss | None = None,
    offset: tuple[int, int] = (0, 0), weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Pixel + weight × LPIPS (on the first ``lpips_images`` faces) → (loss, {pixel, lpips}).

    The LPIPS term is ``lpips`` if given (e.g. a compiled one), else the cached :class:`LpipsLoss` for
    ``cfg.lpips_net`` (channels-last on CUDA, where training runs bf16 + channels-last). With
    ``cfg.lpips_shift`` > 0 it sees both images cropped together at ``offset`` (:func:`phase_offset`; the phase
    control); the pixel term always sees the whole image, weighted by ``weight`` where given
    (``cfg.background_weight`` < 1: :func:`face_weight`)."""
    parts = {"pixel": pixel_loss(pred, target, cfg.pixel, weight)}
    loss = parts["pixel"]
    if with_lpips and cfg.lpips_net != "none" and cfg.lpips_weight > 0:
        k = cfg.lpips_images or pred.shape[0]
        term = lpips if lpips is not None else lpips_loss(cfg.lpips_net, pred.device)
        s = cfg.lpips_shift
        parts["lpips"] = term(shifted_crop(pred[:k], offset, s), shifted_crop(target[:k], offset, s)).mean()
        loss = loss + cfg.lpips_weight * parts["lpips"]
    return loss, parts


def code_mmd(za: torch.Tensor, zb: torch.Tensor, scales: tuple[float, ...] = (0.5, 1.0, 2.0)) -> torch.Tensor:
    """Squared maximum mean discrepancy between two batches of codes (flattened), a sum of Gaussian kernels at
    ``scales`` × the median pairwise squared distance (the median heuristic, not differentiated).

    The biased (V-statistic) estimate: never negative and exactly 0 for identical batches, so the term pulls the
    two identities' code distributions together and vanishes when they agree (faceswap-GAN's and DeepFaceLab's
    domain terms do this with a discriminator; a kernel needs no second network)."""
    x, y = za.flatten(1).float(), zb.flatten(1).float()
    z = torch.cat([x, y])
    sq = (z * z).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * z @ z.T).clamp_min(0.0)
    m = len(z)
    # the off-diagonal entries, row by row, gathered by index: a boolean mask would make the GPU report its count
    # to the host every step (a sync); these indices are arithmetic on the device
    k = torch.arange(m * (m - 1), device=z.device)
    i, j = k // max(m - 1, 1), k % max(m - 1, 1)
    off = d2.detach().flatten()[i * m + j + (j >= i).long()]
    bw = off.median().clamp_min(1e-8) if off.numel() else torch.ones((), device=z.device)
    k = sum(torch.exp(-d2 / (s * bw)) for s in scales)
    n = len(x)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2.0 * k[:n, n:].mean()
