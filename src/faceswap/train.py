"""Training loop for one decoder variant: ``train(params, variant, out_dir, manifest=..., faces_dir=...)``, the
library under the ``train`` stage (:mod:`faceswap.stages.train`), benchmarks and tests.

Each step reconstructs a batch of every identity through its own decoder (shared encoder), on warped
inputs against clean targets. One code path serves every device:

* device ``cuda`` (auto when present): bf16 autocast (fp16 + GradScaler on GPUs without bf16),
  channels-last, pinned memory and loader workers, optional ``torch.compile``; ``cpu``: bf16 autocast only
  where the CPU has native bf16 (AVX-512-BF16, AMX), channels-last under oneDNN (``faceswap.compute``).
* DDP under ``torchrun`` (NCCL on GPUs, gloo on CPU): ranks read disjoint slices of one deterministic
  data stream; only ``is_main`` logs, previews, validates and saves.
* checkpoints (atomic, ``faceswap.checkpoint``) every N steps, the last K kept plus ``best.pt``, each a
  full :class:`~faceswap.checkpoint.TrainingState` that loads with ``weights_only=True``. A rerun resumes
  from the newest readable checkpoint with the same config fingerprint (a corrupt one falls back to the
  previous with a warning); a changed config starts fresh and says so (:func:`find_resume`).
* a non-finite loss or non-finite gradients skip the step with a warning; ``max_nonfinite`` in a row stop the run
  (:class:`TrainingError`) and leave the last good checkpoint; SIGINT/SIGTERM save and stop cleanly.

Outputs in ``out_dir``: ``model.pt`` (the best-by-validation weights, a :class:`~faceswap.checkpoint.ModelFile`),
``checkpoints/``, ``previews/``, ``run.json``. The stage's records (DVC metrics, loss curves) are written by
:mod:`faceswap.stages.train` from the :class:`TrainResult`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from faceswap.checkpoint import (
    CheckpointError,
    CheckpointVersionError,
    ModelFile,
    TrainingState,
    load_training_state,
    save_checkpoint,
)
from faceswap.compute import ComputeError, ComputePlan, plan_compute
from faceswap.compute_timing import timed_training_plan
from faceswap.config import Params, TrainParams
from faceswap.data.dataset import FaceSet, StepBatches, SwapPairs, load_faces, stack_faces, to_float, worker_init
from faceswap.data.manifest import manifest_detector
from faceswap.devices import resolve_device
from faceswap.errors import FaceswapError
from faceswap.losses import code_mmd, phase_offset, reconstruction_loss, uses_lpips
from faceswap.model import FaceSwapAutoencoder, ModelConfig

if TYPE_CHECKING:
    from faceswap.tracking import Tracker

# settings that change how a run is watched, not what it computes: changing them keeps a resume valid
# (precision and layout are how the same arithmetic runs: a run resumes across them, e.g. an fp32 CPU checkpoint
# continued under bf16, and the reverse)
OPERATIONAL_KEYS = ("val_every", "checkpoint_every", "keep_checkpoints", "preview_every", "preview_rows", "log_every",
                    "workers", "max_nonfinite", "mlflow", "compile", "seeds", "precision", "channels_last")


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
    validation loss, the same loss on clean training faces and the decoder-grid scores of :func:`validation_grid`
    (``grid_recon``, ``grid_swap``, ``flat_grid``); NaN where a resumed older checkpoint lacks a series."""

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
    """What one call of :func:`train` did: everything the stage's metrics file and curves are made of."""

    variant: str
    seed: int
    out_dir: Path
    outcome: Outcome
    best: Best
    speed: Speed
    curves: Curves = field(repr=False)
    mlflow_run_id: str | None
    main: bool  # rank 0, the process that wrote the outputs (under DDP the others return too)


# --- setup helpers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup_distributed(device_kind: str) -> Dist:
    """Join the torchrun process group if WORLD_SIZE > 1 (NCCL for CUDA, gloo for CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def lr_at(step: int, t: TrainParams) -> float:
    """Linear warm-up to ``lr``, then cosine/linear decay to ``min_lr_ratio·lr`` at the last step."""
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    if t.decay == "none":
        return t.lr
    progress = (step - t.warmup_steps) / max(1, t.steps - 1 - t.warmup_steps)
    progress = min(1.0, max(0.0, progress))
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if t.decay == "cosine" else 1.0 - progress
    return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * shape)


def _plain(obj: Any) -> Any:
    """Tuples → lists etc., so a config dict survives JSON and ``weights_only`` loads."""
    return json.loads(json.dumps(obj))


def run_config(params: Params, variant: str, data_version: str, seed: int | None = None) -> dict[str, Any]:
    return _plain({"variant": variant, "seed": params.base.seed if seed is None else seed,
                   "data_version": data_version, "base": params.base.model_dump(),
                   "model": {k: v for k, v in params.model.model_dump().items() if k != "variants"},
                   "train": params.train.model_dump()})


def fingerprint(cfg: dict[str, Any]) -> str:
    """Hash of everything that changes the computation (not how it is watched): a resume must match it."""
    core = dict(cfg, train={k: v for k, v in cfg["train"].items() if k not in OPERATIONAL_KEYS})
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:16]


class SwapModel(nn.Module):
    """One forward for all identities (what DDP and torch.compile want): xs[i] → decoder i.

    The shared encoder runs once over every identity's batch (it has no batch statistics, so the codes are those
    of separate passes); ``with_codes`` also returns each identity's codes, for the code alignment term."""

    def __init__(self, model: FaceSwapAutoencoder, with_codes: bool = False) -> None:
        super().__init__()
        self.model = model
        self.identities = tuple(model.decoders)
        self.with_codes = with_codes

    def forward(self, *xs: torch.Tensor) -> Any:
        codes = self.model.encode(torch.cat(xs)).split([len(x) for x in xs])
        preds = tuple(self.model.decode(z, ident) for z, ident in zip(codes, self.identities, strict=True))
        return (preds, codes) if self.with_codes else preds


def _optimizer(model: nn.Module, t: TrainParams, device: torch.device) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]  # biases and norms
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel over all parameters, on the GPU and on the CPU (bench/train.py, demo model on 2 cores:
    # ~2.4 against ~4 ms per step for the for-loop AdamW, 1.02-1.06x the whole step; equal to rounding)
    return torch.optim.AdamW(groups, lr=t.lr, betas=t.betas, fused=device.type in ("cuda", "cpu"))


# --- checkpoints ---------------------------------------------------------------------------------------


def _step_checkpoints(folder: Path) -> list[Path]:
    return sorted(folder.glob("step_*.pt"), reverse=True)


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
    paths = _step_checkpoints(folder)
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


def _prune(folder: Path, keep: int) -> None:
    for old in _step_checkpoints(folder)[keep:]:
        old.unlink(missing_ok=True)


# --- validation and previews ---------------------------------------------------------------------------


def pixel_weight(params: Params) -> torch.Tensor | None:
    """The pixel term's face weighting (``train.loss.background_weight`` < 1), from the crops' own template; None
    for the plain loss."""
    bw = params.train.loss.background_weight
    if bw >= 1.0:
        return None
    from faceswap.losses import face_weight

    return face_weight(params.base.image_size, params.align.coverage, bw)


@torch.no_grad()
def validation_loss(model: FaceSwapAutoencoder, val: dict[str, torch.Tensor], t: TrainParams,
                    device: torch.device, autocast: Any, channels_last: bool,
                    weight: torch.Tensor | None = None) -> float:
    """Mean over identities of pixel + weight × LPIPS reconstructing held-out faces (no augmentation)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for ident, faces in val.items():
        for chunk in faces.split(32):
            x = to_float(chunk, device, channels_last)
            with autocast():
                pred = model(x, ident)
            loss, _ = reconstruction_loss(pred.float(), model.mask(x).float(), t.loss, with_lpips=True,
                                          weight=weight)
            total += float(loss) * len(chunk)
            count += len(chunk)
    model.train(was_training)
    return total / max(count, 1)


# the decoder-grid series of every validation: history keys, Curves fields, grid.csv columns; MLflow logs them as
# val/<key>
GRID_KEYS = ("grid_recon", "grid_swap", "flat_grid")


def _hwc(x: torch.Tensor) -> list[np.ndarray]:
    return list(x.float().permute(0, 2, 3, 1).cpu().numpy())


class GridReference:
    """One identity's clean val truth as the reference of
    :func:`~faceswap.metrics.checkerboard.decoder_grid_score`, its spectrum computed once per run:
    ``excess(outputs)`` equals ``decoder_grid_score(outputs, truth, periods)["excess"]`` (tested) without
    recomputing the fixed truth's spectrum at every validation, for recons and for the swaps into this identity."""

    def __init__(self, truth: list[np.ndarray], periods: tuple[int, ...]) -> None:
        from faceswap.metrics.checkerboard import _check_periods, _peaks, _set_spectrum

        self.periods = _check_periods(periods)
        peak, bg, _ = _peaks(_set_spectrum(truth, self.periods)[0], self.periods)
        self.floor = np.maximum(1.0, peak / np.maximum(bg, np.finfo(float).tiny))

    def excess(self, outputs: list[np.ndarray]) -> float:
        from faceswap.metrics.checkerboard import _score_power, _set_spectrum

        return _score_power(*_set_spectrum(outputs, self.periods), self.periods, self.floor).score


@torch.no_grad()
def validation_grid(model: FaceSwapAutoencoder, val: dict[str, torch.Tensor], refs: dict[str, GridReference],
                    device: torch.device, autocast: Any, channels_last: bool) -> dict[str, float]:
    """The decoder grid at one validation, as evaluation measures it (docs/metrics.md) but on the val faces:

    * ``grid_recon``: each identity's val reconstructions, the ``excess`` of
      :func:`~faceswap.metrics.checkerboard.decoder_grid_score` over its own val truth, mean over identities
      (evaluation's ``recon_checkerboard_excess``);
    * ``grid_swap``: each identity's val faces through every other decoder, excess over the *target's* val truth,
      the worse direction (evaluation's ``swap_checkerboard_excess``, the registry's gate);
    * ``flat_grid``: :func:`~faceswap.metrics.flatfield.flat_field_probe`'s ``flat_grid_score`` (flat skin, flat
      grey and the val faces' mean code through every decoder, the worst): a grid no face texture can hide.

    ``refs``: each identity's val truth (:class:`GridReference`, the periods are its). Eval mode, no gradients, no
    random numbers: the training computes exactly what it would without this."""
    from faceswap.metrics.flatfield import flat_field_probe

    was_training = model.training
    model.eval()
    try:
        outs: dict[tuple[str, str], list[np.ndarray]] = {}
        for src, faces in val.items():
            for chunk in faces.split(32):
                x = to_float(chunk, device, channels_last)
                with autocast():
                    z = model.encode(x)
                    for dst in val:
                        outs.setdefault((src, dst), []).extend(_hwc(model.decode(z, dst)))
        recon = [refs[i].excess(outs[(i, i)]) for i in val]
        swap = [refs[d].excess(outs[(s, d)]) for s in val for d in val if s != d]
        periods = next(iter(refs.values())).periods
        flat = flat_field_probe(model, val, periods).grid_score
    finally:
        model.train(was_training)
    return {"grid_recon": float(np.mean(recon)), "grid_swap": max(swap, default=float("nan")), "flat_grid": flat}


@torch.no_grad()
def training_preview(model: FaceSwapAutoencoder, faces: dict[str, torch.Tensor], device: torch.device) -> np.ndarray:
    """The seed's grid, one row per held-out pair: A | A rec | A→B | B→A | B rec | B (uint8 HWC), drawn by
    evaluation's :func:`faceswap.pictures.preview_grid` at native size."""
    from faceswap.pictures import preview_grid as draw

    (ia, fa), (ib, fb) = list(faces.items())[:2]
    was_training = model.training
    model.eval()
    xa, xb = to_float(fa, device), to_float(fb, device)
    k = min(len(xa), len(xb))
    xa, xb = xa[:k], xb[:k]
    za, zb = model.encode(xa), model.encode(xb)
    outs = {f"truth_{ia}": xa, f"recon_{ia}": model.decode(za, ia), f"swap_{ia}": model.decode(za, ib),
            f"swap_{ib}": model.decode(zb, ia), f"recon_{ib}": model.decode(zb, ib), f"truth_{ib}": xb}
    model.train(was_training)
    return draw({n: t.float() for n, t in outs.items()}, (ia, ib), k, min_side=1)


# --- the run: setup pieces, state and periodic jobs ------------------------------------------------------


class _StopFlag:
    """SIGINT/SIGTERM set a flag that the loop checks after each step (main thread only)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
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


def _log(msg: str, dist: Dist) -> None:
    if dist.is_main:
        print(msg, file=sys.stderr, flush=True)


def _due(step: int, every: int, last: int) -> bool:
    """Periodic jobs run every ``every`` steps and always at the last step."""
    return step % every == 0 or step == last


@dataclass(frozen=True)
class Runtime:
    """Where and how the arithmetic runs, decided once per run: device, DDP rank, and the compute plan
    (autocast dtype and memory format, :func:`faceswap.compute.plan_compute`)."""

    device: torch.device
    dist: Dist
    plan: ComputePlan

    @property
    def precision(self) -> str:  # fp32 | bf16 | fp16
        return self.plan.precision

    @property
    def channels_last(self) -> bool:
        return self.plan.channels_last

    def autocast(self) -> contextlib.AbstractContextManager:
        return self.plan.autocast()


def setup_runtime(t: TrainParams) -> Runtime:
    """Resolve the device (joining DDP under torchrun) and the compute plan; enable the fast CUDA math modes."""
    device_kind = resolve_device(t.device, "train.device")
    dist = setup_distributed(device_kind)
    device = torch.device(f"cuda:{dist.local_rank}" if device_kind == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    try:
        plan = plan_compute(device, t.precision, t.channels_last, setting="train")
    except ComputeError as err:
        raise TrainingError(str(err)) from None
    return Runtime(device, dist, plan)


@dataclass(frozen=True)
class RunData:
    """The faces one run reads: the training stream's source and the fixed sets for validation and previews."""

    manifest: Path
    version: str  # md5 of the manifest, recorded with the run
    detector: dict | None  # recorded with the model: serving detects as the crops were made
    train: dict[str, FaceSet]
    val_faces: dict[str, FaceSet]


def load_run_data(params: Params, manifest: Path, faces_dir: str | Path | None) -> RunData:
    """Every accepted train and val crop of the run's identities, with the manifest's version and detector."""
    from faceswap.tracking import file_md5

    ids, size = params.base.identities, params.base.image_size
    train = load_faces(manifest, ids, "train", size, faces_dir)  # first: its errors name a bad manifest clearly
    val = load_faces(manifest, ids, "val", size, faces_dir)
    return RunData(manifest=manifest, version=file_md5(manifest), detector=manifest_detector(manifest), train=train,
                   val_faces=val)


@dataclass(frozen=True)
class RunSetup:
    """What one run is, decided once before its first step: the params, variant and seed, the run folder, where
    the arithmetic runs, the faces it reads, and its config with the fingerprint a resume must match."""

    params: Params
    variant: str
    seed: int
    out: Path
    rt: Runtime
    data: RunData
    cfg: dict[str, Any]  # run_config: what the checkpoints and MLflow record
    fp: str  # fingerprint(cfg)

    @property
    def t(self) -> TrainParams:
        return self.params.train

    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"


def setup_run(params: Params, variant: str, out_dir: str | Path, *, manifest: str | Path,
              faces_dir: str | Path | None, seed: int | None = None) -> RunSetup:
    """Device and compute plan (joining DDP under torchrun), the run's faces, its config and fingerprint."""
    rt = setup_runtime(params.train)
    if not rt.dist.enabled:  # auto on a CPU: the fastest plan for this model (DDP ranks keep the rules, alike)
        t = params.train
        rt = replace(rt, plan=timed_training_plan(rt.plan, model_config(params, variant), t.loss, t.batch_size))
    data = load_run_data(params, Path(manifest), faces_dir)
    seed = params.base.seed if seed is None else seed
    cfg = run_config(params, variant, data.version, seed)
    return RunSetup(params=params, variant=variant, seed=seed, out=Path(out_dir), rt=rt, data=data, cfg=cfg,
                    fp=fingerprint(cfg))


@dataclass(frozen=True)
class Trainables:
    """What a step changes: the model (and the config that rebuilds it), the optimiser and the loss scaler."""

    model: FaceSwapAutoencoder
    mcfg: ModelConfig
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler


def model_config(params: Params, variant: str) -> ModelConfig:
    m = params.model
    return ModelConfig(image_size=params.base.image_size, width=m.width, bottleneck_channels=m.bottleneck_channels,
                       encoder_stages=m.encoder_stages, max_channels=m.max_channels, decoder=variant,
                       identities=tuple(params.base.identities), input_mask=m.input_mask,
                       mask_coverage=params.align.coverage, input_fill=m.input_fill)


def build_model(params: Params, variant: str, rt: Runtime) -> tuple[FaceSwapAutoencoder, ModelConfig]:
    """The autoencoder with ``variant``'s decoders, on the run's device and memory format (weights from the seed)."""
    mcfg = model_config(params, variant)
    model = FaceSwapAutoencoder(mcfg).to(rt.device)
    return (model.to(memory_format=torch.channels_last) if rt.channels_last else model), mcfg


def wrap_model(model: FaceSwapAutoencoder, t: TrainParams, rt: Runtime) -> nn.Module:
    """The module the loop calls: one forward for all identities, compiled and/or DDP-wrapped as asked."""
    net: nn.Module = SwapModel(model, with_codes=t.loss.code_mmd > 0)
    if t.compile:
        net = torch.compile(net)
    if rt.dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(net, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    return net


def default_workers(device: torch.device) -> int:
    """``train.workers: null``: on a GPU host min(16, CPUs − 1) processes feed the device; on the CPU the step's
    own threads use every core, and a worker beside them stalls them (bench/train.py, 2 cores: one worker
    0.79× of augmenting inline between steps), so the batches are made in the training process."""
    if device.type == "cpu":
        return 0
    return max(0, min(16, (os.cpu_count() or 1) - 1))


def make_loader(setup: RunSetup, start: int) -> torch.utils.data.DataLoader:
    """This rank's slice of the deterministic batch stream from step ``start`` (so a resume continues it)."""
    t, rt = setup.t, setup.rt
    workers = t.workers if t.workers is not None else default_workers(rt.device)
    return torch.utils.data.DataLoader(
        SwapPairs(setup.data.train, t.augment, setup.seed, setup.params.align.coverage),
        batch_sampler=StepBatches(start, t.steps, t.batch_size, rt.dist.rank, rt.dist.world),
        num_workers=workers, pin_memory=rt.device.type == "cuda",
        prefetch_factor=4 if workers else None, persistent_workers=False, worker_init_fn=worker_init,
    )


class LossWindow:
    """Sum of the training losses since the last log line, kept on the device so adding one does not wait for
    the GPU; float64, so the mean equals summing ``float(loss)`` on the host."""

    def __init__(self, device: torch.device, total: float = 0.0, n: int = 0) -> None:
        self.total = torch.tensor(float(total), dtype=torch.float64, device=device)
        self.n = n

    def add(self, loss: torch.Tensor) -> None:
        self.total += loss.detach().double()
        self.n += 1

    def mean_and_reset(self) -> float:
        mean = float(self.total) / max(self.n, 1)
        self.total.zero_()
        self.n = 0
        return mean

    def state(self) -> list[float | int]:
        return [float(self.total), self.n]


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
    _log(f"train {variant}: {found.message}", rt.dist)
    if rt.dist.enabled:
        torch.distributed.barrier()  # nobody reads checkpoints the main rank is deleting
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

        _log(f"train {variant}: checkpoint written in {how(*written)}, continuing in "
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


def start_tracking(setup: RunSetup, run_id: str | None) -> tuple[Tracker, str]:
    """Open (or reopen, on resume) the MLflow run on the main rank, tagged so runs group by variant, seed and
    experiment; returns the tracker and the git commit."""
    from faceswap.tracking import GROUP_ENV, git_commit, start_run

    params, cfg, fp, data, rt = setup.params, setup.cfg, setup.fp, setup.data, setup.rt
    commit = git_commit()
    group = os.environ.get(GROUP_ENV) or hashlib.sha256(json.dumps(
        [commit, data.version, {k: v for k, v in cfg.items() if k != "variant"}], sort_keys=True).encode()
    ).hexdigest()[:12]
    variant, seed = cfg["variant"], cfg["seed"]
    tags = {"variant": variant, "seed": str(seed), "data_version": data.version, "git_commit": commit,
            "faceswap.group": group, "config_fingerprint": fp, "device": str(rt.device), "precision": rt.precision,
            "world_size": str(rt.dist.world)}
    tracker = start_run(params, f"{variant}-seed{seed}", run_id, tags, enabled=params.train.mlflow and rt.dist.is_main)
    if rt.dist.is_main:
        tracker.log_params({**cfg, **rt.plan.params(), "data_path": str(data.manifest),
                            "train_faces": {i: len(f) for i, f in data.train.items()}})
        if run_id is None:  # a new run: what it trains on, as the UI's Dataset column (a resume has it already)
            from faceswap.tracking import TRAINING, log_manifest_input

            log_manifest_input(tracker, data.manifest, TRAINING, dvc_hash=data.version, commit=commit)
    return tracker, commit


def _grad_norm(model: nn.Module, grad_clip: float | None) -> torch.Tensor:
    """The total gradient norm (clipping to ``grad_clip`` when set); stays on the device."""
    if grad_clip is not None:
        return torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    return torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])


def check_step(loss: torch.Tensor, norm: torch.Tensor, check_grads: bool, signum: int | None,
               rt: Runtime) -> tuple[str | None, int]:
    """What was non-finite this step (None: take the step) and the stop signal, agreed by all ranks.

    The step's one wait for the GPU: both checks and the signal travel in one tensor (one all_reduce under
    DDP). fp16 passes ``check_grads=False``: GradScaler skips steps with inf/NaN gradients itself."""
    bad_grads = ~torch.isfinite(norm) if check_grads else torch.zeros((), dtype=torch.bool, device=norm.device)
    flags = torch.stack([~torch.isfinite(loss.detach()), bad_grads]).float()
    if rt.dist.enabled:
        flags = torch.cat([flags, torch.tensor([float(signum or 0)], device=flags.device)])
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
    bad_loss, bad_grad, *sig = flags.tolist()
    what = "loss" if bad_loss else "gradients (finite loss)" if bad_grad else None
    return what, int(sig[0]) if sig else (signum or 0)


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
    """One training run's live objects and counters, and the jobs the loop runs now and then: log, validate,
    preview, checkpoint. Only the main rank writes or logs: ``save`` checks the rank itself, the loop calls
    ``validate`` and ``preview`` on the main rank only, and the tracker is a no-op elsewhere."""

    setup: RunSetup
    parts: Trainables
    tracker: Tracker
    commit: str  # the git commit, recorded in run.json
    progress: Progress
    consecutive_nonfinite: int = 0
    val: dict[str, torch.Tensor] = field(init=False)
    grid_refs: dict[str, GridReference] = field(init=False, repr=False)
    train_clean: dict[str, torch.Tensor] = field(init=False)
    preview_faces: dict[str, torch.Tensor] = field(init=False)

    def __post_init__(self) -> None:
        n, data = self.t.val_images, self.setup.data
        self.val = {i: stack_faces(fs, n) for i, fs in data.val_faces.items()}
        periods = self.setup.params.metrics.checkerboard.periods
        self.grid_refs = {i: GridReference(_hwc(faces.float() / 255.0), periods) for i, faces in self.val.items()}
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
    def model(self) -> FaceSwapAutoencoder:
        return self.parts.model

    @property
    def ckpt_dir(self) -> Path:
        return self.setup.ckpt_dir

    @property
    def run_id(self) -> str | None:
        return self.tracker.run_id or self.progress.mlflow_run_id

    def training_state(self, step: int) -> TrainingState:
        """A full training state (loads with ``weights_only=True``): what a resume needs to continue exactly."""
        rng = {"torch": torch.get_rng_state()}
        if self.rt.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.rt.device)
        p, t, parts, s = self.progress, self.t, self.parts, self.setup
        total, n = p.window.state()
        return TrainingState(
            model=parts.model.state_dict(), model_config=parts.mcfg.to_dict(), optimizer=parts.opt.state_dict(),
            scaler=parts.scaler.state_dict(), schedule={"kind": t.decay, "step": step, "lr": lr_at(step, t)},
            step=step, variant=s.variant, precision=self.rt.precision, channels_last=self.rt.channels_last,
            best_val_loss=p.best_val, best_step=p.best_step, nonfinite_total=p.nonfinite_total, rng=rng,
            config=s.cfg, fingerprint=s.fp, mlflow_run_id=self.run_id, history=p.history,
            loss_window=(total, n))

    def save(self, step: int, best: bool = False) -> None:
        """Checkpoint ``step`` (keeping the newest ``keep_checkpoints``), and as ``best.pt`` when it is the best."""
        if not self.rt.dist.is_main:
            return
        st = self.training_state(step)
        save_checkpoint(self.ckpt_dir / f"step_{step:07d}.pt", st)
        _prune(self.ckpt_dir, self.t.keep_checkpoints)
        if best:
            save_checkpoint(self.ckpt_dir / "best.pt", st)

    def note_nonfinite(self, what: str | None, step: int) -> None:
        """Count a skipped step; ``max_nonfinite`` in a row stop the run (the last good checkpoint stays)."""
        if what is None:
            self.consecutive_nonfinite = 0
            return
        self.consecutive_nonfinite += 1
        self.progress.nonfinite_total += 1
        n = self.consecutive_nonfinite
        _log(f"warning: non-finite {what} at step {step}; step skipped ({n} in a row)", self.rt.dist)
        if n >= self.t.max_nonfinite:
            last = _step_checkpoints(self.ckpt_dir)
            raise TrainingError(
                f"{n} non-finite steps in a row (steps {step - n + 1}..{step}, "
                f"last: {what}); stopped. Last good checkpoint: {last[0] if last else 'none'}. "
                "Lower train.lr, set train.grad_clip, or use precision fp32/bf16."
            )

    def log_train(self, step: int, lr: float, parts: list[tuple[torch.Tensor, dict[str, torch.Tensor]]],
                  ips: float) -> float:
        """Record the window's mean training loss (history and MLflow); returns it for the progress bar."""
        mean = self.progress.window.mean_and_reset()
        self.progress.history["step"].append(step)
        self.progress.history["loss"].append(mean)
        metrics = {"train_loss": mean, "lr": lr, "images_per_s": ips}
        for name in ("pixel", "lpips", "code_mmd"):
            vals = [float(terms[name].detach()) for _, terms in parts if name in terms]
            if vals:
                metrics[f"train_{name}"] = sum(vals) / len(vals)
        self.tracker.log_metrics(metrics, step)
        return mean

    def validate(self, step: int, ips: float) -> bool:
        """Validation and clean-training losses and the decoder grid (main rank); True when this is the best
        validation so far (by the loss alone)."""
        t, rt, h, p = self.t, self.rt, self.progress.history, self.progress
        w = pixel_weight(self.setup.params)
        v = validation_loss(self.model, self.val, t, rt.device, rt.autocast, rt.channels_last, w)
        vc = validation_loss(self.model, self.train_clean, t, rt.device, rt.autocast, rt.channels_last, w)
        grid = validation_grid(self.model, self.val, self.grid_refs, rt.device, rt.autocast, rt.channels_last)
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
        _log(f"step {step}/{t.steps}  loss {h['loss'][-1] if h['loss'] else float('nan'):.4f}"
             f"  val {v:.4f} (best {p.best_val:.4f} @ {p.best_step})  {ips:.0f} img/s", rt.dist)
        return new_best

    def preview(self, step: int) -> None:
        """The preview grid of held-out pairs at ``step``, to ``previews/`` and MLflow (main rank)."""
        from faceswap.imageio import write_rgb

        path = self.setup.out / "previews" / f"step_{step:07d}.png"
        write_rgb(path, training_preview(self.model, self.preview_faces, self.rt.device))
        self.tracker.log_artifact(path, "previews")


# --- the loop ------------------------------------------------------------------------------------------


def train(
    params: Params,
    variant: str,
    out_dir: str | Path,
    *,
    manifest: str | Path,
    faces_dir: str | Path | None,
    seed: int | None = None,
    progress: bool | None = None,
) -> TrainResult:
    """Train ``variant`` on the accepted faces of ``manifest`` and write its outputs to ``out_dir`` (module doc).

    ``faces_dir``: the folder the manifest's crop paths are relative to (None: the manifest's own folder);
    ``seed`` (default ``base.seed``) seeds the weights and the augmentation stream of this run; ``progress``
    None shows a bar only on a terminal.
    """
    from tqdm import tqdm

    # setup: device and precision, data, model and optimizer, resume, tracking
    setup = setup_run(params, variant, out_dir, manifest=manifest, faces_dir=faces_dir, seed=seed)
    t, rt = params.train, setup.rt
    dist, device = rt.dist, rt.device
    torch.manual_seed(setup.seed)
    model, mcfg = build_model(params, variant, rt)
    opt = _optimizer(model, t, device)
    scaler = torch.amp.GradScaler(device.type, enabled=rt.precision == "fp16")
    trainables = Trainables(model=model, mcfg=mcfg, opt=opt, scaler=scaler)
    _log(f"train {variant}: {rt.plan.describe()}", dist)
    prog = resume(setup, trainables)
    start = prog.step
    net = wrap_model(model, t, rt)
    loader = make_loader(setup, start)
    tracker, commit = start_tracking(setup, prog.mlflow_run_id)
    run = Run(setup=setup, parts=trainables, tracker=tracker, commit=commit, progress=prog)

    identities = params.base.identities
    images_per_step = t.batch_size * len(identities) * dist.world
    bar = tqdm(total=t.steps, initial=start, unit="step", desc=f"train {variant}", file=sys.stderr,
               disable=(not dist.is_main) or (progress is False) or (None if progress is None else False),
               dynamic_ncols=True)
    step, ips, speed = start, 0.0, Throughput()
    weight = pixel_weight(params)
    if weight is not None:
        weight = weight.to(device)
    t_start = time.perf_counter()
    status = "FAILED"
    flag = _StopFlag()
    try:
        with flag:
            net.train()
            for step, batch in zip(range(start, t.steps), loader, strict=False):
                lr = lr_at(step, t)
                for g in opt.param_groups:
                    g["lr"] = lr
                xs = [to_float(batch[f"{i}_in"], device, rt.channels_last) for i in identities]
                ys = [to_float(batch[f"{i}_target"], device, rt.channels_last) for i in identities]
                with_lp = uses_lpips(t.loss, step)
                phase = phase_offset(setup.seed, step, t.loss.lpips_shift)
                with rt.autocast():
                    preds, codes = net(*xs) if t.loss.code_mmd > 0 else (net(*xs), None)
                    # a masked-input model learns to draw the face on grey: its targets lose the background too
                    parts = [reconstruction_loss(pr, model.mask(y), t.loss, with_lp, offset=phase, weight=weight)
                             for pr, y in zip(preds, ys, strict=True)]
                loss = sum(part[0] for part in parts)
                if codes is not None:
                    mmd = code_mmd(codes[0], codes[1])
                    parts[0][1]["code_mmd"] = mmd
                    loss = loss + t.loss.code_mmd * mmd
                # backward even through a non-finite loss (its step is skipped below): the checks then cost one
                # wait for the GPU instead of one before and one after the backward pass
                scaler.scale(loss).backward()
                scaler.unscale_(opt)  # a no-op when the scaler is off (fp32, bf16)
                norm = _grad_norm(model, t.grad_clip)
                what, signum = check_step(loss, norm, not scaler.is_enabled(), flag.signum, rt)
                if what is None:
                    scaler.step(opt)
                    scaler.update()
                    prog.window.add(loss)
                elif scaler.is_enabled():
                    scaler.update(new_scale=scaler.get_scale())  # forget the skipped step, keep the scale as it was
                opt.zero_grad(set_to_none=True)
                run.note_nonfinite(what, step)
                step += 1
                speed.add(images_per_step)
                bar.update(1)

                # periodic jobs
                if _due(step, t.log_every, t.steps):
                    ips = speed.lap()
                    mean = run.log_train(step, lr, parts, ips)
                    bar.set_postfix(loss=f"{mean:.4f}", img_s=f"{ips:.0f}", refresh=False)
                if signum:
                    run.save(step)
                    flag.signum = signum
                    break
                new_best = dist.is_main and _due(step, t.val_every, t.steps) and run.validate(step, ips)
                if _due(step, t.checkpoint_every, t.steps) or new_best:
                    run.save(step, best=new_best)
                if dist.is_main and _due(step, t.preview_every, t.steps):
                    run.preview(step)

        # finish: model.pt and run.json (or a resumable stop on a signal)
        bar.close()
        wall = time.perf_counter() - t_start
        result = TrainResult(
            variant=variant, seed=setup.seed, out_dir=setup.out,
            outcome=Outcome(step=step, steps=t.steps, resumed_from=prog.resumed_from, interrupted=flag.signum,
                            nonfinite_skipped=prog.nonfinite_total),
            best=Best(val_loss=prog.best_val, step=prog.best_step),
            speed=Speed(images_per_s=(step - start) * images_per_step / max(wall, 1e-9), wall_s=wall,
                        world_size=dist.world),
            curves=Curves.from_history(prog.history), mlflow_run_id=run.run_id, main=dist.is_main)
        if flag.signum is not None:
            _log(f"train {variant}: stopped by signal {flag.signum} at step {step}; checkpoint saved, rerun to resume",
                 dist)
            status = "KILLED"
            return result
        if dist.enabled:
            _check_ranks_agree(model)
        if dist.is_main:
            _finish(run, result)
        status = "FINISHED"
        return result
    finally:
        bar.close()
        tracker.end(status)
        if dist.enabled:
            with contextlib.suppress(Exception):
                torch.distributed.barrier()


def _check_ranks_agree(model: nn.Module) -> None:
    """DDP keeps replicas identical; verify it (max over ranks minus min over ranks of every weight)."""
    import torch.distributed as dist

    # on the parameters' own device: NCCL reduces CUDA tensors only (a .cpu() here crashed every multi-GPU run
    # after its last step), gloo reduces CPU tensors
    flat = torch.cat([p.detach().float().reshape(-1) for p in model.parameters()])
    hi, lo = flat.clone(), flat.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    spread = float((hi - lo).abs().max())
    if spread > 1e-6:
        raise TrainingError(f"DDP replicas diverged: weights differ by up to {spread:g} between ranks")


def _finish(run: Run, result: TrainResult) -> None:
    """model.pt (best weights) and run.json, both also to MLflow with the run's summary metrics."""
    setup, tracker, out = run.setup, run.tracker, run.setup.out
    best = run.ckpt_dir / "best.pt"
    weights = load_training_state(best).model if best.is_file() else run.model.state_dict()
    save_checkpoint(out / "model.pt", ModelFile(
        model=weights, model_config=run.parts.mcfg.to_dict(), step=result.best.step, val_loss=result.best.val_loss,
        variant=setup.variant, config=setup.cfg, detector=setup.data.detector))
    tracker.log_artifact(out / "model.pt", "model")
    info = {"variant": setup.variant, "mlflow_run_id": tracker.run_id, "mlflow_experiment_id": tracker.experiment_id,
            "tracking_uri": tracker.uri, "data_version": setup.cfg["data_version"], "git_commit": run.commit,
            "steps": result.outcome.step, "best_val_loss": result.best.val_loss, "best_step": result.best.step}
    (out / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    tracker.log_artifact(out / "run.json")
    tracker.log_metrics({"best_val_loss": result.best.val_loss or float("nan"),
                         "train_images_per_s": result.speed.images_per_s}, result.outcome.step)
