"""``precision: auto`` on a CPU decided by timing the run's own training step, once per machine and model.

The CPU flags say which plans *can* run natively, not which is fastest: on a Xeon with AVX-512-BF16 but no AMX
the bf16 step measured 0.75-0.81× of fp32's, while with AMX it is 1.3-1.6× faster. So, like
``cudnn.benchmark``, auto times the candidates — fp32 and (where bf16 is native) bf16, each in NCHW and
channels-last — for a few forward+backward+AdamW steps of the run's own model and batch, picks the fastest, and
logs the timings it decided on (they go into the plan's reason, which the run records in MLflow).

The choice is cached in ``$FACESWAP_CACHE_DIR/compute/plans.json`` (default ``~/.cache/faceswap``), keyed by the
CPU model name and flags, the model geometry and batch, the torch version and the thread count, so a second run of
the same model on the same machine costs nothing. The probe runs under ``torch.random.fork_rng``: it builds and
steps models without moving the run's RNG, so a seed gives the same weights with or without a probe.

``torch.compile`` is not a candidate: compiling the demo model takes tens of seconds on 2 cores, far beyond a
probe of a few seconds, and ``train.compile`` already says it explicitly. GPUs keep the rules of
:func:`faceswap.compute.plan_compute` (bf16 + channels-last is fastest on every card measured).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from faceswap.compute import ComputePlan, CpuFeatures, to_layout
from faceswap.files import write_json

CACHE_ENV = "FACESWAP_CACHE_DIR"
Step = Callable[[], object]
MakeStep = Callable[[ComputePlan], Step]  # builds a model + optimizer + batch under a plan; returns one step


def cache_file() -> Path:
    """``$FACESWAP_CACHE_DIR/compute/plans.json``, else under ``~/.cache/faceswap``."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "faceswap"
    return Path(root) / "compute" / "plans.json"


def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def label(plan: ComputePlan) -> str:
    return f"{plan.precision}/{'channels-last' if plan.channels_last else 'NCHW'}"


def candidate_plans(rule: ComputePlan, cpu: CpuFeatures) -> list[ComputePlan]:
    """The plans worth timing: bf16 only where it is native, each layout unless the run set one."""
    precisions = [rule.precision] if not rule.auto_precision else ["fp32", *(["bf16"] if cpu.native_bf16 else [])]
    layouts = [rule.channels_last] if not rule.auto_layout else [False, True]
    return [replace(rule, precision=p, channels_last=cl) for p in precisions for cl in layouts]


def plan_key(geometry: Mapping[str, Any], cpu: CpuFeatures) -> dict[str, Any]:
    """What the cached choice depends on: the machine, the software, the threads and the run's model and batch."""
    return {"cpu": cpu_model_name(), "features": cpu.describe(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "geometry": dict(geometry)}


def key_digest(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def measure_plans(make_step: MakeStep, candidates: Sequence[ComputePlan], *, warmup: int = 1,
                  rounds: int = 3, budget_s: float = 10.0) -> dict[str, float]:
    """Milliseconds per step of each candidate: the fastest of ``rounds`` single steps after ``warmup``, the
    candidates interleaved round by round so load from other processes falls on all of them alike; no new round
    starts past ``budget_s`` (one always runs), so a big model costs a few of its steps, not minutes.

    Runs under ``fork_rng``: building models and batches here leaves the caller's torch RNG where it was."""
    with torch.random.fork_rng(devices=[]):
        steps = {label(p): make_step(p) for p in candidates}
        for step in steps.values():
            for _ in range(warmup):
                step()
        best = dict.fromkeys(steps, float("inf"))
        t_start = time.perf_counter()
        for r in range(rounds):
            if r and time.perf_counter() - t_start > budget_s:
                break
            for name, step in steps.items():
                t0 = time.perf_counter()
                step()
                best[name] = min(best[name], (time.perf_counter() - t0) * 1e3)
    return best


def timed_plan(rule: ComputePlan, make_step: MakeStep, geometry: Mapping[str, Any], *,
               cpu: CpuFeatures | None = None, log: Callable[[str], object] | None = None,
               **measure: int) -> ComputePlan:
    """The fastest of :func:`candidate_plans` for this run (from the cache when this machine timed it before).

    ``rule`` is what :func:`faceswap.compute.plan_compute` resolved; it is returned unchanged on a GPU, or when the
    run set both precision and layout (explicitly or through ``$FACESWAP_PRECISION``)."""
    if rule.device != "cpu" or not (rule.auto_precision or rule.auto_layout):
        return rule
    feats = CpuFeatures.detect() if cpu is None else cpu
    cands = candidate_plans(rule, feats)
    if len(cands) == 1:
        return rule
    key = plan_key(geometry, feats)
    digest, path = key_digest(key), cache_file()
    cache = _read(path)
    hit = cache.get(digest)
    if hit and set(hit.get("ms", {})) >= {label(p) for p in cands}:
        ms, source = {k: float(v) for k, v in hit["ms"].items()}, f"cached in {path}"
    else:
        ms, source = measure_plans(make_step, cands, **measure), "measured"
        cache[digest] = {"key": key, "ms": ms, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        try:
            write_json(path, cache)
        except OSError:  # a read-only home: the run still uses what it measured
            source += " (cache not writable)"
    best = min(cands, key=lambda p: ms[label(p)])
    timings = ", ".join(f"{label(p)} {ms[label(p)]:.1f}" for p in cands)
    plan = replace(rule, precision=best.precision, channels_last=best.channels_last,
                   reason=f"auto: fastest step of {timings} ms ({source})")
    if log is not None:
        log(f"compute plan: {plan.describe()}")
    return plan


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# --- the training step the probe times ---------------------------------------------------------------------


def training_step(mcfg: Any, loss: Any, batch: int, *, lr: float = 1e-4) -> MakeStep:
    """``make_step`` for :func:`timed_plan`: the training loop's own :func:`~faceswap.train.step.train_step` on the
    run's model (``ModelConfig``) and loss (``LossParams``) with ``batch`` random faces per identity, under a
    candidate plan (forward over all identities, loss with LPIPS on the steps that use it, backward, fused AdamW)."""
    from faceswap.model import FaceSwapAutoencoder
    from faceswap.train.step import StepParts, SwapModel, train_step

    def make(plan: ComputePlan) -> Step:
        model = FaceSwapAutoencoder(mcfg)
        if plan.channels_last:
            model = model.to(memory_format=torch.channels_last)
        parts = StepParts(net=SwapModel(model, with_codes=loss.code_mmd > 0), model=model,
                          opt=torch.optim.AdamW(model.parameters(), lr=lr, fused=True),
                          scaler=torch.amp.GradScaler("cpu", enabled=False), loss=loss, grad_clip=None,
                          autocast=plan.autocast)
        n = mcfg.image_size
        xs = [to_layout(torch.rand(batch, 3, n, n), plan) for _ in model.decoders]
        count = [0]

        def step() -> None:
            train_step(parts, xs, xs, count[0], lr)
            count[0] += 1

        return step

    return make


def training_geometry(mcfg: Any, loss: Any, batch: int) -> dict[str, Any]:
    """The cache key's model part: every field of the model config, the loss terms that cost time, the batch."""
    lp = {k: getattr(loss, k, None) for k in ("pixel", "lpips_net", "lpips_weight", "lpips_every", "lpips_images")}
    return {"model": asdict(mcfg), "loss": lp, "batch": batch}


def timed_training_plan(rule: ComputePlan, mcfg: Any, loss: Any, batch: int, **kw: Any) -> ComputePlan:
    """:func:`timed_plan` for a training run: its model config, loss settings and faces per identity per step."""
    return timed_plan(rule, training_step(mcfg, loss, batch), training_geometry(mcfg, loss, batch), **kw)
