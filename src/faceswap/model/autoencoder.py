"""The seed's face-swap autoencoder: shared encoder → 3×3 bottleneck → one decoder per identity.

At the seed scale (256×256 input, width 128, 1024 bottleneck channels)::

    x                                   # (B, 3, 256, 256)
    encoder: 4 × Conv(k5, s2)           # (B, 1024, 16, 16)
    bottleneck: 2 × Conv(k3, s2, p0)    # (B, 1024, 7, 7) → (B, 1024, 3, 3)   21.3× compression
    decoder[a|b]: first step 3→8        # (B, 512, 8, 8)
                  5 × up ×2             # (B, 16, 256, 256)
                  Conv(k5) + sigmoid    # (B, 3, 256, 256)

The number of encoder stages is derived from the image size so the bottleneck stays 3×3 from 64 to
1024 (64 → 2 stages, 1024 → 6); pinning it reproduces the seed's day-13 failure (512 with the 256
network → 7×7 bottleneck, reconstructions fine, swaps keep the source identity).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from faceswap.config import INPUT_FILLS, INPUT_MASKS
from faceswap.model.blocks import UPSAMPLERS, create_upsample

if TYPE_CHECKING:
    from faceswap.config import Params

BOTTLENECK_TARGET = 3
MASK_FILL = 0.5  # the grey that replaces the background of a masked input (and of its training target)
NOISE_SEED = 0  # the fixed noise image a noise-filled model sees behind every face outside training


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network; saved next to the weights in every checkpoint."""

    image_size: int = 64
    width: int = 16
    bottleneck_channels: int = 128
    encoder_stages: int | None = None
    max_channels: int = 1024
    decoder: str = "resize_nearest"
    identities: tuple[str, ...] = ("a", "b")
    input_mask: str = "none"  # none | ellipse: the background replaced by grey before the encoder (masked input)
    mask_coverage: float = 0.8  # the alignment coverage the crops were cut with (places the face ellipse)
    input_fill: str = "grey"  # grey | noise | other: what replaces the masked background while training

    @classmethod
    def from_params(cls, params: Params, variant: str) -> ModelConfig:
        """The network ``params`` describe with ``variant``'s decoders: the one place a params file becomes a model
        (training, the benchmarks)."""
        m = params.model
        return cls(image_size=params.base.image_size, width=m.width, bottleneck_channels=m.bottleneck_channels,
                   encoder_stages=m.encoder_stages, max_channels=m.max_channels, decoder=variant,
                   identities=tuple(params.base.identities), input_mask=m.input_mask,
                   mask_coverage=params.align.coverage, input_fill=m.input_fill)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Geometry:
    """Spatial sizes derived from a ModelConfig; every shape claim in the docs comes from here."""

    encoder_stages: int
    encoder_size: int  # side after the stride-2 encoder
    bottleneck_size: int  # side of the bottleneck (3 unless encoder_stages is pinned)
    decoder_doublings: int  # ×2 steps after the first 2b+2 step

    @property
    def decoder_stages(self) -> int:
        return 1 + self.decoder_doublings


def _conv_s2_p0(side: int) -> int:
    return (side - 3) // 2 + 1


def derive_geometry(cfg: ModelConfig) -> Geometry:
    """Check that the configuration closes (decoder output == input size) and return its sizes."""
    n = cfg.image_size
    if n < 32 or n & (n - 1):
        raise ValueError(f"image_size must be a power of two ≥ 32, got {n}")
    if cfg.input_mask not in INPUT_MASKS:
        raise ValueError(f"unknown input_mask {cfg.input_mask!r}; valid: {', '.join(INPUT_MASKS)}")
    if cfg.input_fill not in INPUT_FILLS:
        raise ValueError(f"unknown input_fill {cfg.input_fill!r}; valid: {', '.join(INPUT_FILLS)}")
    if cfg.decoder not in UPSAMPLERS:
        raise ValueError(f"unknown decoder variant {cfg.decoder!r}; valid: {', '.join(UPSAMPLERS)}")
    # the bottleneck's two k3/s2/p0 convs take 16 → 7 → 3, so the encoder must end at 16×16
    stages = cfg.encoder_stages if cfg.encoder_stages is not None else int(math.log2(n)) - 4
    if stages < 1:
        raise ValueError(f"encoder_stages must be ≥ 1 (image_size {n} derives {stages})")
    enc = n >> stages
    if enc < 8 or enc << stages != n:
        raise ValueError(
            f"encoder_stages={stages} leaves a {enc}×{enc} map at image_size {n}; it must be ≥ 8×8 "
            f"for the bottleneck convs (use at most {int(math.log2(n)) - 3} stages)"
        )
    b = _conv_s2_p0(_conv_s2_p0(enc))
    first_out = 2 * b + 2
    doublings = round(math.log2(n / first_out))
    if first_out << doublings != n:
        raise ValueError(f"a {b}×{b} bottleneck cannot be decoded back to {n}×{n} with ×2 steps")
    return Geometry(stages, enc, b, doublings)


def _encoder_channels(cfg: ModelConfig, stages: int) -> list[int]:
    return [min(cfg.width * 2**i, cfg.max_channels) for i in range(stages)]


def _decoder_channels(cfg: ModelConfig, steps: int) -> list[int]:
    """Halve from the bottleneck width at every step (1024 → 512 → … in the seed), floor 8."""
    return [max(cfg.bottleneck_channels >> (i + 1), 8) for i in range(steps)]


class Encoder(nn.Module):
    """Shared encoder plus bottleneck: (B, 3, N, N) → (B, C, b, b), b = 3 by default."""

    def __init__(self, cfg: ModelConfig, geom: Geometry) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch_in = 3
        for ch in _encoder_channels(cfg, geom.encoder_stages):
            layers.append(nn.Sequential(nn.Conv2d(ch_in, ch, 5, stride=2, padding=2), nn.LeakyReLU(0.1, True)))
            ch_in = ch
        self.stages = nn.Sequential(*layers)  # (B, width·2^(K-1), 16, 16)
        c = cfg.bottleneck_channels
        self.bottleneck = nn.Sequential(
            nn.Conv2d(ch_in, c, 3, stride=2), nn.LeakyReLU(0.1, True),  # (B, C, 7, 7)
            nn.Conv2d(c, c, 3, stride=2), nn.LeakyReLU(0.1, True),  # (B, C, 3, 3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(self.stages(x))


class Decoder(nn.Module):
    """One identity's decoder: (B, C, b, b) → (B, 3, N, N) with the chosen up-sampling variant."""

    def __init__(self, cfg: ModelConfig, geom: Geometry) -> None:
        super().__init__()
        chans = _decoder_channels(cfg, geom.decoder_stages)
        ups = [create_upsample(cfg.decoder, cfg.bottleneck_channels, chans[0], first=True)]  # (B, C/2, 8, 8)
        ups += [create_upsample(cfg.decoder, a, b) for a, b in itertools.pairwise(chans)]  # ×2 each
        self.ups = nn.Sequential(*ups)
        self.to_rgb = nn.Sequential(nn.Conv2d(chans[-1], 3, 5, padding=2), nn.Sigmoid())  # (B, 3, N, N)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.to_rgb(self.ups(z))


class FaceSwapAutoencoder(nn.Module):
    """Shared encoder, one decoder per identity. ``model(x, "b")`` renders x's pose as identity b.

    With ``input_mask: ellipse`` the encoder never sees the background: :meth:`mask` replaces everything outside
    the alignment template's face ellipse by grey before encoding, so the shared code cannot carry the two sets'
    rooms and light (peers train on the face region for this reason; docs/training.md). The mask is part of the
    model, so evaluation, serving and video conversion feed it exactly what training did.

    ``input_fill`` says what stands behind the face while training: ``grey`` (always), ``noise`` (fresh uniform
    noise per image; outside training one fixed noise image, a sample of the same distribution), or ``other`` (the
    background of a random face of the batch, of either identity, so the background carries no identity; outside
    training the face's own background, which the encoder has learnt to ignore)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.geometry = derive_geometry(cfg)
        self.encoder = Encoder(cfg, self.geometry)
        self.decoders = nn.ModuleDict({name: Decoder(cfg, self.geometry) for name in cfg.identities})
        self.face_mask: torch.Tensor | None
        if cfg.input_mask == "ellipse":
            from faceswap.data.template import face_ellipse

            m = face_ellipse(cfg.image_size, cfg.mask_coverage)
            # the feather's far tail set to 0 (a step of < 0.005 in grey level): beyond it no background is left
            m = torch.where(m < 0.01, torch.zeros_like(m), m)
            self.register_buffer("face_mask", m, persistent=False)
        else:
            self.face_mask = None
        if cfg.input_fill == "noise":
            g = torch.Generator().manual_seed(NOISE_SEED)
            self.register_buffer("fixed_noise", torch.rand(3, cfg.image_size, cfg.image_size, generator=g),
                                 persistent=False)

    @property
    def masks_input(self) -> bool:
        return self.face_mask is not None

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with its background replaced by the fill (the face ellipse kept); ``x`` itself without an input
        mask. Training fills draw from torch's global generator, so a seeded run repeats itself."""
        if self.face_mask is None:
            return x
        behind = self.background(x)
        if behind is x:  # the face's own background: nothing to replace
            return x
        m = self.face_mask.to(x.dtype)
        return x * m + behind * (1.0 - m)

    def background(self, x: torch.Tensor) -> torch.Tensor | float:
        """What stands behind the face of each image of ``x`` (see the class docstring)."""
        fill = self.config.input_fill
        if fill == "noise":
            return torch.rand_like(x) if self.training else self.fixed_noise.to(x.dtype)
        if fill == "other":
            return x[torch.randperm(len(x)).to(x.device)] if self.training else x
        return MASK_FILL

    def composite(self, out: torch.Tensor, onto: torch.Tensor) -> torch.Tensor:
        """A decoded face pasted into ``onto``'s background by the same ellipse (what conversion shows); ``out``
        itself without an input mask, whose decoders draw the whole crop."""
        if self.face_mask is None:
            return out
        m = self.face_mask.to(out.dtype)
        return out * m + onto.to(out.dtype) * (1.0 - m)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.mask(x))

    def decode(self, z: torch.Tensor, identity: str) -> torch.Tensor:
        if identity not in self.decoders:
            raise KeyError(f"no decoder for identity {identity!r}; have {list(self.decoders)}")
        return self.decoders[identity](z)

    def forward(self, x: torch.Tensor, identity: str) -> torch.Tensor:
        return self.decode(self.encode(x), identity)

    @property
    def compression_ratio(self) -> float:
        n, b = self.config.image_size, self.geometry.bottleneck_size
        return (3 * n * n) / (self.config.bottleneck_channels * b * b)
