"""Where and how a run's arithmetic runs, decided once: the device, the DDP rank (joining torchrun's process group),
the compute plan (precision and memory format, :func:`faceswap.compute.plan_compute`) and the module the loop
calls (compiled and/or DDP-wrapped).

Every collective the loop issues goes through :func:`all_reduce`, which refuses a tensor that is not on the run's
device before the backend sees it: NCCL reduces CUDA tensors only and gloo CPU ones, and a ``.cpu()`` before a
reduce once crashed every multi-GPU run after its last step, which a gloo test on CPU could not see."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

import torch
from torch import nn

from faceswap.compute import ComputeError, ComputePlan, plan_compute
from faceswap.config import TrainParams
from faceswap.devices import resolve_device
from faceswap.model import FaceSwapAutoencoder
from faceswap.train.records import TrainingError
from faceswap.train.step import SwapModel


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


def all_reduce(x: torch.Tensor, op: str, device: torch.device) -> torch.Tensor:
    """``torch.distributed.all_reduce`` of ``x`` in place (``op``: "max", "min" or "sum"), refusing a tensor that is
    not on the run's ``device`` (module doc). Issued on the device's stream: the host does not wait for it."""
    import torch.distributed as dist

    if x.device != device:
        raise TrainingError(f"collective on a {x.device} tensor in a run on {device}: the backend reduces tensors "
                            "on the run's device only")
    dist.all_reduce(x, op={"max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN, "sum": dist.ReduceOp.SUM}[op])
    return x


def check_ranks_agree(model: nn.Module, device: torch.device) -> None:
    """DDP keeps replicas identical; verify it (max over ranks minus min over ranks of every weight)."""
    flat = torch.cat([p.detach().float().reshape(-1) for p in model.parameters()])
    hi = all_reduce(flat.clone(), "max", device)
    lo = all_reduce(flat.clone(), "min", device)
    spread = float((hi - lo).abs().max())
    if spread > 1e-6:
        raise TrainingError(f"DDP replicas diverged: weights differ by up to {spread:g} between ranks")


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


def log(msg: str, dist: Dist) -> None:
    """A progress line on stderr, from the main rank only."""
    if dist.is_main:
        print(msg, file=sys.stderr, flush=True)


def barrier(dist: Dist) -> None:
    if dist.enabled:
        torch.distributed.barrier()
