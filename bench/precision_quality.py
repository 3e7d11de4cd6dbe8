"""Does bf16 cost quality? The demo profile trained in fp32 and in bf16 autocast, two seeds each, same data.

    python bench/precision_quality.py [--variant convtranspose] [--steps 1000] [--seeds 0 1]

Each run is ``faceswap.train.train`` with params.yaml (only ``train.precision`` and, with ``--steps``, the
step count differ), then its best checkpoint reconstructs the held-out test faces **in fp32** (so the table
compares what the two precisions trained, not how they infer). Reported per precision: final validation loss,
test PSNR and SSIM as the mean over seeds with the hierarchical bootstrap's 95% interval (seeds, then faces;
``faceswap.stats``), and whether bf16's mean lies inside fp32's interval. On a CPU without native bf16 the bf16
runs are slow (emulated: docs/benchmarks.md), which is why ``--steps`` exists. Writes
bench/results/precision_quality.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import print_table, write_results
from faceswap.checkpoint import load_model
from faceswap.compute import ComputePlan
from faceswap.config import load_params
from faceswap.evaluation.faces import load_eval_faces
from faceswap.evaluation.metrics import run_model
from faceswap.metrics.image import psnr, ssim
from faceswap.stats import hierarchical_bootstrap
from faceswap.train import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="convtranspose")
    ap.add_argument("--steps", type=int, default=None, help="override train.steps (both precisions alike)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    args = ap.parse_args()
    p = load_params()
    update = {"mlflow": False, "precision": None}
    if args.steps:
        update["steps"] = args.steps
    faces = load_eval_faces(p.paths.accepted, tuple(p.base.identities), p.base.image_size, p.paths.faces,
                            p.evaluate.max_faces)
    fp32 = ComputePlan("cpu", "fp32", False, "evaluation in fp32 for both")
    per: dict[str, dict[str, list]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for prec in args.precisions:
            per[prec] = {"val": [], "psnr": [], "ssim": [], "wall": []}
            for seed in args.seeds:
                params = p.model_copy(update={"train": p.train.model_copy(update={**update, "precision": prec})})
                t0 = time.perf_counter()
                r = train(params, args.variant, Path(tmp) / f"{prec}-{seed}", manifest=p.paths.accepted,
                          faces_dir=p.paths.faces, seed=seed, progress=False)
                per[prec]["wall"].append(time.perf_counter() - t0)
                model, _ = load_model(Path(tmp) / f"{prec}-{seed}" / "model.pt")
                outs = run_model(model, faces, 64, "cpu", fp32)
                per[prec]["val"].append(r.best.val_loss)
                for name, fn in (("psnr", psnr), ("ssim", ssim)):
                    per[prec][name].append([fn(outs[f"recon_{i}"], outs[f"truth_{i}"]).double().numpy()
                                            for i in faces.identities])
                print(f"  {prec} seed {seed}: val {r.best.val_loss:.4f}, {r.speed.images_per_s:.0f} images/s",
                      flush=True)
    rows = []
    est = {}
    for prec, d in per.items():
        row = {"precision": prec, "steps": args.steps or p.train.steps, "seeds": len(args.seeds),
               "val_loss": float(np.mean(d["val"])), "val_loss_seeds": d["val"],
               "wall_s": float(np.mean(d["wall"]))}
        for name in ("psnr", "ssim"):
            groups = [np.stack([s[k] for s in d[name]]) for k in range(len(faces.identities))]
            e = hierarchical_bootstrap(groups)
            est[(prec, name)] = e
            row.update({name: e.mean, f"{name}_lo": e.lo, f"{name}_hi": e.hi})
        rows.append(row)
    for row in rows:
        base = rows[0]
        row["within_fp32_ci"] = all(base[f"{n}_lo"] <= row[n] <= base[f"{n}_hi"] for n in ("psnr", "ssim")) and \
            min(base["val_loss_seeds"]) * 0.97 <= row["val_loss"] <= max(base["val_loss_seeds"]) * 1.03
    print()
    print_table(rows, [("precision", "precision", ""), ("steps", "steps", "d"), ("val_loss", "val loss", ".4f"),
                       ("psnr", "PSNR dB", ".2f"), ("psnr_lo", "lo", ".2f"), ("psnr_hi", "hi", ".2f"),
                       ("ssim", "SSIM", ".3f"), ("ssim_lo", "lo", ".3f"), ("ssim_hi", "hi", ".3f"),
                       ("wall_s", "wall s", ".0f"), ("within_fp32_ci", "in fp32 CI", "")])
    path = write_results("precision_quality", rows, {"variant": args.variant, "torch_threads": torch.get_num_threads()})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
