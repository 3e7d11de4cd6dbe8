"""Which torch device a ``device`` setting (auto | cpu | cuda) means on this machine, decided in one place."""

from __future__ import annotations

from faceswap.errors import FaceswapError


class DeviceError(FaceswapError, RuntimeError):
    """A device setting this machine cannot honour (cuda without a GPU, or an unknown name)."""


def resolve_device(device: str = "auto", setting: str = "device") -> str:
    """``auto`` → cuda when torch sees a GPU, else cpu; ``setting`` names the params key in the error."""
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise DeviceError(f"{setting} must be auto, cpu or cuda, got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"{setting} is 'cuda' but torch sees no GPU; use auto or cpu")
    return device
