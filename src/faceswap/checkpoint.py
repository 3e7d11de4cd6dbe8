"""Checkpoints that survive crashes: atomic writes, config beside the weights, safe loads.

A checkpoint is one dict saved with ``torch.save``: ``model`` (state dict), ``model_config``
(``ModelConfig.to_dict()``, enough to rebuild the network), and whatever training state the writer adds
(optimiser, scaler, scheduler, step, RNG states, the run's config). Loads use ``weights_only=True``,
so a checkpoint can never run code; everything stored must therefore be tensors and plain Python
containers/scalars.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from faceswap.errors import FaceswapError
from faceswap.files import atomic_write
from faceswap.model import FaceSwapAutoencoder, ModelConfig


class CheckpointError(FaceswapError, RuntimeError):
    """A checkpoint that is missing, truncated or not one of ours."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, fsync, rename.

    A crash at any moment leaves either the old file or the new one, never half of one.
    """
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict safely (``weights_only=True``); a bad file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # weights_only refuses anything but tensors and plain containers
        raise CheckpointError(f"cannot read checkpoint {path}: not a torch file of tensors (damaged, or a foreign "
                              "pickle that torch.load(weights_only=True) refuses)") from None
    except Exception as err:  # truncated zip, …: torch's first line names the problem
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"cannot read checkpoint {path}: {first}") from None
    if not isinstance(state, dict) or "model" not in state or "model_config" not in state:
        raise CheckpointError(f"{path} is not a faceswap checkpoint (needs 'model' and 'model_config')")
    return state


def model_config_from(state: dict[str, Any]) -> ModelConfig:
    cfg = dict(state["model_config"])
    cfg["identities"] = tuple(cfg.get("identities", ("a", "b")))
    return ModelConfig(**cfg)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[FaceSwapAutoencoder, dict[str, Any]]:
    """Rebuild the autoencoder from a checkpoint, in eval mode on ``device``; returns (model, state)."""
    state = load_checkpoint(path, map_location=device)
    model = FaceSwapAutoencoder(model_config_from(state))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state
