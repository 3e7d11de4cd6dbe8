"""One run's live state and the jobs its loop runs now and then: reading the steps' flags, logging, validation,
previews, checkpoints, and the outputs of a finished run (``model.pt``, ``run.json``).

The steps' non-finite flags and loss sums stay on the device (:mod:`faceswap.train.step`); :meth:`Run.after_step`
reads them only after a step where a job is due (log, validation, checkpoint, preview, the last step) or a signal
came. Then each skipped step is warned about by its number, and ``max_nonfinite`` skipped in a row stop the run
(:class:`~faceswap.train.records.TrainingError`) before anything else is written, naming the last checkpoint (its
weights are good: a skipped step never touches them). SIGINT/SIGTERM stop after the step under way, with a
checkpoint; under DDP the ranks agree on a signal at the job boundaries, so all of them stop at the same step."""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from faceswap.checkpoint import ModelFile, TrainingState, load_training_state, save_checkpoint
from faceswap.config import TrainParams
from faceswap.data.dataset import stack_faces
from faceswap.train.records import GRID_KEYS, Best, Curves, Outcome, Speed, TrainingError, TrainResult
from faceswap.train.resume import Progress, prune, step_checkpoints
from faceswap.train.runtime import Runtime, all_reduce, log
from faceswap.train.setup import RunSetup, Trainables
from faceswap.train.step import StepOutput, lr_at
from faceswap.train.validation import (
    grid_references,
    pixel_weight,
    training_preview,
    validation_grid,
    validation_loss,
)

if TYPE_CHECKING:
    from faceswap.metrics.checkerboard import GridReference
    from faceswap.tracking import Tracker


class StopFlag:
    """SIGINT/SIGTERM set a flag that the loop checks after each step (main thread only)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def due(step: int, every: int, last: int) -> bool:
    """Periodic jobs run every ``every`` steps and always at the last step."""
    return step % every == 0 or step == last


class Throughput:
    """Images per second over each log window."""

    def __init__(self) -> None:
        self.since, self.images = time.perf_counter(), 0

    def add(self, images: int) -> None:
        self.images += images

    def lap(self) -> float:
        now = time.perf_counter()
        ips = self.images / max(now - self.since, 1e-9)
        self.since, self.images = now, 0
        return ips


@dataclass
class Run:
    """One training run's live objects and counters, and its periodic jobs. Only the main rank writes or logs:
    ``save`` checks the rank itself, validation and previews run on the main rank only, and the tracker is a
    no-op elsewhere."""

    setup: RunSetup
    parts: Trainables
    tracker: Tracker
    commit: str  # the git commit, recorded in run.json
    progress: Progress
    bar: Any = None  # the progress bar (tqdm), given its postfix at every log line
    consecutive_nonfinite: int = 0
    ips: float = 0.0  # images/s over the last log window
    speed: Throughput = field(default_factory=Throughput)
    pending: list[torch.Tensor] = field(default_factory=list)  # the flags of the steps since the last read
    pending_from: int = 0  # the step number of pending[0]
    last: StepOutput | None = None
    val: dict[str, torch.Tensor] = field(init=False)
    grid_refs: dict[str, GridReference] = field(init=False, repr=False)
    train_clean: dict[str, torch.Tensor] = field(init=False)
    preview_faces: dict[str, torch.Tensor] = field(init=False)

    def __post_init__(self) -> None:
        n, data = self.t.val_images, self.setup.data
        self.val = {i: stack_faces(fs, n) for i, fs in data.val_faces.items()}
        self.grid_refs = grid_references(self.val, self.setup.params.metrics.checkerboard.periods)
        # the same loss on unaugmented training faces: a gap to the (augmented) training loss means the model
        # is learning the augmentation, a gap to val_loss means it is overfitting
        self.train_clean = {i: stack_faces(fs, n) for i, fs in data.train.items()}
        self.preview_faces = {i: stack_faces(fs, self.t.preview_rows) for i, fs in data.val_faces.items()}

    @property
    def t(self) -> TrainParams:
        return self.setup.t

    @property
    def rt(self) -> Runtime:
        return self.setup.rt

    @property
    def ckpt_dir(self) -> Path:
        return self.setup.ckpt_dir

    @property
    def run_id(self) -> str | None:
        return self.tracker.run_id or self.progress.mlflow_run_id

    # --- every step: on the device only

    def add(self, step: int, out: StepOutput, images: int) -> None:
        """Keep step ``step``'s loss and flags (on the device: no wait) and count its images."""
        if not self.pending:
            self.pending_from = step
        self.pending.append(out.flags)
        self.progress.window.add(out.loss, out.ok)
        self.last = out
        self.speed.add(images)

    # --- at the boundaries

    def after_step(self, step: int, signum: int | None) -> int | None:
        """The jobs due once ``step`` steps are done; returns the signal that stops the run, if one came."""
        t, dist = self.t, self.rt.dist
        log_due, val_due, ckpt_due, preview_due = (
            due(step, n, t.steps) for n in (t.log_every, t.val_every, t.checkpoint_every, t.preview_every))
        boundary = log_due or val_due or ckpt_due or preview_due
        if dist.enabled:  # the ranks agree on a signal where they all stop anyway: at a boundary
            signum = self._agreed_signal(signum) if boundary else None
        if not (boundary or signum):
            return None
        self.read_flags()
        if log_due:
            self.ips = self.speed.lap()
            mean = self.log_train(step, lr_at(step - 1, t))
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{mean:.4f}", img_s=f"{self.ips:.0f}", refresh=False)
        if signum:
            self.save(step)
            return signum
        new_best = dist.is_main and val_due and self.validate(step)
        if ckpt_due or new_best:
            self.save(step, best=new_best)
        if dist.is_main and preview_due:
            self.preview(step)
        return None

    def _agreed_signal(self, signum: int | None) -> int | None:
        flag = torch.tensor([float(signum or 0)], device=self.rt.device)
        return int(all_reduce(flag, "max", self.rt.device)[0]) or None

    def read_flags(self) -> None:
        """Read the pending steps' flags (one wait for the device) and count each skipped step."""
        if not self.pending:
            return
        rows, first = torch.stack(self.pending).tolist(), self.pending_from
        self.pending = []
        for k, (bad_loss, bad_grads) in enumerate(rows):
            self.note_nonfinite("loss" if bad_loss else "gradients (finite loss)" if bad_grads else None, first + k)

    def note_nonfinite(self, what: str | None, step: int) -> None:
        """Count a skipped step; ``max_nonfinite`` in a row stop the run (the last good checkpoint stays)."""
        if what is None:
            self.consecutive_nonfinite = 0
            return
        self.consecutive_nonfinite += 1
        self.progress.nonfinite_total += 1
        n = self.consecutive_nonfinite
        log(f"warning: non-finite {what} at step {step}; step skipped ({n} in a row)", self.rt.dist)
        if n >= self.t.max_nonfinite:
            last = step_checkpoints(self.ckpt_dir)
            raise TrainingError(
                f"{n} non-finite steps in a row (steps {step - n + 1}..{step}, "
                f"last: {what}); stopped. Last good checkpoint: {last[0] if last else 'none'}. "
                "Lower train.lr, set train.grad_clip, or use precision fp32/bf16."
            )

    def log_train(self, step: int, lr: float) -> float:
        """Record the window's mean training loss (history and MLflow); returns it for the progress bar."""
        mean = self.progress.window.mean_and_reset()
        self.progress.history["step"].append(step)
        self.progress.history["loss"].append(mean)
        metrics = {"train_loss": mean, "lr": lr, "images_per_s": self.ips}
        terms = self.last.terms if self.last is not None else []
        for name in ("pixel", "lpips", "code_mmd"):
            vals = [float(parts[name].detach()) for parts in terms if name in parts]
            if vals:
                metrics[f"train_{name}"] = sum(vals) / len(vals)
        self.tracker.log_metrics(metrics, step)
        return mean

    def validate(self, step: int) -> bool:
        """Validation and clean-training losses and the decoder grid (main rank); True when this is the best
        validation so far (by the loss alone)."""
        t, rt, h, p = self.t, self.rt, self.progress.history, self.progress
        model, w = self.parts.model, pixel_weight(self.setup.params)
        v = validation_loss(model, self.val, t, rt.device, rt.autocast, rt.channels_last, w)
        vc = validation_loss(model, self.train_clean, t, rt.device, rt.autocast, rt.channels_last, w)
        grid = validation_grid(model, self.val, self.grid_refs, rt.device, rt.autocast, rt.channels_last)
        h["val_step"].append(step)
        h["val_loss"].append(v)
        h["train_clean_loss"].append(vc)
        for k in GRID_KEYS:
            h.setdefault(k, []).append(grid[k])
        self.tracker.log_metrics({"val_loss": v, "train_clean_loss": vc, **{f"val/{k}": grid[k] for k in GRID_KEYS}},
                                 step)
        new_best = p.best_val is None or v < p.best_val
        if new_best:
            p.best_val, p.best_step = v, step
        log(f"step {step}/{t.steps}  loss {h['loss'][-1] if h['loss'] else float('nan'):.4f}"
            f"  val {v:.4f} (best {p.best_val:.4f} @ {p.best_step})  {self.ips:.0f} img/s", rt.dist)
        return new_best

    def preview(self, step: int) -> None:
        """The preview grid of held-out pairs at ``step``, to ``previews/`` and MLflow (main rank)."""
        from faceswap.imageio import write_rgb

        path = self.setup.out / "previews" / f"step_{step:07d}.png"
        write_rgb(path, training_preview(self.parts.model, self.preview_faces, self.rt.device))
        self.tracker.log_artifact(path, "previews")

    # --- checkpoints and outputs

    def training_state(self, step: int) -> TrainingState:
        """A full training state (loads with ``weights_only=True``): what a resume needs to continue exactly."""
        rng = {"torch": torch.get_rng_state()}
        if self.rt.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.rt.device)
        p, t, parts, s = self.progress, self.t, self.parts, self.setup
        return TrainingState(
            model=parts.model.state_dict(), model_config=parts.mcfg.to_dict(), optimizer=parts.opt.state_dict(),
            scaler=parts.scaler.state_dict(), schedule={"kind": t.decay, "step": step, "lr": lr_at(step, t)},
            step=step, variant=s.variant, precision=self.rt.precision, channels_last=self.rt.channels_last,
            best_val_loss=p.best_val, best_step=p.best_step, nonfinite_total=p.nonfinite_total, rng=rng,
            config=s.cfg, fingerprint=s.fp, mlflow_run_id=self.run_id, history=p.history,
            loss_window=p.window.state())

    def save(self, step: int, best: bool = False) -> None:
        """Checkpoint ``step`` (keeping the newest ``keep_checkpoints``), and as ``best.pt`` when it is the best."""
        if not self.rt.dist.is_main:
            return
        st = self.training_state(step)
        save_checkpoint(self.ckpt_dir / f"step_{step:07d}.pt", st)
        prune(self.ckpt_dir, self.t.keep_checkpoints)
        if best:
            save_checkpoint(self.ckpt_dir / "best.pt", st)

    def result(self, step: int, start: int, interrupted: int | None, wall: float, images_per_step: int) -> TrainResult:
        p, s = self.progress, self.setup
        return TrainResult(
            variant=s.variant, seed=s.seed, out_dir=s.out,
            outcome=Outcome(step=step, steps=self.t.steps, resumed_from=p.resumed_from, interrupted=interrupted,
                            nonfinite_skipped=p.nonfinite_total),
            best=Best(val_loss=p.best_val, step=p.best_step),
            speed=Speed(images_per_s=(step - start) * images_per_step / max(wall, 1e-9), wall_s=wall,
                        world_size=self.rt.dist.world),
            curves=Curves.from_history(p.history), mlflow_run_id=self.run_id, main=self.rt.dist.is_main)

    def finish(self, result: TrainResult) -> None:
        """model.pt (best weights) and run.json, both also to MLflow with the run's summary metrics."""
        setup, tracker, out = self.setup, self.tracker, self.setup.out
        best = self.ckpt_dir / "best.pt"
        weights = load_training_state(best).model if best.is_file() else self.parts.model.state_dict()
        save_checkpoint(out / "model.pt", ModelFile(
            model=weights, model_config=self.parts.mcfg.to_dict(), step=result.best.step,
            val_loss=result.best.val_loss, variant=setup.variant, config=setup.cfg, detector=setup.data.detector))
        tracker.log_artifact(out / "model.pt", "model")
        info = {"variant": setup.variant, "mlflow_run_id": tracker.run_id,
                "mlflow_experiment_id": tracker.experiment_id, "tracking_uri": tracker.uri,
                "data_version": setup.cfg["data_version"], "git_commit": self.commit, "steps": result.outcome.step,
                "best_val_loss": result.best.val_loss, "best_step": result.best.step}
        (out / "run.json").write_text(json.dumps(info, indent=2) + "\n")
        tracker.log_artifact(out / "run.json")
        tracker.log_metrics({"best_val_loss": result.best.val_loss or float("nan"),
                             "train_images_per_s": result.speed.images_per_s}, result.outcome.step)
