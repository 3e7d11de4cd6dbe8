"""Stage ``train@<variant>-<seed>``: one decoder variant trained with one seed on the accepted faces.

Reads the accepted manifest ``paths.accepted`` (crops under ``paths.faces``) and trains with
:func:`faceswap.train.train` into the run folder ``paths.run_dir(variant, seed)``, which gets what the library
writes (``model.pt``, ``run.json``, ``previews/``), and the training states a rerun resumes from into
``<models>/<variant>/checkpoints/seed<k>`` (:func:`faceswap.checkpoint.checkpoint_dir`: a separate output, so
``dvc exp run`` keeps them). This stage writes the records DVC reads: the metrics file
``paths.train_metrics_file(variant, seed)`` (:meth:`TrainRecord.to_json`) and the curves
``paths.train_curves_dir(variant, seed)/{train,val,grid}.csv``.
A run stopped by SIGINT/SIGTERM writes neither (it is not finished; rerun to resume), and under DDP only rank 0
writes them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from faceswap.config import ConfigError
from faceswap.files import atomic_write, write_json

if TYPE_CHECKING:
    from faceswap.config import Params
    from faceswap.train import Curves, TrainResult


@dataclass(frozen=True)
class TrainRecord:
    """One training run's summary: the DVC metrics file (``to_json``) and where the run's files are."""

    variant: str
    seed: int
    step: int
    steps: int
    best_val_loss: float | None
    best_step: int | None
    resumed_from: int | None
    interrupted: int | None  # the signal that stopped the run (exit status 128 + it); None: finished
    nonfinite_skipped: int
    images_per_s: float
    wall_s: float
    mlflow_run_id: str | None
    final_train_loss: float | None
    world_size: int
    run_dir: str
    metrics: str | None = None  # the metrics file written; None when none was (interrupted, or not rank 0)
    curves: str | None = None  # the folder of train.csv, val.csv and grid.csv, likewise

    #: the metrics file's keys, in its order (the layout <train_metrics>/<variant>/seed<k>.json has always had)
    METRICS: ClassVar[tuple[str, ...]] = (
        "variant", "step", "steps", "best_val_loss", "best_step", "resumed_from", "interrupted",
        "nonfinite_skipped", "images_per_s", "wall_s", "mlflow_run_id", "final_train_loss", "world_size")

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.METRICS}

    @classmethod
    def of(cls, r: TrainResult) -> TrainRecord:
        o = r.outcome
        return cls(variant=r.variant, seed=r.seed, step=o.step, steps=o.steps, best_val_loss=r.best.val_loss,
                   best_step=r.best.step, resumed_from=o.resumed_from, interrupted=o.interrupted,
                   nonfinite_skipped=o.nonfinite_skipped, images_per_s=r.speed.images_per_s, wall_s=r.speed.wall_s,
                   mlflow_run_id=r.mlflow_run_id, final_train_loss=r.curves.final_train_loss,
                   world_size=r.speed.world_size, run_dir=str(r.out_dir))


def check_variants(params: Params) -> None:
    """Every name of params ``model.variants`` is a registered decoder (model/blocks.py): checked here, where a
    model is built, not when params load, so that the data stages do not depend on the registry's module."""
    from faceswap.model.blocks import check_variant

    for name in params.model.variants:
        try:
            check_variant(name)
        except ValueError as err:
            raise ConfigError(f"model.variants: {err}") from None


def run(params: Params, variant: str, seed: int | None = None) -> TrainRecord:
    """Train ``variant`` with ``seed`` (default ``base.seed``) into ``paths.run_dir``; write its metrics file and
    curves when it finished."""
    from faceswap.train import run_seed, train  # torch: not imported before the command line's arguments are checked

    check_variants(params)
    paths, seed = params.paths, run_seed(params, seed)
    result = train(params, variant, paths.run_dir(variant, seed), manifest=paths.accepted, faces_dir=paths.faces,
                   seed=seed)
    record = TrainRecord.of(result)
    if not result.main or record.interrupted is not None:
        return record
    metrics = write_json(paths.train_metrics_file(variant, seed), record.to_json())
    curves = write_curves(paths.train_curves_dir(variant, seed), result.curves)
    return replace(record, metrics=str(metrics), curves=str(curves))


def write_curves(folder: Path, c: Curves) -> Path:
    """``train.csv`` (step, loss), ``val.csv`` (step, val_loss, train_clean_loss) and ``grid.csv`` (step,
    grid_recon, grid_swap, flat_grid: the decoder grid at every validation, :func:`faceswap.train.validation_grid`):
    the DVC plots."""
    def write(name: str, text: str) -> None:
        atomic_write(folder / name, lambda f: f.write(text.encode()))

    write("train.csv", "step,loss\n" + "".join(f"{s},{v:.6f}\n" for s, v in zip(c.step, c.loss, strict=True)))
    write("val.csv", "step,val_loss,train_clean_loss\n" + "".join(
        f"{s},{v:.6f},{t:.6f}\n" for s, v, t in zip(c.val_step, c.val_loss, c.train_clean_loss, strict=True)))
    write("grid.csv", "step,grid_recon,grid_swap,flat_grid\n" + "".join(
        f"{s},{r:.6f},{w:.6f},{f:.6f}\n"
        for s, r, w, f in zip(c.val_step, c.grid_recon, c.grid_swap, c.flat_grid, strict=True)))
    return folder


def format_record(r: TrainRecord) -> str:
    if r.interrupted is not None:
        return f"interrupted at step {r.step}/{r.steps}; rerun the same command to resume"
    best = f"{r.best_val_loss:.4f} @ step {r.best_step}" if r.best_val_loss is not None else "n/a"
    return (f"trained {r.variant}: {r.step} steps, best val loss {best}, {r.images_per_s:.0f} images/s, "
            f"{r.wall_s:.0f} s → {r.run_dir}" + (f" (MLflow run {r.mlflow_run_id})" if r.mlflow_run_id else ""))
