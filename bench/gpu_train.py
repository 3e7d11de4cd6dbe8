"""GPU training benchmark at the seed profile (256², width 128, 3×3×1024), bf16 + channels-last.

    python bench/gpu_train.py [--steps 30] [--batch 32] [--variants ...] [--lpips vgg|none] [--out DIR]

Uses the training code itself (SwapPairs + StepBatches + DataLoader with workers and pinned memory,
SwapModel, reconstruction_loss, AdamW). Crops are synthetic uint8 noise faces (the data path's cost
does not depend on content). Reports images/s, achieved TFLOP/s (model-info forward FLOPs × 3 for
forward+backward; LPIPS FLOPs not counted, so the figure is a lower bound) against a measured bf16
matmul ceiling, peak GPU memory, and the share of step time spent waiting for data.
Runs on CPU too (fp32, tiny sizes via flags) so the script is checked before GPU time is spent.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from faceswap.config import AugmentParams, LossParams
from faceswap.data.dataset import FaceSet, StepBatches, SwapPairs, to_float, worker_init
from faceswap.losses import reconstruction_loss
from faceswap.model import UPSAMPLERS, FaceSwapAutoencoder, ModelConfig
from faceswap.model.info import describe_model
from faceswap.train import SwapModel


def matmul_ceiling(device: torch.device, dtype: torch.dtype) -> float:
    n = 8192 if device.type == "cuda" else 512
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t0, reps = time.perf_counter(), 20
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32, help="faces per identity per step")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--bottleneck", type=int, default=1024)
    ap.add_argument("--variants", nargs="+", default=list(UPSAMPLERS), choices=list(UPSAMPLERS))
    ap.add_argument("--lpips", default="vgg", choices=["vgg", "alex", "none"])
    ap.add_argument("--workers", type=int, default=min(8, (os.cpu_count() or 1) - 1))
    ap.add_argument("--faces", type=int, default=512, help="synthetic crops per identity")
    ap.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
    n = args.image_size
    rng = np.random.default_rng(0)
    faces = {i: FaceSet(i, "train", tuple(str(k) for k in range(args.faces)),
                        rng.integers(0, 256, (args.faces, n, n, 3), dtype=np.uint8)) for i in ("a", "b")}
    loss_cfg = LossParams(lpips_net=args.lpips, lpips_weight=0.1 if args.lpips != "none" else 0.0)
    ceiling = matmul_ceiling(device, dtype)
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(f"device {name}; matmul ceiling {ceiling:.1f} TFLOP/s", flush=True)
    rows = []
    for v in args.variants:
        cfg = ModelConfig(image_size=n, width=args.width, bottleneck_channels=args.bottleneck, decoder=v)
        gflops = describe_model(**{k: getattr(cfg, k) for k in ("image_size", "width", "bottleneck_channels",
                                                                 "decoder")})["gflops"]
        model = FaceSwapAutoencoder(cfg).to(device).to(memory_format=torch.channels_last)
        net = SwapModel(model).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
        loader = torch.utils.data.DataLoader(
            SwapPairs(faces, AugmentParams(), 0), batch_sampler=StepBatches(0, args.warmup + args.steps, args.batch),
            num_workers=args.workers, pin_memory=cuda, prefetch_factor=4 if args.workers else None,
            worker_init_fn=worker_init)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        wait = 0.0
        it = iter(loader)
        t0 = None
        for step in range(args.warmup + args.steps):
            if step == args.warmup:
                sync(device)
                t0, wait = time.perf_counter(), 0.0
            tw = time.perf_counter()
            batch = next(it)
            wait += time.perf_counter() - tw
            xs = [to_float(batch[f"{i}_in"], device, True) for i in ("a", "b")]
            ys = [to_float(batch[f"{i}_target"], device, True) for i in ("a", "b")]
            with torch.autocast(device.type, dtype=dtype, enabled=cuda):
                preds = net(*xs)
                loss = sum(reconstruction_loss(p, y, loss_cfg, True)[0] for p, y in zip(preds, ys, strict=True))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        sync(device)
        dt = (time.perf_counter() - t0) / args.steps
        images = 2 * args.batch
        tflops = 3 * gflops * images / dt / 1e3
        row = {"variant": v, "batch_per_identity": args.batch, "images_per_s": images / dt, "step_ms": dt * 1e3,
               "model_tflops": tflops, "mfu_vs_matmul": tflops / ceiling, "data_wait_share": wait / args.steps / dt,
               "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}
        rows.append(row)
        print(json.dumps(row), flush=True)
        del model, net, opt, loader, it
        if cuda:
            torch.cuda.empty_cache()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_train.json").write_text(json.dumps({
        "device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__, "dtype": str(dtype),
        "matmul_ceiling_tflops": ceiling, "image_size": n, "width": args.width, "bottleneck": args.bottleneck,
        "lpips": args.lpips, "workers": args.workers, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
