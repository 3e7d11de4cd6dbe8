"""What one training run returns (:class:`TrainResult`) and its error: the stage's metrics file and curves are made
of these, so they stay plain frozen records with no torch in them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from faceswap.errors import FaceswapError

# the decoder-grid series of every validation: history keys, Curves fields, grid.csv columns; MLflow logs them as
# val/<key>
GRID_KEYS = ("grid_recon", "grid_swap", "flat_grid")


class TrainingError(FaceswapError, RuntimeError):
    """Training cannot go on (e.g. too many non-finite losses in a row); the last good checkpoint is kept."""


@dataclass(frozen=True)
class Outcome:
    """Where the loop stopped, and why."""

    step: int  # the last step taken
    steps: int  # train.steps
    resumed_from: int | None  # the checkpoint's step this call continued from
    interrupted: int | None  # the signal number that stopped the run, if any
    nonfinite_skipped: int  # steps skipped for a non-finite loss or gradients, over the whole run


@dataclass(frozen=True)
class Best:
    """The best validation loss and its step (the weights of ``model.pt``); None before the first validation."""

    val_loss: float | None
    step: int | None


@dataclass(frozen=True)
class Speed:
    images_per_s: float  # over this call's steps, all ranks together
    wall_s: float  # this call's loop
    world_size: int


@dataclass(frozen=True)
class Curves:
    """The loss history: the mean training loss every ``log_every`` steps, and at every validation the
    validation loss, the same loss on clean training faces and the decoder-grid scores of
    :func:`~faceswap.train.validation.validation_grid` (``grid_recon``, ``grid_swap``, ``flat_grid``); NaN where a
    resumed older checkpoint lacks a series."""

    step: tuple[int, ...]
    loss: tuple[float, ...]
    val_step: tuple[int, ...]
    val_loss: tuple[float, ...]
    train_clean_loss: tuple[float, ...]
    grid_recon: tuple[float, ...] = ()
    grid_swap: tuple[float, ...] = ()
    flat_grid: tuple[float, ...] = ()

    @classmethod
    def from_history(cls, h: dict[str, list[float]]) -> Curves:
        def per_validation(key: str) -> tuple[float, ...]:  # padded at the front: a resume appends to old runs
            vals = list(h.get(key, []))
            return tuple([float("nan")] * (len(h["val_step"]) - len(vals)) + vals)

        return cls(step=tuple(int(s) for s in h["step"]), loss=tuple(h["loss"]),
                   val_step=tuple(int(s) for s in h["val_step"]), val_loss=tuple(h["val_loss"]),
                   train_clean_loss=per_validation("train_clean_loss"), grid_recon=per_validation("grid_recon"),
                   grid_swap=per_validation("grid_swap"), flat_grid=per_validation("flat_grid"))

    @property
    def final_train_loss(self) -> float | None:
        return self.loss[-1] if self.loss else None


@dataclass(frozen=True)
class TrainResult:
    """What one call of :func:`~faceswap.train.train` did: everything the stage's metrics file and curves are made
    of."""

    variant: str
    seed: int
    out_dir: Path
    outcome: Outcome
    best: Best
    speed: Speed
    curves: Curves = field(repr=False)
    mlflow_run_id: str | None
    main: bool  # rank 0, the process that wrote the outputs (under DDP the others return too)
