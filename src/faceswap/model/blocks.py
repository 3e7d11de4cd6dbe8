"""Decoder up-sampling blocks: the seed's experimental variable, side by side in one registry.

Every block maps (B, C_in, H, W) → (B, C_out, H', W') and ends in BatchNorm + LeakyReLU(0.1), so the
variants differ only in how they up-sample. Each has two geometries:

* ``first=False``: an exact ×2 step, H' = 2H (8→16→…→N);
* ``first=True``: the step out of the b×b bottleneck, H' = 2b + 2 (3→8 for the 3×3 bottleneck,
  7→16 for the seed's day-13 7×7 one), so that a chain of ×2 steps then lands on the input size.

Adding a variant is one class with this constructor, decorated ``@upsampler("name")``, and, to train it, its
name in params.yaml ``model.variants``. ``UPSAMPLERS`` is the only list of names (timm's ``register_model``
pattern): loading params does not check them, so the data stages never depend on this module; the train stage
and the commands that take ``--variant`` check names here (:func:`check_variant`), with the valid ones in the
error.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

UPSAMPLERS: dict[str, type[nn.Module]] = {}  # filled by @upsampler, in definition order


def upsampler(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Register a block class as the decoder variant ``name`` (params ``model.variants``, ``--variant``)."""

    def register(cls: type[nn.Module]) -> type[nn.Module]:
        if UPSAMPLERS.get(name, cls) is not cls:
            raise ValueError(f"decoder variant {name!r} is already registered as {UPSAMPLERS[name].__name__}")
        UPSAMPLERS[name] = cls
        return cls

    return register


def check_variant(name: str, setting: str = "variant") -> str:
    """``name`` if it is a registered variant, else a ValueError that names ``setting`` and every valid name."""
    if name not in UPSAMPLERS:
        raise ValueError(f"unknown {setting} {name!r}; valid: {', '.join(UPSAMPLERS)}")
    return name


def _norm_act(channels: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels), nn.LeakyReLU(0.1, inplace=True)]


@upsampler("convtranspose")
class ConvTransposeUp(nn.Sequential):
    """ConvTranspose2d(k=4, s=2): the seed's "before".

    Splats each input through a 4×4 kernel; uneven learned kernel sums per output phase give the
    checkerboard of Odena et al. (2016) even though k=4, s=2 overlaps evenly. First step uses p=0
    (3→8), later steps p=1 (H→2H).
    """

    def __init__(self, in_channels: int, out_channels: int, *, first: bool = False) -> None:
        super().__init__(
            nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=0 if first else 1),
            *_norm_act(out_channels),
        )


@upsampler("resize_nearest")
class ResizeConvUp(nn.Sequential):
    """Upsample ×2 then Conv2d(k=3, s=1): the seed's fix (resize-convolution, Odena et al. 2016).

    No uneven overlap, so no new lattice; slightly softer than transposed conv, more so with bilinear.
    First step pads by 2 after the resize (3→6→8) so the chain reaches the input size exactly.
    """

    mode = "nearest"

    def __init__(self, in_channels: int, out_channels: int, *, first: bool = False) -> None:
        up = nn.Upsample(scale_factor=2, mode=self.mode) if self.mode == "nearest" else nn.Upsample(
            scale_factor=2, mode=self.mode, align_corners=False
        )
        super().__init__(
            up,
            nn.Conv2d(in_channels, out_channels, 3, padding=2 if first else 1),
            *_norm_act(out_channels),
        )


@upsampler("resize_bilinear")
class ResizeBilinearUp(ResizeConvUp):
    """Bilinear resize then Conv2d(k=3): smoother than nearest, the softest of the variants."""

    mode = "bilinear"


@upsampler("pixelshuffle")
class PixelShuffleUp(nn.Module):
    """Sub-pixel convolution (Shi et al. 2016): conv to 4·C_out channels, then PixelShuffle(2).

    Sharp and cheap, but a randomly initialised kernel gives each of the four sub-pixel phases its own
    filter, which is a checkerboard from step 0. First step uses a k=2, p=1 conv (3→4) so the shuffle
    lands on 8.
    """

    def __init__(self, in_channels: int, out_channels: int, *, first: bool = False) -> None:
        super().__init__()
        kernel, pad = (2, 1) if first else (3, 1)
        self.conv = nn.Conv2d(in_channels, out_channels * 4, kernel, padding=pad)
        self.shuffle = nn.PixelShuffle(2)
        self.post = nn.Sequential(*_norm_act(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.shuffle(self.conv(x)))


def icnr_(weight: torch.Tensor, scale: int = 2, init=nn.init.kaiming_normal_) -> torch.Tensor:
    """ICNR initialisation (Aitken et al. 2017), in place.

    Draws one base kernel per output channel and repeats it ``scale²`` times *consecutively*
    (``repeat_interleave``), because ``nn.PixelShuffle`` sends conv channel ``c·s² + i`` to sub-pixel
    ``i`` of output channel ``c``. Then every sub-pixel of a channel computes the same filter, i.e. the
    block starts out as "base conv, then nearest-neighbour ×scale". Tiling (``repeat``) would mix
    channels across phases and bring the checkerboard back.
    """
    out_ch, in_ch, kh, kw = weight.shape
    if out_ch % (scale * scale):
        raise ValueError(f"ICNR needs out_channels divisible by {scale * scale}, got {out_ch}")
    base = torch.empty(out_ch // (scale * scale), in_ch, kh, kw, dtype=weight.dtype, device=weight.device)
    init(base)
    with torch.no_grad():
        weight.copy_(base.repeat_interleave(scale * scale, dim=0))
    return weight


@upsampler("pixelshuffle_icnr")
class PixelShuffleICNRUp(PixelShuffleUp):
    """PixelShuffle with ICNR initialisation: starts equal to conv + nearest ×2, so no initial grid."""

    def __init__(self, in_channels: int, out_channels: int, *, first: bool = False) -> None:
        super().__init__(in_channels, out_channels, first=first)
        icnr_(self.conv.weight)
        with torch.no_grad():  # the bias must also be equal across the four phases of a channel
            bias = self.conv.bias.view(out_channels, 4)
            bias.copy_(bias[:, :1].expand_as(bias))


def create_upsample(name: str, in_channels: int, out_channels: int, *, first: bool = False) -> nn.Module:
    """Build the named up-sampling block; an unknown name is an error listing the valid ones."""
    return UPSAMPLERS[check_variant(name, "decoder variant")](in_channels, out_channels, first=first)
