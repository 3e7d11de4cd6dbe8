"""GPU training benchmark at the seed profile (256², width 128, 3×3×1024), bf16 + channels-last.

    python bench/gpu_train.py [--steps 30] [--batch 32] [--variants ...] [--lpips vgg|alex|none]
                              [--loss fast|reference] [--compile-lpips] [--profile] [--out DIR]

Times the training's own step, :func:`faceswap.train.train_step` (forward through SwapModel, reconstruction_loss
— whose LPIPS term is the fast :class:`faceswap.losses.LpipsLoss` —, backward, clip, the on-device non-finite check
and the fused AdamW), fed by the training's data path (SwapPairs + StepBatches + DataLoader with workers and
pinned memory), on the model :meth:`ModelConfig.from_params` builds from the flags' sizes.
Crops are synthetic uint8 noise faces (the data path's cost does not depend on content). Per variant: images/s,
ms/step, the share of step time spent waiting for data, peak GPU memory, and two throughputs against a bf16
matmul ceiling measured in the same run:

* model TFLOP/s: model-info forward FLOPs × 3 (forward + backward) per image;
* total TFLOP/s: the model's plus the LPIPS network's, counted as useful work — its forward for the prediction
  and the target, and its backward for the prediction branch only (input gradients; its weights are frozen),
  counted once per variant with ``torch.utils.flop_counter.FlopCounterMode`` on one image.

``--loss reference`` runs the same step with the metric's LPIPS (``lpips_tensor`` on fp32 copies) as its LPIPS
term, for the before/after ratio;
``--profile`` adds a torch.profiler table of the top kernels of a few steps of the first variant (in the JSON and
printed), which explains the gap where the target (≥ 1,000 images/s, ≥ 30 % of the ceiling) is not met.
Runs on CPU too (fp32, tiny sizes via flags), so the script is checked before GPU time is spent. Writes
``gpu_train.json`` in ``--out`` (default ``$OUT``, else bench/results).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceswap.config import AugmentParams, LossParams, TrainParams, parse_params
from faceswap.data.dataset import FaceSet, StepBatches, SwapPairs, to_float, worker_init
from faceswap.losses import lpips_loss
from faceswap.model import UPSAMPLERS, FaceSwapAutoencoder, ModelConfig
from faceswap.model.info import describe_model
from faceswap.train import StepParts, SwapModel, make_optimizer, train_step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_ceiling(device: torch.device, dtype: torch.dtype) -> float:
    n = 8192 if device.type == "cuda" else 256
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t0, reps = time.perf_counter(), 20
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def lpips_gflops(net: str, image_size: int, device: torch.device, dtype: torch.dtype) -> float:
    """GFLOPs of the LPIPS term per image: forward of prediction and target, backward of the prediction only."""
    from torch.utils.flop_counter import FlopCounterMode

    if net == "none":
        return 0.0
    loss = lpips_loss(net, device)
    x = torch.rand(1, 3, image_size, image_size, device=device, requires_grad=True)
    y = torch.rand(1, 3, image_size, image_size, device=device)
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            value = loss(x, y).sum()
        value.backward()
    return counter.get_total_flops() / 1e9


def reference_term(net: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The LPIPS term as it was before the fast one: the metric's LPIPS on fp32 copies (for the before/after
    ratio), given to the step in place of :class:`~faceswap.losses.LpipsLoss`."""
    from faceswap.metrics.lpips import lpips_tensor

    return lambda pred, target: lpips_tensor(pred.float(), target.float(), net=net)


def synthetic_faces(n: int, count: int, seed: int = 0, identities: tuple[str, ...] = ("a", "b")
                    ) -> dict[str, FaceSet]:
    rng = np.random.default_rng(seed)
    return {i: FaceSet(i, "train", tuple(str(k) for k in range(count)),
                       rng.integers(0, 256, (count, n, n, 3), dtype=np.uint8)) for i in identities}


def model_config(image_size: int, width: int, bottleneck: int, variant: str) -> ModelConfig:
    """The training's model at these sizes: params.yaml's defaults with the flags' sizes, through the one
    constructor the training uses."""
    params = parse_params({"base": {"image_size": image_size},
                           "model": {"width": width, "bottleneck_channels": bottleneck}}, "gpu_train flags")
    return ModelConfig.from_params(params, variant)


def measure(cfg: ModelConfig, faces: dict[str, FaceSet], loss_cfg: LossParams, *, batch: int, steps: int,
            warmup: int, workers: int, device: torch.device, dtype: torch.dtype, loss_kind: str = "fast",
            compile_lpips: bool = False, profile_steps: int = 0, train: TrainParams | None = None) -> dict[str, Any]:
    """Time ``steps`` training steps (:func:`faceswap.train.train_step`) of one configuration after ``warmup``;
    optionally profile a few more. ``train``: the optimiser's and the clip's settings (default params.yaml's)."""
    cuda = device.type == "cuda"
    t = train or TrainParams()
    model = FaceSwapAutoencoder(cfg).to(device).to(memory_format=torch.channels_last)
    total = warmup + steps + profile_steps
    loader = torch.utils.data.DataLoader(
        SwapPairs(faces, AugmentParams(), 0), batch_sampler=StepBatches(0, total, batch),
        num_workers=workers, pin_memory=cuda, prefetch_factor=4 if workers else None, worker_init_fn=worker_init)
    term = None
    if loss_cfg.lpips_net != "none":
        term = (lpips_loss(loss_cfg.lpips_net, device, compile=compile_lpips) if loss_kind == "fast"
                else reference_term(loss_cfg.lpips_net))
    parts = StepParts(net=SwapModel(model, with_codes=loss_cfg.code_mmd > 0).train(), model=model,
                      opt=make_optimizer(model, t, device), scaler=torch.amp.GradScaler(device.type, enabled=False),
                      loss=loss_cfg, grad_clip=t.grad_clip, lpips=term,
                      autocast=lambda: torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    it = iter(loader)
    done = [0]

    def step() -> float:
        tw = time.perf_counter()
        b = next(it)
        waited = time.perf_counter() - tw
        xs = [to_float(b[f"{i}_in"], device, True) for i in cfg.identities]
        ys = [to_float(b[f"{i}_target"], device, True) for i in cfg.identities]
        train_step(parts, xs, ys, done[0], t.lr)
        done[0] += 1
        return waited

    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    wait = sum(step() for _ in range(steps))
    sync(device)
    dt = (time.perf_counter() - t0) / steps
    row: dict[str, Any] = {"step_ms": dt * 1e3, "images_per_s": len(cfg.identities) * batch / dt,
                           "data_wait_share": wait / steps / dt,
                           "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}
    if profile_steps:
        row["profile"] = profile_table(step, profile_steps, device)
    return row


def profile_table(step: Callable[[], float], steps: int, device: torch.device, rows: int = 25) -> str:
    """torch.profiler's table of the kernels (CUDA) or ops (CPU) that took the most time over ``steps`` steps."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            step()
        sync(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=70)
    return f"top by {key}, {steps} steps\n{table}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32, help="faces per identity per step")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--bottleneck", type=int, default=1024)
    ap.add_argument("--variants", nargs="+", default=list(UPSAMPLERS), choices=list(UPSAMPLERS))
    ap.add_argument("--lpips", default="vgg", choices=["vgg", "alex", "none"])
    ap.add_argument("--loss", default="fast", choices=["fast", "reference"],
                    help="fast: the training loss (LpipsLoss); reference: the metric's LPIPS on fp32 copies")
    ap.add_argument("--compile-lpips", action="store_true", help="torch.compile the LPIPS term's forward")
    ap.add_argument("--profile", type=int, nargs="?", const=5, default=0,
                    help="profile this many steps (default 5) of the first variant; table in the JSON")
    ap.add_argument("--workers", type=int, default=max(0, min(16, (os.cpu_count() or 1) - 1)))
    ap.add_argument("--faces", type=int, default=512, help="synthetic crops per identity")
    ap.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    n = args.image_size
    faces = synthetic_faces(n, args.faces)
    loss_cfg = LossParams(lpips_net=args.lpips, lpips_weight=0.1 if args.lpips != "none" else 0.0,
                          lpips_every=1, lpips_images=None)
    ceiling = matmul_ceiling(device, dtype)
    lp_gflops = lpips_gflops(args.lpips, n, device, dtype)
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(f"device {name}; matmul ceiling {ceiling:.3g} TFLOP/s; LPIPS-{args.lpips} {lp_gflops:.1f} GFLOP/image "
          f"(fwd pred+target, bwd pred)", flush=True)
    rows = []
    for k, v in enumerate(args.variants):
        cfg = model_config(n, args.width, args.bottleneck, v)
        gflops = describe_model(image_size=n, width=args.width, bottleneck_channels=args.bottleneck,
                                decoder=v)["gflops"]
        r = measure(cfg, faces, loss_cfg, batch=args.batch, steps=args.steps, warmup=args.warmup,
                    workers=args.workers, device=device, dtype=dtype, loss_kind=args.loss,
                    compile_lpips=args.compile_lpips, profile_steps=args.profile if k == 0 else 0)
        if cuda:
            torch.cuda.empty_cache()
        ips = r["images_per_s"]
        model_tf, total_tf = 3 * gflops * ips / 1e3, (3 * gflops + lp_gflops) * ips / 1e3
        row = {"variant": v, "batch_per_identity": args.batch, "images_per_s": ips, "step_ms": r["step_ms"],
               "model_gflops_per_image": 3 * gflops, "lpips_gflops_per_image": lp_gflops,
               "model_tflops": model_tf, "total_tflops": total_tf, "model_of_ceiling": model_tf / ceiling,
               "total_of_ceiling": total_tf / ceiling, "data_wait_share": r["data_wait_share"],
               "peak_mem_gib": r["peak_mem_gib"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if "profile" in r:
            print(r["profile"], flush=True)
            profile = {"variant": v, "table": r["profile"]}
    result = {"device": name, "torch": torch.__version__, "dtype": str(dtype), "matmul_ceiling_tflops": ceiling,
              "image_size": n, "width": args.width, "bottleneck": args.bottleneck, "lpips": args.lpips,
              "loss": args.loss, "compile_lpips": args.compile_lpips, "workers": args.workers, "steps": args.steps,
              "rows": rows}
    if args.profile:
        result["profile"] = profile
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.loss == "fast" and not args.compile_lpips else f"_{args.loss}" + (
        "_compiled" if args.compile_lpips else "")
    (out / f"gpu_train{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
