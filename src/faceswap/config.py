"""Typed, validated settings loaded from ``params.yaml``.

One module owns the schema so that every stage reads the same defaults, and a wrong value fails at
load time with the key, the value and what is allowed, instead of deep inside a stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_PARAMS = Path("params.yaml")

UPSAMPLE_VARIANTS = ("convtranspose", "resize_nearest", "resize_bilinear", "pixelshuffle", "pixelshuffle_icnr")


class ConfigError(ValueError):
    """A params file that is missing, unreadable or holds a value outside what is allowed."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


class BaseParams(_Section):
    """Settings every stage shares."""

    seed: int = Field(0, ge=0, description="Seed for every random choice, so a run can be repeated.")
    image_size: int = Field(64, description="Side of the aligned face crops and of the model's input.")
    identities: tuple[str, str] = ("a", "b")

    @field_validator("image_size")
    @classmethod
    def _power_of_two_in_range(cls, v: int) -> int:
        if not (_is_power_of_two(v) and 64 <= v <= 1024):
            raise ValueError("must be a power of two from 64 to 1024 (64, 128, 256, 512 or 1024)")
        return v


class ModelParams(_Section):
    """The autoencoder's shape (see ``faceswap.model``)."""

    width: int = Field(16, ge=4, le=1024, description="Channels of the first encoder stage; doubles per stage.")
    bottleneck_channels: int = Field(128, ge=8, le=4096)
    encoder_stages: int | None = Field(
        None, ge=1, le=8, description="Stride-2 encoder stages; null derives it so the bottleneck is 3×3."
    )
    max_channels: int = Field(1024, ge=8, le=4096, description="Cap on encoder channels.")
    variants: tuple[str, ...] = UPSAMPLE_VARIANTS

    @field_validator("variants")
    @classmethod
    def _known_variants(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in v if name not in UPSAMPLE_VARIANTS]
        if unknown or not v:
            raise ValueError(f"unknown or empty variant list {list(v)}; allowed: {', '.join(UPSAMPLE_VARIANTS)}")
        return v


class CheckerboardParams(_Section):
    periods: tuple[int, ...] = Field((2, 4, 8), description="Lattice periods (pixels) scored.")

    @field_validator("periods")
    @classmethod
    def _powers_of_two(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(not _is_power_of_two(p) or p < 2 or p > 32 for p in v):
            raise ValueError("must be a non-empty list of powers of two between 2 and 32")
        return tuple(sorted(set(v)))


class MetricsParams(_Section):
    checkerboard: CheckerboardParams = CheckerboardParams()


class Params(_Section):
    """The whole ``params.yaml``."""

    base: BaseParams = BaseParams()
    model: ModelParams = ModelParams()
    metrics: MetricsParams = MetricsParams()


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid parameters in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (value {e['input']!r}); check the spelling against params.yaml")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {key} = {e['input']!r}: {msg}")
    return "\n".join(lines)


def parse_params(raw: dict[str, Any], source: str = "params") -> Params:
    """Validate a params mapping; raise ConfigError naming each bad key, its value and what is allowed."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Read and validate a params file. A missing file is an error, not silent defaults."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path} (run from the repository root or pass --params)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(raw).__name__}")
    return parse_params(raw, str(path))
