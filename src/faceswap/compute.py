"""How a run does its arithmetic on this machine: precision and memory layout, decided once from facts.

``precision: auto`` and ``channels_last: null`` (train, evaluate, serve) resolve here, per device, from
what the hardware can do natively, because the same setting must be fast on a laptop, a server CPU and
a GPU, and must never pick a mode that the machine only emulates:

* **CUDA**: bf16 autocast where the GPU has bf16 (fp16 + GradScaler otherwise), channels-last (cuDNN's
  fast layout). Measured on an H100: bf16 + channels-last 2.21× fp32 NCHW (docs/benchmarks.md).
* **CPU, bf16 only with native bf16 dot products** (AVX-512-BF16 or AMX): measured on a Zen 4 with
  ``avx512_bf16``, bf16 autocast + channels-last ran the training step 1.6-2.5× faster than fp32 and the
  matmul ceiling 2.35× higher; on a Zen 3 (AVX2 only) a bf16 matmul ran at 0.8 GFLOP/s against 101 in
  fp32 and the bf16 step at 0.05-0.17× of fp32's: emulated bf16 never pays, so auto keeps fp32 there.
* **CPU layout: channels-last** wherever oneDNN runs the convolutions (its kernels are NHWC-blocked, so an
  NCHW tensor is reordered at every layer); ``bench/train.py`` measures the gain on each machine.

The decision is a :class:`ComputePlan` with a one-line reason that the run logs and records in MLflow. The CPU
rules are a starting point only: training times the candidate plans on its own model and batch and keeps the
fastest (:mod:`faceswap.compute_timing`), because native bf16 is not always faster (AVX-512-BF16 without AMX
measured 0.75-0.81× of fp32 on a Xeon).
``$FACESWAP_PRECISION`` (fp32 | bf16 | fp16) overrides what ``auto`` resolves to, so the whole test suite can be
run under each plan on one machine (``FACESWAP_PRECISION=bf16 make test``); an explicit setting still wins.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from faceswap.errors import FaceswapError

PRECISION_ENV = "FACESWAP_PRECISION"  # overrides what precision auto resolves to (the suite under each plan)


class ComputeError(FaceswapError, ValueError):
    """A precision this device cannot run (fp16 on a CPU)."""


@dataclass(frozen=True)
class CpuFeatures:
    """What the CPU computes natively, as torch's dispatcher sees it (the flags decide the defaults)."""

    avx512_bf16: bool
    amx_bf16: bool
    capability: str  # torch's vector dispatch level: DEFAULT | AVX2 | AVX512 | ...
    onednn: bool  # torch was built with oneDNN (mkldnn), which runs CPU convolutions in NHWC blocks

    @property
    def native_bf16(self) -> bool:
        return self.avx512_bf16 or self.amx_bf16

    @classmethod
    def detect(cls) -> CpuFeatures:
        flags = _cpuinfo_flags()
        cpu = torch.cpu
        avx512_bf16 = _probe(cpu, "_is_avx512_bf16_supported", "avx512_bf16" in flags)
        amx = "amx_bf16" in flags or (not flags and _probe(cpu, "_is_amx_tile_supported", False))
        return cls(avx512_bf16=avx512_bf16, amx_bf16=amx, capability=torch.backends.cpu.get_cpu_capability(),
                   onednn=torch.backends.mkldnn.is_available())

    def describe(self) -> str:
        bf16 = "AMX-BF16" if self.amx_bf16 else "AVX-512-BF16" if self.avx512_bf16 else "no native bf16"
        return f"{self.capability}, {bf16}{', oneDNN' if self.onednn else ''}"


def _probe(module: object, name: str, fallback: bool) -> bool:
    """torch's own CPU feature test when this build has it, else the kernel's flag."""
    fn = getattr(module, name, None)
    if fn is None:
        return fallback
    try:
        return bool(fn())
    except RuntimeError:
        return fallback


def _cpuinfo_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@dataclass(frozen=True)
class ComputePlan:
    """The resolved arithmetic of a run: autocast dtype (or none) and memory format, with the reason."""

    device: str  # cpu | cuda
    precision: str  # fp32 | bf16 | fp16
    channels_last: bool
    reason: str
    auto_precision: bool = False  # resolved by auto (not set, not $FACESWAP_PRECISION): a timing may change it
    auto_layout: bool = False  # channels_last was null (auto)

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        return contextlib.nullcontext() if dtype is None else torch.autocast(self.device, dtype=dtype)

    def params(self, prefix: str = "compute") -> dict[str, str]:
        """What MLflow records: the resolved values beside the settings that asked for them."""
        return {f"{prefix}.precision": self.precision, f"{prefix}.channels_last": str(self.channels_last),
                f"{prefix}.reason": self.reason}

    def describe(self) -> str:
        return f"{self.precision}, {'channels-last' if self.channels_last else 'NCHW'} on {self.device} ({self.reason})"


def plan_compute(device: str | torch.device, precision: str = "auto", channels_last: bool | None = None, *,
                 cpu: CpuFeatures | None = None, cuda_bf16: bool | None = None, setting: str = "train") -> ComputePlan:
    """Resolve ``precision`` (auto | bf16 | fp16 | fp32) and ``channels_last`` (None = auto) for ``device``.

    ``cpu`` and ``cuda_bf16`` default to this machine's facts; tests pass others to check the rules for
    hardware they do not have. ``setting`` names the params section in errors.
    """
    kind = torch.device(device).type
    if precision == "auto" and (forced := os.environ.get(PRECISION_ENV, "").strip()):
        if forced not in ("fp32", "bf16", "fp16"):
            raise ComputeError(f"${PRECISION_ENV}={forced!r}: must be fp32, bf16 or fp16 (or unset for auto)")
        precision, set_by = forced, f"set by ${PRECISION_ENV}"
    else:
        set_by = "set"
    if kind == "cuda":
        bf16 = torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16
        auto_prec, why = ("bf16", "GPU with bf16") if bf16 else ("fp16", "GPU without bf16: fp16 + GradScaler")
        auto_cl, why_cl = True, "cuDNN's fast layout"
    else:
        if precision == "fp16":
            raise ComputeError(f"{setting}.precision fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
        feats = CpuFeatures.detect() if cpu is None else cpu
        if feats.native_bf16:
            auto_prec, why = "bf16", f"CPU with native bf16 ({feats.describe()})"
        else:
            auto_prec, why = "fp32", f"CPU without native bf16 ({feats.describe()}): bf16 would be emulated"
        auto_cl = feats.onednn
        why_cl = "oneDNN convolutions run NHWC" if feats.onednn else "no oneDNN: plain NCHW kernels"
    prec = auto_prec if precision == "auto" else precision
    cl = auto_cl if channels_last is None else channels_last
    reasons = [f"precision {'auto: ' + why if precision == 'auto' else set_by}",
               f"layout {'auto: ' + why_cl if channels_last is None else 'set'}"]
    return ComputePlan(kind, prec, cl, "; ".join(reasons), auto_precision=precision == "auto",
                       auto_layout=channels_last is None)


def to_layout(x: torch.Tensor, plan: ComputePlan) -> torch.Tensor:
    """An image batch in the plan's memory format (a no-op for NCHW)."""
    return x.contiguous(memory_format=torch.channels_last) if plan.channels_last and x.ndim == 4 else x
