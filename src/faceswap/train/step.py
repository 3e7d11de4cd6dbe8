"""One training step, the same function for the loop and the benchmarks (bench/train.py, bench/gpu_train.py):
:func:`train_step` — forward, loss, backward, clip, non-finite check, optimiser — and the pieces it needs (the
one-forward model wrapper, the optimiser, the LR schedule).

The step never waits for the device. A step whose loss or gradient norm is not finite is skipped on the device:
the flag goes to the fused AdamW as ``found_inf`` (as GradScaler does it), whose kernel then leaves the weights,
the moments and the step count as they were; under DDP the flag is max-reduced first (on the device), so every
rank skips the same steps. The flags come back in :class:`StepOutput` for the loop to read at its log and job
boundaries (:class:`~faceswap.train.run.Run`): the warnings and the ``max_nonfinite`` stop come then, naming the
steps. fp16 (GradScaler on GPUs without bf16) skips a step with overflowing gradients the same way, and the
scaler lowers its scale; those steps are not counted as non-finite, as calibrating the scale makes some.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from faceswap.config import LossParams, TrainParams
from faceswap.losses import LpipsLoss, code_mmd, phase_offset, reconstruction_loss, uses_lpips
from faceswap.model import FaceSwapAutoencoder


class SwapModel(nn.Module):
    """One forward for all identities (what DDP and torch.compile want): xs[i] → decoder i.

    The shared encoder runs once over every identity's batch (it has no batch statistics, so the codes are those
    of separate passes); ``with_codes`` also returns each identity's codes, for the code alignment term."""

    def __init__(self, model: FaceSwapAutoencoder, with_codes: bool = False) -> None:
        super().__init__()
        self.model = model
        self.identities = tuple(model.decoders)
        self.with_codes = with_codes

    def forward(self, *xs: torch.Tensor) -> Any:
        codes = self.model.encode(torch.cat(xs)).split([len(x) for x in xs])
        preds = tuple(self.model.decode(z, ident) for z, ident in zip(codes, self.identities, strict=True))
        return (preds, codes) if self.with_codes else preds


def lr_at(step: int, t: TrainParams) -> float:
    """Linear warm-up to ``lr``, then cosine/linear decay to ``min_lr_ratio·lr`` at the last step."""
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    if t.decay == "none":
        return t.lr
    progress = (step - t.warmup_steps) / max(1, t.steps - 1 - t.warmup_steps)
    progress = min(1.0, max(0.0, progress))
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if t.decay == "cosine" else 1.0 - progress
    return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * shape)


def make_optimizer(model: nn.Module, t: TrainParams, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on the weights only (not biases and norms), fused: one kernel over all parameters,
    and the one that skips a non-finite step on the device (module doc)."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused on the GPU and on the CPU (bench/train.py, demo model on 2 cores: ~2.4 against ~4 ms per step for the
    # for-loop AdamW, 1.02-1.06x the whole step; equal to rounding)
    return torch.optim.AdamW(groups, lr=t.lr, betas=t.betas, fused=device.type in ("cuda", "cpu"))


def grad_norm(model: nn.Module, grad_clip: float | None) -> torch.Tensor:
    """The total gradient norm (clipping to ``grad_clip`` when set); stays on the device."""
    if grad_clip is not None:
        return torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    return torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])


@dataclass
class StepParts:
    """What every step uses: the module it calls (``net``: :class:`SwapModel`, maybe compiled or DDP-wrapped),
    the model beneath (its input mask and parameters), optimiser and scaler, the loss settings, and ``reduce``
    (under DDP: an in-place max over ranks of a device tensor)."""

    net: nn.Module
    model: FaceSwapAutoencoder
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss: LossParams
    grad_clip: float | None
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    seed: int = 0  # the run's seed: the phase control's offsets are drawn from it
    weight: torch.Tensor | None = None  # the pixel term's face weighting (losses.face_weight), on the device
    lpips: LpipsLoss | None = None  # a given LPIPS term (e.g. compiled); None: the cached one for loss.lpips_net
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass(frozen=True)
class StepOutput:
    """One step's results, all on the device (reading them waits for it)."""

    loss: torch.Tensor  # the summed loss of every identity, detached
    terms: list[dict[str, torch.Tensor]]  # per identity: its loss's parts (pixel, lpips, code_mmd)
    flags: torch.Tensor  # (2,) float: [non-finite loss, non-finite gradients (counted)]; any nonzero: skipped

    @property
    def ok(self) -> torch.Tensor:
        """True (a 0-dim bool on the device) when the step was applied."""
        return self.flags.amax() == 0


def train_step(s: StepParts, xs: list[torch.Tensor], ys: list[torch.Tensor], step: int, lr: float) -> StepOutput:
    """Train step ``step`` at learning rate ``lr`` on one batch per identity (inputs ``xs``, targets ``ys``):
    forward, loss, backward, clip, non-finite check and optimiser, with no wait for the device (module doc)."""
    for g in s.opt.param_groups:
        g["lr"] = lr
    with_lp = uses_lpips(s.loss, step)
    phase = phase_offset(s.seed, step, s.loss.lpips_shift)
    with s.autocast():
        preds, codes = s.net(*xs) if s.loss.code_mmd > 0 else (s.net(*xs), None)
        # a masked-input model learns to draw the face on grey: its targets lose the background too
        parts = [reconstruction_loss(pr, s.model.mask(y), s.loss, with_lp, lpips=s.lpips, offset=phase,
                                     weight=s.weight) for pr, y in zip(preds, ys, strict=True)]
    loss = sum(part[0] for part in parts)
    if codes is not None:
        mmd = code_mmd(codes[0], codes[1])
        parts[0][1]["code_mmd"] = mmd
        loss = loss + s.loss.code_mmd * mmd
    s.scaler.scale(loss).backward()
    s.scaler.unscale_(s.opt)  # a no-op when the scaler is off (fp32, bf16)
    norm = grad_norm(s.model, s.grad_clip)
    bad = torch.stack([~torch.isfinite(loss.detach()), ~torch.isfinite(norm)]).float()
    if s.reduce is not None:
        bad = s.reduce(bad)
    _step_unless(s.opt, bad.amax())
    if s.scaler.is_enabled():
        s.scaler.update()  # lowers the scale after an overflow, as GradScaler.step + update would
        bad = torch.stack([bad[0], torch.zeros_like(bad[1])])  # overflows are the scaler's, not counted
    s.opt.zero_grad(set_to_none=True)
    return StepOutput(loss.detach(), [p[1] for p in parts], bad)


def _step_unless(opt: torch.optim.Optimizer, skip: torch.Tensor) -> None:
    """``opt.step()`` unless ``skip`` (a 0-dim 0./1. device tensor) is 1: decided inside the fused kernel, so the
    host does not wait. An optimiser without that (the for-loop AdamW a benchmark compares) reads the flag."""
    if getattr(opt, "_step_supports_amp_scaling", False):
        opt.found_inf = skip  # type: ignore[attr-defined]
        try:
            opt.step()
        finally:
            del opt.found_inf  # type: ignore[attr-defined]
    elif not bool(skip):
        opt.step()
