"""CPU benchmark: forward+backward images/s per decoder variant, demo model and seed-scale model.

    python bench/model.py [--repeats 5] [--profiles demo-64 seed-256]

Prints a table and writes bench/results/model_cpu.json. The figure that matters is images/s of one
forward+backward through the encoder and one decoder (half a training step: a step does this for
each identity), with the achieved GFLOP/s (3 × forward FLOPs per image) beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics

import torch

from _common import PROFILES, build, median_time, print_table, train_step_fn, write_results
from faceswap.model import UPSAMPLERS

BATCH = {"demo-64": 32, "seed-256": 2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=list(PROFILES))
    ap.add_argument("--variants", nargs="+", default=list(UPSAMPLERS), choices=list(UPSAMPLERS))
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    for profile in args.profiles:
        for variant in args.variants:
            model, info = build(profile, variant)
            model.train()
            n, b = info["config"]["image_size"], BATCH[profile]
            x = torch.rand(b, 3, n, n)
            step = train_step_fn(model, x, contextlib.nullcontext)
            step()  # warm-up: allocator and oneDNN primitive caches
            step()
            times = median_time(step, args.repeats)
            t = statistics.median(times)
            rows.append({
                "profile": profile, "variant": variant, "batch": b, "params_M": info["params"] / 1e6,
                "gflops_fwd": info["gflops"], "images_per_s": b / t,
                "achieved_gflops": 3 * info["gflops"] * b / t, "spread": (max(times) - min(times)) / t,
            })
            print(f"  {profile} {variant}: {b / t:.1f} images/s", flush=True)
    print()
    print_table(rows, [("profile", "profile", ""), ("variant", "variant", ""), ("params_M", "params (M)", ".2f"),
                       ("gflops_fwd", "GFLOPs fwd", ".3f"), ("images_per_s", "images/s", ".1f"),
                       ("achieved_gflops", "GFLOP/s", ".1f"), ("spread", "spread", ".0%")])
    print(f"\nwrote {write_results('model_cpu', rows, {'repeats': args.repeats})}")


if __name__ == "__main__":
    main()
