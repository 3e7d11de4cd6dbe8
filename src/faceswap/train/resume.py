"""Resuming a run: its config and the fingerprint a checkpoint must match, finding the newest readable checkpoint,
and loading it into model, optimiser, scaler, RNG and the run's counters (:class:`Progress`).

A rerun resumes from the newest readable checkpoint with the same fingerprint (a corrupt one falls back to the
previous with a warning); a changed config starts fresh and says so, after deleting the old run's files."""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from faceswap.checkpoint import CheckpointError, CheckpointVersionError, TrainingState, load_training_state
from faceswap.config import Params
from faceswap.train.records import GRID_KEYS
from faceswap.train.runtime import barrier, log

if TYPE_CHECKING:
    from faceswap.train.setup import RunSetup, Trainables

# train settings that change how a run is watched, not what it computes: neither DVC (dvc.yaml's train params list
# every other key; tests/test_train_package.py checks the two agree) nor a resume's fingerprint looks at them
OPERATIONAL_KEYS = ("val_every", "checkpoint_every", "keep_checkpoints", "preview_every", "preview_rows", "log_every",
                    "workers", "max_nonfinite", "mlflow", "compile", "seeds")
# how the same arithmetic runs: DVC reruns the stage when they change (the weights differ in their rounding), but a
# run resumes across them, e.g. an fp32 CPU checkpoint continued under bf16, and the reverse
RESUMABLE_KEYS = ("precision", "channels_last")


def run_seed(params: Params, seed: int | None) -> int:
    """The seed of a run: the one asked for, else ``base.seed`` (the one place that default is applied)."""
    return params.base.seed if seed is None else seed


def _plain(obj: Any) -> Any:
    """Tuples → lists etc., so a config dict survives JSON and ``weights_only`` loads."""
    return json.loads(json.dumps(obj))


def run_config(params: Params, variant: str, data_version: str, seed: int) -> dict[str, Any]:
    """What a run is, as its checkpoints and MLflow record it."""
    return _plain({"variant": variant, "seed": seed, "data_version": data_version, "base": params.base.model_dump(),
                   "model": {k: v for k, v in params.model.model_dump().items() if k != "variants"},
                   "train": params.train.model_dump()})


def fingerprint(cfg: dict[str, Any]) -> str:
    """Hash of everything that changes the computation (not how it is watched): a resume must match it."""
    skip = (*OPERATIONAL_KEYS, *RESUMABLE_KEYS)
    core = dict(cfg, train={k: v for k, v in cfg["train"].items() if k not in skip})
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:16]


def step_checkpoints(folder: Path) -> list[Path]:
    """The step checkpoints in ``folder``, newest first."""
    return sorted(folder.glob("step_*.pt"), reverse=True)


def prune(folder: Path, keep: int) -> None:
    for old in step_checkpoints(folder)[keep:]:
        old.unlink(missing_ok=True)


class ResumeReason(Enum):
    """Why a run starts where it does."""

    NONE_FOUND = "none_found"  # no step checkpoint: a new run
    UNREADABLE = "unreadable"  # step checkpoints, none readable (each warned about): a new run beside them
    RESUMED = "resumed"  # the newest readable checkpoint has this config's fingerprint: continue it
    CONFIG_CHANGED = "config_changed"  # it has another: the old run's files are deleted, a new run starts


@dataclass(frozen=True)
class Resume:
    """What :func:`find_resume` found: the reason, the line the run logs, and the state to continue from."""

    reason: ResumeReason
    message: str
    state: TrainingState | None = field(default=None, repr=False)  # set when RESUMED
    path: Path | None = None  # the checkpoint the decision was made on


def find_resume(folder: Path, fp: str) -> Resume:
    """The newest readable checkpoint in ``folder`` decides: fingerprint ``fp`` resumes it, another starts fresh.

    A damaged checkpoint falls back to the previous one with a warning; one of a layout this code does not read
    (:class:`~faceswap.checkpoint.CheckpointVersionError`) stops the run instead, as starting fresh would
    overwrite a run that is not damaged."""
    paths = step_checkpoints(folder)
    for path in paths:
        try:
            state = load_training_state(path)
        except CheckpointVersionError as err:
            raise CheckpointVersionError(f"{err}; or delete {folder} to start this run afresh") from None
        except CheckpointError as err:
            warnings.warn(f"{err}; falling back to an older checkpoint", RuntimeWarning, stacklevel=2)
            continue
        if state.fingerprint != fp:
            return Resume(ResumeReason.CONFIG_CHANGED,
                          f"config changed since {path} (fingerprint {state.fingerprint} → {fp}): starting fresh",
                          path=path)
        return Resume(ResumeReason.RESUMED, f"resuming from {path} (step {state.step})", state, path)
    if paths:
        return Resume(ResumeReason.UNREADABLE, f"no readable checkpoint ({len(paths)} damaged): starting fresh")
    return Resume(ResumeReason.NONE_FOUND, "no checkpoint: starting fresh")


class LossWindow:
    """Sum and count of the applied steps' training losses since the last log line, kept on the device so adding
    one does not wait for it; float64, so the mean equals summing ``float(loss)`` on the host."""

    def __init__(self, device: torch.device, total: float = 0.0, n: int = 0) -> None:
        self.total = torch.tensor(float(total), dtype=torch.float64, device=device)
        self.n = torch.tensor(int(n), dtype=torch.int64, device=device)

    def add(self, loss: torch.Tensor, ok: torch.Tensor) -> None:
        """Count ``loss`` where ``ok`` (a device bool: the step was applied), with no wait for the device."""
        self.total += torch.where(ok, loss.detach().double(), 0.0)
        self.n += ok.long()

    def mean_and_reset(self) -> float:
        total, n = self.state()
        self.total.zero_()
        self.n.zero_()
        return total / max(n, 1)

    def state(self) -> tuple[float, int]:
        return float(self.total), int(self.n)


@dataclass
class Progress:
    """The counters a checkpoint carries besides weights, so a resumed run continues its numbers too."""

    window: LossWindow  # a resumed run logs the same window means
    step: int = 0
    best_val: float | None = None
    best_step: int | None = None
    nonfinite_total: int = 0
    mlflow_run_id: str | None = None
    resumed_from: int | None = None
    history: dict[str, list[float]] = field(default_factory=lambda: {
        "step": [], "loss": [], "val_step": [], "val_loss": [], "train_clean_loss": [], **{k: [] for k in GRID_KEYS}})


def resume(setup: RunSetup, parts: Trainables) -> Progress:
    """Load the newest checkpoint with the run's fingerprint into model, optimizer, scaler and RNG, or start
    fresh; a changed config first deletes the old run's files so they cannot be mistaken for this run's."""
    rt, out, variant = setup.rt, setup.out, setup.variant
    found = find_resume(setup.ckpt_dir, setup.fp)
    if found.reason is ResumeReason.CONFIG_CHANGED and rt.dist.is_main:
        old = [*setup.ckpt_dir.glob("*.pt"), *(out / "previews").glob("*.png"), out / "model.pt", out / "run.json"]
        for p in old:
            p.unlink(missing_ok=True)
    log(f"train {variant}: {found.message}", rt.dist)
    barrier(rt.dist)  # nobody reads checkpoints the main rank is deleting
    state = found.state
    if found.reason is not ResumeReason.RESUMED or state is None:
        return Progress(LossWindow(rt.device))
    parts.model.load_state_dict(state.model)  # copies into the parameters: they keep this run's memory format
    parts.opt.load_state_dict(state.optimizer)
    _match_layouts(parts.opt)
    if state.scaler and parts.scaler.is_enabled():  # an fp32/bf16 checkpoint has no scale: fp16 starts its own
        parts.scaler.load_state_dict(state.scaler)
    written = (state.precision, state.channels_last)
    if written[0] and written != (rt.precision, rt.channels_last):
        def how(prec: str, cl: bool | None) -> str:
            return f"{prec}{', channels-last' if cl else ''}"

        log(f"train {variant}: checkpoint written in {how(*written)}, continuing in "
            f"{how(rt.precision, rt.channels_last)}", rt.dist)
    torch.set_rng_state(state.rng["torch"])
    if rt.device.type == "cuda" and state.rng.get("cuda") is not None:
        torch.cuda.set_rng_state(state.rng["cuda"], rt.device)
    p = Progress(window=LossWindow(rt.device, *state.loss_window), step=state.step, best_val=state.best_val_loss,
                 best_step=state.best_step, nonfinite_total=state.nonfinite_total,
                 mlflow_run_id=state.mlflow_run_id, resumed_from=state.step)
    p.history.update({k: list(v) for k, v in state.history.items()})
    return p


def _match_layouts(opt: torch.optim.Optimizer) -> None:
    """Give every optimizer state tensor its parameter's strides: a checkpoint written in NCHW and resumed
    channels-last (or the reverse) would otherwise hand the fused AdamW kernels mismatched layouts."""
    for group in opt.param_groups:
        for p in group["params"]:
            for k, v in opt.state.get(p, {}).items():
                if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                    opt.state[p][k] = torch.empty_like(p, dtype=v.dtype).copy_(v)
