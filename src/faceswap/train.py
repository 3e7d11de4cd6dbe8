"""Training loop for one decoder variant: ``train(params, variant, out_dir)``, shared by CLI, Prefect and tests.

Each step reconstructs a batch of every identity through its own decoder (shared encoder), on warped
inputs against clean targets. One code path serves every device:

* device ``cuda`` (auto when present): bf16 autocast (fp16 + GradScaler on GPUs without bf16),
  channels-last, pinned memory and loader workers, optional ``torch.compile``; ``cpu``: fp32.
* DDP under ``torchrun`` (NCCL on GPUs, gloo on CPU): ranks read disjoint slices of one deterministic
  data stream; only ``is_main`` logs, previews, validates and saves.
* checkpoints (atomic, ``faceswap.checkpoint``) every N steps, the last K kept plus ``best.pt``, each a
  full training state that loads with ``weights_only=True``. A rerun resumes from the newest readable
  checkpoint with the same config fingerprint (a corrupt one falls back to the previous with a
  warning); a changed config starts fresh and says so.
* a non-finite loss skips the step with a warning; ``max_nonfinite`` in a row stop the run
  (:class:`TrainingError`) and leave the last good checkpoint; SIGINT/SIGTERM save and stop cleanly.

Outputs in ``out_dir``: ``model.pt`` (the best-by-validation weights: ``model``, ``model_config``,
``step``, ``val_loss``, ``variant``), ``checkpoints/``, ``previews/``, ``run.json``; optionally a
metrics JSON and loss-curve CSVs for DVC.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from faceswap.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from faceswap.config import Params, TrainParams
from faceswap.data.dataset import StepBatches, SwapPairs, load_faces, stack_faces, to_float, worker_init
from faceswap.data.manifest import manifest_detector
from faceswap.devices import resolve_device
from faceswap.errors import FaceswapError
from faceswap.losses import reconstruction_loss, uses_lpips
from faceswap.model import FaceSwapAutoencoder, ModelConfig

# settings that change how a run is watched, not what it computes: changing them keeps a resume valid
OPERATIONAL_KEYS = ("val_every", "checkpoint_every", "keep_checkpoints", "preview_every", "preview_rows", "log_every",
                    "workers", "max_nonfinite", "mlflow", "compile", "data", "faces_dir", "seeds")


class TrainingError(FaceswapError, RuntimeError):
    """Training cannot go on (e.g. too many non-finite losses in a row); the last good checkpoint is kept."""


@dataclass
class TrainResult:
    variant: str
    out_dir: str
    step: int
    steps: int
    best_val_loss: float | None
    best_step: int | None
    resumed_from: int | None
    interrupted: int | None  # the signal number that stopped the run, if any
    nonfinite_skipped: int
    images_per_s: float
    wall_s: float
    mlflow_run_id: str | None
    history: dict[str, list[float]] = field(default_factory=dict, repr=False)


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


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise TrainingError("precision fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
    return precision


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
    """One forward for all identities (what DDP and torch.compile want): xs[i] → decoder i."""

    def __init__(self, model: FaceSwapAutoencoder) -> None:
        super().__init__()
        self.model = model
        self.identities = tuple(model.decoders)

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model(x, ident) for x, ident in zip(xs, self.identities, strict=True))


def _optimizer(model: nn.Module, t: TrainParams, device: torch.device) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]  # biases and norms
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=t.lr, betas=t.betas, fused=device.type == "cuda")


# --- checkpoints ---------------------------------------------------------------------------------------


def _step_checkpoints(folder: Path) -> list[Path]:
    return sorted(folder.glob("step_*.pt"), reverse=True)


def find_resume(folder: Path, fp: str) -> tuple[dict[str, Any] | None, str]:
    """Newest readable checkpoint with fingerprint ``fp``; returns (state or None, what happened)."""
    for path in _step_checkpoints(folder):
        try:
            state = load_checkpoint(path)
        except CheckpointError as err:
            warnings.warn(f"{err}; falling back to an older checkpoint", RuntimeWarning, stacklevel=2)
            continue
        if state.get("fingerprint") != fp:
            return None, f"config changed since {path} (fingerprint {state.get('fingerprint')} → {fp}): starting fresh"
        return state, f"resuming from {path} (step {state['step']})"
    return None, "no checkpoint: starting fresh"


def _prune(folder: Path, keep: int) -> None:
    for old in _step_checkpoints(folder)[keep:]:
        old.unlink(missing_ok=True)


# --- validation and previews ---------------------------------------------------------------------------


@torch.no_grad()
def validation_loss(model: FaceSwapAutoencoder, val: dict[str, torch.Tensor], t: TrainParams,
                    device: torch.device, autocast: Any, channels_last: bool) -> float:
    """Mean over identities of pixel + weight × LPIPS reconstructing held-out faces (no augmentation)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for ident, faces in val.items():
        for chunk in faces.split(32):
            x = to_float(chunk, device, channels_last)
            with autocast():
                pred = model(x, ident)
            loss, _ = reconstruction_loss(pred.float(), x.float(), t.loss, with_lpips=True)
            total += float(loss) * len(chunk)
            count += len(chunk)
    model.train(was_training)
    return total / max(count, 1)


@torch.no_grad()
def preview_grid(model: FaceSwapAutoencoder, faces: dict[str, torch.Tensor], device: torch.device) -> np.ndarray:
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


# --- the loop ------------------------------------------------------------------------------------------


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


def train(
    params: Params,
    variant: str,
    out_dir: str | Path,
    *,
    data: str | Path | None = None,
    faces_dir: str | Path | None = "params",
    metrics_path: str | Path | None = None,
    curves_dir: str | Path | None = None,
    progress: bool | None = None,
    seed: int | None = None,
) -> TrainResult:
    """Train ``variant`` on the accepted faces and write its outputs to ``out_dir`` (see the module doc).

    ``data``/``faces_dir`` default to ``params.train``; ``progress`` None shows a bar only on a terminal;
    ``seed`` (default ``base.seed``) seeds the weights and the augmentation stream of this run.
    """
    from faceswap.tracking import GROUP_ENV, file_md5, git_commit, start_run

    t = params.train
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    device_kind = resolve_device(t.device, "train.device")
    dist = setup_distributed(device_kind)
    device = torch.device(f"cuda:{dist.local_rank}" if device_kind == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    precision = resolve_precision(t.precision, device)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def autocast() -> contextlib.AbstractContextManager:
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=amp_dtype)

    channels_last = t.channels_last if t.channels_last is not None else device.type == "cuda"

    # data
    manifest = Path(data if data is not None else t.data)
    root = t.faces_dir if faces_dir == "params" else faces_dir
    identities = params.base.identities
    size = params.base.image_size
    train_faces = load_faces(manifest, identities, "train", size, root)
    val_faces = load_faces(manifest, identities, "val", size, root)
    data_version = file_md5(manifest)
    detector = manifest_detector(manifest)  # recorded with the model: serving detects as the crops were made

    seed = params.base.seed if seed is None else seed
    cfg = run_config(params, variant, data_version, seed)
    fp = fingerprint(cfg)
    torch.manual_seed(seed)
    mcfg = ModelConfig(image_size=size, width=params.model.width, bottleneck_channels=params.model.bottleneck_channels,
                       encoder_stages=params.model.encoder_stages, max_channels=params.model.max_channels,
                       decoder=variant, identities=tuple(identities))
    model = FaceSwapAutoencoder(mcfg).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = _optimizer(model, t, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    # resume or start fresh
    state, how = find_resume(ckpt_dir, fp)
    if state is None and dist.is_main and "config changed" in how:
        for p in [*ckpt_dir.glob("*.pt"), *(out / "previews").glob("*.png"), out / "model.pt", out / "run.json"]:
            p.unlink(missing_ok=True)
    _log(f"train {variant}: {how}", dist)
    if dist.enabled:
        torch.distributed.barrier()  # nobody reads checkpoints the main rank is deleting
    start, best_val, best_step, nonfinite_total, run_id = 0, None, None, 0, None
    history: dict[str, list[float]] = {"step": [], "loss": [], "val_step": [], "val_loss": [], "train_clean_loss": []}
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start, best_val, best_step = state["step"], state["best_val_loss"], state["best_step"]
        nonfinite_total, run_id = state["nonfinite_total"], state.get("mlflow_run_id")
        history = {**history, **{k: list(v) for k, v in state["history"].items()}}
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
    resumed_from = start if state is not None else None

    net: nn.Module = SwapModel(model)
    if t.compile:
        net = torch.compile(net)
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)

    workers = t.workers if t.workers is not None else max(0, min(16, (os.cpu_count() or 1) - 1))
    loader = torch.utils.data.DataLoader(
        SwapPairs(train_faces, t.augment, seed),
        batch_sampler=StepBatches(start, t.steps, t.batch_size, dist.rank, dist.world),
        num_workers=workers, pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None, persistent_workers=False, worker_init_fn=worker_init,
    )
    val = {i: stack_faces(fs, t.val_images) for i, fs in val_faces.items()}
    # the same loss on unaugmented training faces: a gap to the (augmented) training loss means the model
    # is learning the augmentation, a gap to val_loss means it is overfitting
    train_clean = {i: stack_faces(fs, t.val_images) for i, fs in train_faces.items()}
    preview_faces = {i: stack_faces(fs, t.preview_rows) for i, fs in val_faces.items()}

    # tracking (main rank only)
    commit = git_commit()
    group = os.environ.get(GROUP_ENV) or hashlib.sha256(json.dumps(
        [commit, data_version, {k: v for k, v in cfg.items() if k != "variant"}], sort_keys=True).encode()
    ).hexdigest()[:12]
    tags = {"variant": variant, "seed": str(seed), "data_version": data_version, "git_commit": commit,
            "faceswap.group": group, "config_fingerprint": fp, "device": str(device), "precision": precision,
            "world_size": str(dist.world)}
    tracker = start_run(params, f"{variant}-seed{seed}", run_id, tags, enabled=t.mlflow and dist.is_main)
    if dist.is_main:
        tracker.log_params({**cfg, "data_path": str(manifest), "train_faces": {i: len(f) for i, f in
                                                                               train_faces.items()}})

    def state_dict(step: int) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        return {"model": model.state_dict(), "model_config": mcfg.to_dict(), "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict(), "schedule": {"kind": t.decay, "step": step, "lr": lr_at(step, t)},
                "step": step, "variant": variant, "best_val_loss": best_val, "best_step": best_step,
                "nonfinite_total": nonfinite_total, "rng": rng, "config": cfg, "fingerprint": fp,
                "mlflow_run_id": tracker.run_id or run_id, "history": history,
                "loss_window": [window_loss, window_n]}  # a resumed run logs the same window means

    def save(step: int, best: bool = False) -> None:
        if not dist.is_main:
            return
        st = state_dict(step)
        save_checkpoint(ckpt_dir / f"step_{step:07d}.pt", st)
        _prune(ckpt_dir, t.keep_checkpoints)
        if best:
            save_checkpoint(ckpt_dir / "best.pt", st)

    # the loop
    from tqdm import tqdm

    images_per_step = t.batch_size * len(identities) * dist.world
    bar = tqdm(total=t.steps, initial=start, unit="step", desc=f"train {variant}", file=sys.stderr,
               disable=(not dist.is_main) or (progress is False) or (None if progress is None else False),
               dynamic_ncols=True)
    step, consecutive = start, 0
    window_loss, window_n = (float(state["loss_window"][0]), int(state["loss_window"][1])) if (
        state is not None and "loss_window" in state) else (0.0, 0)
    t_start = time.perf_counter()
    t_win, imgs_win, ips = t_start, 0, 0.0
    status = "FAILED"
    flag = _StopFlag()
    try:
        with flag:
            net.train()
            for step, batch in zip(range(start, t.steps), loader, strict=False):
                lr = lr_at(step, t)
                for g in opt.param_groups:
                    g["lr"] = lr
                xs = [to_float(batch[f"{i}_in"], device, channels_last) for i in identities]
                ys = [to_float(batch[f"{i}_target"], device, channels_last) for i in identities]
                with_lp = uses_lpips(t.loss, step)
                with autocast():
                    preds = net(*xs)
                    parts = [reconstruction_loss(p, y, t.loss, with_lp) for p, y in zip(preds, ys, strict=True)]
                loss = sum(p[0] for p in parts)
                bad = torch.tensor([0.0 if torch.isfinite(loss) else 1.0, float(flag.signum or 0)])
                if dist.enabled:
                    torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
                what = "loss" if bad[0] > 0 else None
                if what is None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)  # a no-op when the scaler is off (fp32, bf16)
                    grads = [p.grad for p in model.parameters() if p.grad is not None]
                    if t.grad_clip is not None:
                        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                    else:
                        norm = torch.nn.utils.get_total_norm(grads)
                    # fp16: GradScaler skips a step with inf/NaN gradients itself (and lowers its scale)
                    if not scaler.is_enabled() and not torch.isfinite(norm):
                        what = "gradients (finite loss)"
                    else:
                        scaler.step(opt)
                        scaler.update()
                        window_loss += float(loss.detach())
                        window_n += 1
                opt.zero_grad(set_to_none=True)
                if what is None:
                    consecutive = 0
                else:
                    consecutive += 1
                    nonfinite_total += 1
                    _log(f"warning: non-finite {what} at step {step}; step skipped ({consecutive} in a row)", dist)
                    if consecutive >= t.max_nonfinite:
                        last = _step_checkpoints(ckpt_dir)
                        raise TrainingError(
                            f"{consecutive} non-finite steps in a row (steps {step - consecutive + 1}..{step}, "
                            f"last: {what}); stopped. Last good checkpoint: {last[0] if last else 'none'}. "
                            "Lower train.lr, set train.grad_clip, or use precision fp32/bf16."
                        )
                step += 1
                imgs_win += images_per_step
                bar.update(1)

                if step % t.log_every == 0 or step == t.steps:
                    now = time.perf_counter()
                    ips = imgs_win / max(now - t_win, 1e-9)
                    t_win, imgs_win = now, 0
                    mean = window_loss / max(window_n, 1)
                    window_loss, window_n = 0.0, 0
                    history["step"].append(step)
                    history["loss"].append(mean)
                    bar.set_postfix(loss=f"{mean:.4f}", img_s=f"{ips:.0f}", refresh=False)
                    metrics = {"train_loss": mean, "lr": lr, "images_per_s": ips}
                    for name in ("pixel", "lpips"):
                        vals = [float(p[1][name].detach()) for p in parts if name in p[1]]
                        if vals:
                            metrics[f"train_{name}"] = sum(vals) / len(vals)
                    tracker.log_metrics(metrics, step)

                if bad[1] > 0:
                    save(step)
                    flag.signum = int(bad[1])
                    break

                new_best = False
                if dist.is_main and (step % t.val_every == 0 or step == t.steps):
                    v = validation_loss(model, val, t, device, autocast, channels_last)
                    vc = validation_loss(model, train_clean, t, device, autocast, channels_last)
                    history["val_step"].append(step)
                    history["val_loss"].append(v)
                    history["train_clean_loss"].append(vc)
                    tracker.log_metrics({"val_loss": v, "train_clean_loss": vc}, step)
                    if best_val is None or v < best_val:
                        best_val, best_step, new_best = v, step, True
                    _log(f"step {step}/{t.steps}  loss {history['loss'][-1] if history['loss'] else float('nan'):.4f}"
                         f"  val {v:.4f} (best {best_val:.4f} @ {best_step})  {ips:.0f} img/s", dist)
                if step % t.checkpoint_every == 0 or step == t.steps or new_best:
                    save(step, best=new_best)
                if dist.is_main and (step % t.preview_every == 0 or step == t.steps):
                    from faceswap.imageio import write_rgb

                    path = out / "previews" / f"step_{step:07d}.png"
                    write_rgb(path, preview_grid(model, preview_faces, device))
                    tracker.log_artifact(path, "previews")
        bar.close()
        wall = time.perf_counter() - t_start
        done = step - start
        result = TrainResult(variant, str(out), step, t.steps, best_val, best_step, resumed_from, flag.signum,
                             nonfinite_total, done * images_per_step / max(wall, 1e-9), wall, tracker.run_id or run_id,
                             history)
        if flag.signum is not None:
            _log(f"train {variant}: stopped by signal {flag.signum} at step {step}; checkpoint saved, rerun to resume",
                 dist)
            status = "KILLED"
            return result
        if dist.enabled:
            _check_ranks_agree(model)
        if dist.is_main:
            _finish(out, model, mcfg, variant, result, cfg, tracker, commit, t, metrics_path, curves_dir, dist,
                    detector)
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

    flat = torch.cat([p.detach().float().reshape(-1) for p in model.parameters()]).cpu()
    hi, lo = flat.clone(), flat.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    spread = float((hi - lo).abs().max())
    if spread > 1e-6:
        raise TrainingError(f"DDP replicas diverged: weights differ by up to {spread:g} between ranks")


def _finish(out: Path, model: FaceSwapAutoencoder, mcfg: ModelConfig, variant: str, result: TrainResult,
            cfg: dict, tracker: Any, commit: str, t: TrainParams, metrics_path: Any, curves_dir: Any,
            dist: Dist, detector: dict | None = None) -> None:
    """model.pt (best weights), run.json, metrics and curves; the final checkpoint to MLflow."""
    best = out / "checkpoints" / "best.pt"
    weights = load_checkpoint(best)["model"] if best.is_file() else model.state_dict()
    save_checkpoint(out / "model.pt", {"model": weights, "model_config": mcfg.to_dict(), "step": result.best_step,
                                       "val_loss": result.best_val_loss, "variant": variant, "config": cfg,
                                       "detector": detector})
    tracker.log_artifact(out / "model.pt", "model")
    run = {"variant": variant, "mlflow_run_id": tracker.run_id, "mlflow_experiment_id": tracker.experiment_id,
           "tracking_uri": tracker.uri,
           "data_version": cfg["data_version"], "git_commit": commit, "steps": result.step,
           "best_val_loss": result.best_val_loss, "best_step": result.best_step}
    (out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    tracker.log_artifact(out / "run.json")
    summary = {k: v for k, v in asdict(result).items() if k not in ("history", "out_dir")}
    summary["final_train_loss"] = result.history["loss"][-1] if result.history["loss"] else None
    summary["world_size"] = dist.world
    tracker.log_metrics({"best_val_loss": result.best_val_loss or float("nan"), "train_images_per_s":
                         result.images_per_s}, result.step)
    if metrics_path:
        mp = Path(metrics_path)
        mp.parent.mkdir(parents=True, exist_ok=True)
        mp.write_text(json.dumps(summary, indent=2) + "\n")
    if curves_dir:
        cd = Path(curves_dir)
        cd.mkdir(parents=True, exist_ok=True)
        h = result.history
        (cd / "train.csv").write_text("step,loss\n" + "".join(f"{s},{v:.6f}\n" for s, v in
                                                              zip(h["step"], h["loss"], strict=True)))
        clean = h.get("train_clean_loss", [])
        clean = [float("nan")] * (len(h["val_step"]) - len(clean)) + clean  # resumed from an older checkpoint
        (cd / "val.csv").write_text("step,val_loss,train_clean_loss\n" + "".join(
            f"{s},{v:.6f},{c:.6f}\n" for s, v, c in zip(h["val_step"], h["val_loss"], clean, strict=True)))
