"""Checkpoints that survive crashes: atomic writes, a versioned layout, safe loads.

A checkpoint is one dict saved with ``torch.save`` and loaded with ``weights_only=True`` (it can never run
code, so everything in it is tensors and plain Python containers and scalars). Its layout has one typed
definition here, versioned by ``schema_version``:

* :class:`TrainingState`: a full training state (``step_*.pt``, ``best.pt`` in :func:`checkpoint_dir`): everything
  a resume needs to continue exactly (weights, optimiser, scaler, schedule, RNG, counters, the run's config);
* :class:`ModelFile`: the trained model (``model.pt``): best weights, the config that rebuilds the network,
  and what evaluation and serving read beside it (step, validation loss, variant, detector).

Both carry ``model`` (state dict) and ``model_config`` (``ModelConfig.to_dict()``), so :func:`load_model`
rebuilds the network from either. A file without ``schema_version`` was written before the field existed and
is read as version 1 (its layout is version 1's): the model.pt files users already have keep loading. Any other
version is refused with a :class:`CheckpointVersionError` that says what to do.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from faceswap.errors import FaceswapError
from faceswap.files import atomic_write
from faceswap.model import FaceSwapAutoencoder, ModelConfig

#: the layout this code writes and reads (TrainingState and ModelFile); bump it when a field changes meaning
SCHEMA_VERSION = 1
#: files written before ``schema_version`` existed have this layout
UNVERSIONED = 1


def checkpoint_dir(run_dir: str | Path) -> Path:
    """Where a run's training states live: ``<variant>/checkpoints/seed<k>`` beside ``<variant>/seed<k>``, not in
    it. The run folder is a cached DVC output, which ``dvc exp run`` checks out to the baseline's version before it
    runs (deleting the states a killed run left); this folder is a separate output, persisted and not cached, so a
    killed run resumes under ``dvc exp run`` as under ``dvc repro``."""
    run_dir = Path(run_dir)
    return run_dir.parent / "checkpoints" / run_dir.name


class CheckpointError(FaceswapError, RuntimeError):
    """A checkpoint that is missing, truncated or not one of ours."""


class CheckpointVersionError(CheckpointError):
    """A checkpoint of a layout (``schema_version``) this code does not read: not damaged, not readable here."""


def schema_version(state: Mapping[str, Any], source: str | Path = "checkpoint") -> int:
    """The layout version of a loaded checkpoint dict (unversioned: 1); refuses versions this code cannot read."""
    v = state.get("schema_version", UNVERSIONED)
    if type(v) is int and v == SCHEMA_VERSION:
        return v
    if type(v) is int and v > SCHEMA_VERSION:
        todo = "it was written by a newer faceswap: upgrade faceswap to read it"
    else:
        todo = "no faceswap writes that layout: retrain it (dvc repro train@<variant>-<seed>) or delete it"
    raise CheckpointVersionError(f"{source} has checkpoint schema_version {v!r}, this faceswap reads version "
                                 f"{SCHEMA_VERSION} (and unversioned files as 1); {todo}")


def _from_dict(cls: type, state: Mapping[str, Any], source: str | Path, what: str) -> Any:
    """``cls`` from a checkpoint dict: the version checked, every required field present, extra keys ignored."""
    schema_version(state, source)
    names = [f.name for f in fields(cls) if f.name != "schema_version"]
    missing = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
               and f.name not in state]
    if missing:
        raise CheckpointError(f"{source} is not a {what} (lacks {', '.join(missing)})")
    return cls(**{k: state[k] for k in names if k in state})


@dataclass(frozen=True)
class TrainingState:
    """A full training state (``step_*.pt``, ``best.pt`` in :func:`checkpoint_dir`), saved every
    ``checkpoint_every`` steps.

    Fields with defaults were added after the first checkpoints were written: an older file reads with them."""

    model: dict[str, torch.Tensor]
    model_config: dict[str, Any]
    optimizer: dict[str, Any]
    schedule: dict[str, Any]  # kind, step, lr
    step: int
    variant: str
    best_val_loss: float | None
    best_step: int | None
    nonfinite_total: int
    rng: dict[str, torch.Tensor]  # torch (CPU), and cuda when the run was on a GPU
    config: dict[str, Any]  # faceswap.train.run_config
    fingerprint: str  # of the config's computational part: a resume must match it
    history: dict[str, list[float]]  # step, loss, val_step, val_loss, train_clean_loss
    scaler: dict[str, Any] = field(default_factory=dict)  # empty: written without a GradScaler state
    precision: str | None = None  # fp32 | bf16 | fp16; None: written before it was recorded
    channels_last: bool | None = None
    mlflow_run_id: str | None = None
    loss_window: tuple[float, int] = (0.0, 0)  # the unlogged training losses: sum and count
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}  # not asdict: no deep copy of the tensors
        d["loss_window"] = list(self.loss_window)
        return d

    @classmethod
    def from_dict(cls, state: Mapping[str, Any], source: str | Path = "checkpoint") -> TrainingState:
        st = _from_dict(cls, state, source, "training checkpoint")
        window = state.get("loss_window") or (0.0, 0)
        return replace(st, loss_window=(float(window[0]), int(window[1])), scaler=state.get("scaler") or {})


@dataclass(frozen=True)
class ModelFile:
    """The trained model (``model.pt``): the best-by-validation weights and what evaluation and serving read."""

    model: dict[str, torch.Tensor]
    model_config: dict[str, Any]
    step: int | None = None  # the step of the weights (the best validation)
    val_loss: float | None = None
    variant: str | None = None
    config: dict[str, Any] | None = None  # faceswap.train.run_config of the run that trained it
    detector: dict[str, Any] | None = None  # how the training crops were detected: serving detects the same way
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any], source: str | Path = "checkpoint") -> ModelFile:
        return _from_dict(cls, state, source, "faceswap model file")


def save_checkpoint(path: str | Path, state: TrainingState | ModelFile | Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, fsync, rename.

    A crash at any moment leaves either the old file or the new one, never half of one. A plain dict is saved
    as given (test fixtures and benchmarks write minimal ones; they read as an unversioned layout).
    """
    data = state.to_dict() if isinstance(state, TrainingState | ModelFile) else dict(state)
    return atomic_write(path, lambda f: torch.save(data, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict safely (``weights_only=True``); a bad file is a CheckpointError, a layout this
    code does not read a CheckpointVersionError."""
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
    schema_version(state, path)
    return state


def load_training_state(path: str | Path, map_location: str | torch.device = "cpu") -> TrainingState:
    """A full training state (``step_*.pt``, ``best.pt``); a model-only file is a CheckpointError."""
    return TrainingState.from_dict(load_checkpoint(path, map_location), path)


def model_config_from(state: Mapping[str, Any]) -> ModelConfig:
    cfg = dict(state["model_config"])
    cfg["identities"] = tuple(cfg.get("identities", ("a", "b")))
    return ModelConfig(**cfg)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[FaceSwapAutoencoder, dict[str, Any]]:
    """Rebuild the autoencoder from a checkpoint, in eval mode on ``device``; returns (model, state)."""
    state = load_checkpoint(path, map_location=device)
    model = FaceSwapAutoencoder(model_config_from(state))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state
