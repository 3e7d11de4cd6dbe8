"""CPU benchmark of training at the demo profile (params.yaml): steps/s and images/s per decoder variant.

    python bench/train.py [--steps 20] [--variants ...] [--data data/faces/manifest.parquet]

Three measurements, all with the real data path (DataLoader, augmentation, params.yaml's workers):
* ``data``: the loader alone (decode-free: crops are in memory; affine + warp + jitter per sample);
* ``step, no LPIPS``: loader + forward/backward/AdamW for both identities, pixel loss only;
* ``step, demo loss``: the same with params.yaml's loss (LPIPS-vgg every k-th step on a few faces),
  averaged over whole k-step cycles.
Prints a table and writes bench/results/train_cpu.json (with the load average: these machines are shared).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from _common import print_table, write_results
from faceswap.config import load_params
from faceswap.data.dataset import StepBatches, SwapPairs, load_faces, to_float
from faceswap.losses import reconstruction_loss, uses_lpips
from faceswap.model import UPSAMPLERS, FaceSwapAutoencoder, ModelConfig
from faceswap.train import SwapModel, _optimizer


def loader_for(p, faces, steps: int, workers: int):
    t = p.train
    return torch.utils.data.DataLoader(
        SwapPairs(faces, t.augment, 0), batch_sampler=StepBatches(0, steps, t.batch_size),
        num_workers=workers, prefetch_factor=4 if workers else None,
    )


def time_loop(p, faces, variant: str | None, steps: int, warmup: int, workers: int, loss_cfg) -> float:
    """Seconds per step over ``steps`` after ``warmup`` (variant None: data only)."""
    t = p.train
    idents = p.base.identities
    net = opt = None
    if variant is not None:
        mcfg = ModelConfig(image_size=p.base.image_size, width=p.model.width,
                           bottleneck_channels=p.model.bottleneck_channels, decoder=variant, identities=idents)
        model = FaceSwapAutoencoder(mcfg)
        net, opt = SwapModel(model).train(), _optimizer(model, t, torch.device("cpu"))
    t0 = None
    for step, batch in enumerate(loader_for(p, faces, warmup + steps, workers)):
        if step == warmup:
            t0 = time.perf_counter()
        if net is None:
            continue
        xs = [to_float(batch[f"{i}_in"], torch.device("cpu")) for i in idents]
        ys = [to_float(batch[f"{i}_target"], torch.device("cpu")) for i in idents]
        preds = net(*xs)
        loss = sum(reconstruction_loss(pr, y, loss_cfg, uses_lpips(loss_cfg, step))[0]
                   for pr, y in zip(preds, ys, strict=True))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=20, help="timed steps (rounded up to whole LPIPS cycles)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--variants", nargs="+", default=list(UPSAMPLERS), choices=list(UPSAMPLERS))
    ap.add_argument("--data", default="data/faces/manifest.parquet", help="face manifest (train split is used)")
    ap.add_argument("--faces-dir", default="data/faces")
    args = ap.parse_args()
    p = load_params()
    t = p.train
    workers = t.workers if t.workers is not None else max(0, min(16, (os.cpu_count() or 1) - 1))
    faces = load_faces(args.data, p.base.identities, "train", p.base.image_size, args.faces_dir)
    k = t.loss.lpips_every
    steps = -(-args.steps // k) * k
    warmup = -(-args.warmup // k) * k  # start timing on an LPIPS step, so every cycle is whole
    images = t.batch_size * len(p.base.identities)
    no_lpips = t.loss.model_copy(update={"lpips_net": "none"})
    torch.manual_seed(0)
    rows = []
    s = time_loop(p, faces, None, steps, warmup, workers, no_lpips)
    rows.append({"variant": "(data path only)", "mode": "loader", "steps_per_s": 1 / s, "images_per_s": images / s,
                 "s_per_300": 300 * s})
    print(f"  data path: {images / s:.0f} images/s", flush=True)
    for v in args.variants:
        for mode, cfg in (("no LPIPS", no_lpips), ("demo loss", t.loss)):
            s = time_loop(p, faces, v, steps, warmup, workers, cfg)
            rows.append({"variant": v, "mode": mode, "steps_per_s": 1 / s, "images_per_s": images / s,
                         "s_per_300": 300 * s})
            print(f"  {v} {mode}: {images / s:.0f} images/s", flush=True)
    print()
    print_table(rows, [("variant", "variant", ""), ("mode", "mode", ""), ("steps_per_s", "steps/s", ".2f"),
                       ("images_per_s", "images/s", ".0f"), ("s_per_300", "s / 300 steps", ".0f")])
    loss = t.loss
    path = write_results("train_cpu", rows, {
        "profile": {"image_size": p.base.image_size, "width": p.model.width,
                    "bottleneck_channels": p.model.bottleneck_channels, "batch_per_identity": t.batch_size,
                    "images_per_step": images, "workers": workers, "loss": loss.model_dump()},
        "timed_steps": steps, "loadavg_1min_before_after": [os.getloadavg()[0]]})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
