"""GPU benchmark: training-step throughput per decoder variant, next to a measured matmul ceiling.

    python bench/gpu_model.py [--out DIR] [--compile]

For each decoder variant, at the seed scale (256², width 128, 1024-channel 3×3 bottleneck) and the
demo scale (64²): images/s of one forward+backward (encoder + one decoder, L1 loss) with bf16 autocast
and channels-last, and the achieved TFLOP/s (3 × forward FLOPs per image) as a fraction of a bf16
matmul measured in the same run. Also the same step in fp32 and without channels-last for one variant,
so the gain of each switch is a ratio measured on one card. Timed with CUDA events, median of repeats.
Writes gpu_model.json (in --out, default bench/results).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path

import torch

from _common import build, print_table, train_step_fn, write_results
from faceswap.model import UPSAMPLERS

BATCH = {"seed-256": 64, "demo-64": 512}


def cuda_median_ms(step, warmup: int = 3, repeats: int = 10) -> list[float]:
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def matmul_ceiling_tflops(n: int = 8192) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms = statistics.median(cuda_median_ms(lambda: a @ b, warmup=5, repeats=20))
    return 2 * n**3 / (ms * 1e-3) / 1e12


def run_case(profile: str, variant: str, *, bf16: bool, channels_last: bool, compile_model: bool = False) -> dict:
    torch.manual_seed(0)
    model, info = build(profile, variant)
    model = model.cuda().train()
    n, b = info["config"]["image_size"], BATCH[profile]
    x = torch.rand(b, 3, n, n, device="cuda")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if compile_model:
        model = torch.compile(model)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    t0 = time.perf_counter()
    times = cuda_median_ms(train_step_fn(model, x, autocast), warmup=3, repeats=10)
    ms = statistics.median(times)
    ips = b / (ms * 1e-3)
    row = {
        "profile": profile, "variant": variant, "precision": "bf16" if bf16 else "fp32",
        "layout": "channels_last" if channels_last else "nchw", "compiled": compile_model, "batch": b,
        "ms_per_step": ms, "images_per_s": ips, "tflops": 3 * info["gflops"] * ips / 1e3,
        "spread": (max(times) - min(times)) / ms, "wall_s": time.perf_counter() - t0,
        "max_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
    }
    del model, x
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile for resize_nearest")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu_model.py needs a CUDA GPU (bench/model.py is the CPU benchmark)")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    ceiling = matmul_ceiling_tflops()
    print(f"bf16 matmul ceiling: {ceiling:.0f} TFLOP/s", flush=True)
    rows = []
    for profile in ("seed-256", "demo-64"):
        for variant in UPSAMPLERS:
            rows.append(run_case(profile, variant, bf16=True, channels_last=True))
            print(f"  {profile} {variant}: {rows[-1]['images_per_s']:.0f} images/s", flush=True)
    for bf16, cl in ((False, False), (True, False), (False, True)):
        rows.append(run_case("seed-256", "resize_nearest", bf16=bf16, channels_last=cl))
    if args.compile:
        rows.append(run_case("seed-256", "resize_nearest", bf16=True, channels_last=True, compile_model=True))
    for r in rows:
        r["of_ceiling"] = r["tflops"] / ceiling
    print()
    print_table(rows, [("profile", "profile", ""), ("variant", "variant", ""), ("precision", "prec", ""),
                       ("layout", "layout", ""), ("compiled", "compiled", ""), ("batch", "batch", "d"),
                       ("images_per_s", "images/s", ".0f"), ("tflops", "TFLOP/s", ".1f"),
                       ("of_ceiling", "of matmul", ".1%"), ("max_mem_gib", "GiB", ".1f"),
                       ("spread", "spread", ".0%")])
    path = write_results("gpu_model", rows, {"matmul_ceiling_tflops": ceiling}, out_dir=args.out)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
