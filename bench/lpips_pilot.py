"""Which LPIPS network puts a grid into a decoder, and at what weight? The pilot of the grid experiment (issue #22).

    python bench/lpips_pilot.py [--root .] [--steps 200] [--cells ct-l1 ct-alex-0.1 ...]

Each cell is a short run of ``faceswap.train.train`` on the profile ``grid-128`` (128², width 32; the faces the
data stages aligned under ``--root``, e.g. a clone where ``dvc exp run $(faceswap profile grid-128) validate`` ran),
changing only the decoder and the LPIPS term (net, weight; every step, the whole batch). The training logs the
decoder grid at every validation (``val/grid_swap``, ``val/grid_recon``, ``val/flat_grid``;
:func:`faceswap.train.validation_grid`), so the table shows each cell's grid at init-ish (first validation),
its peak and its end, with the step rate: which net makes a grid (the loss to train with in the LPIPS cell), and
which the evaluation must therefore not use as its metric. Writes bench/results/lpips_pilot.json (``--out``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from _common import print_table, write_results
from faceswap.config import load_params, with_overrides
from faceswap.train import train

#: cell name → (decoder, lpips net, lpips weight, images per identity the LPIPS term sees; None = the batch).
#: vgg sees 2 of the 8: a full vgg batch at 128² trains at 3 images/s on 2 cores (alex: 27, pixel only: 44)
CELLS = {
    "ct-l1": ("convtranspose", "none", 0.0, None),
    "ct-alex-0.1": ("convtranspose", "alex", 0.1, None),
    "ct-alex-1": ("convtranspose", "alex", 1.0, None),
    "ct-vgg-0.1": ("convtranspose", "vgg", 0.1, 2),
    "ct-vgg-1": ("convtranspose", "vgg", 1.0, 2),
    "rn-l1": ("resize_nearest", "none", 0.0, None),
    "rn-alex-1": ("resize_nearest", "alex", 1.0, None),
    "rn-vgg-1": ("resize_nearest", "vgg", 1.0, 2),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("."), help="repository whose data stages ran at 128²")
    ap.add_argument("--profile", type=Path, default=Path(__file__).resolve().parents[1] / "profiles/grid-128.yaml")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--val-every", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/lpips_pilot.json)")
    args = ap.parse_args()
    root = args.root.resolve()
    os.chdir(root)  # params.yaml's paths are relative to the repository root
    base = with_overrides(load_params(root / "params.yaml"), yaml.safe_load(args.profile.read_text()),
                          str(args.profile), unset=object())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cells:
            decoder, net, weight, lp_images = CELLS[name]
            p = with_overrides(base, {
                "train.steps": args.steps, "train.val_every": args.val_every, "train.mlflow": False,
                "train.checkpoint_every": args.steps, "train.preview_every": args.steps,
                "train.loss.lpips_net": net, "train.loss.lpips_weight": weight,
                "train.loss.lpips_images": lp_images}, f"pilot cell {name}")
            t0 = time.perf_counter()
            r = train(p, decoder, Path(tmp) / name, manifest=p.paths.accepted, faces_dir=p.paths.faces,
                      seed=args.seed, progress=False)
            wall = time.perf_counter() - t0
            c = r.curves
            swap, recon, flat = (np.asarray(v, float) for v in (c.grid_swap, c.grid_recon, c.flat_grid))
            rows.append({
                "cell": name, "decoder": decoder, "lpips_net": net, "lpips_weight": weight, "lpips_images": lp_images,
                "steps": r.outcome.step,
                "images_per_s": r.speed.images_per_s, "wall_s": wall, "val_loss": r.best.val_loss,
                "grid_swap_first": float(swap[0]), "grid_swap_max": float(np.nanmax(swap)),
                "grid_swap_end": float(swap[-1]), "grid_recon_end": float(recon[-1]),
                "flat_grid_first": float(flat[0]), "flat_grid_end": float(flat[-1]),
                "val_step": list(c.val_step), "grid_swap": swap.tolist(), "grid_recon": recon.tolist(),
                "flat_grid": flat.tolist()})
            print(f"  {name}: {r.speed.images_per_s:.0f} images/s, grid_swap {swap[0]:.4f} → {swap[-1]:.4f} "
                  f"(max {np.nanmax(swap):.4f}), flat {flat[0]:.3f} → {flat[-1]:.3f}", flush=True)
    print_table(rows, [("cell", "cell", ""), ("images_per_s", "images/s", ".0f"), ("val_loss", "val loss", ".4f"),
                       ("grid_swap_first", "swap grid, 1st val", ".4f"), ("grid_swap_max", "max", ".4f"),
                       ("grid_swap_end", "end", ".4f"), ("grid_recon_end", "recon grid end", ".4f"),
                       ("flat_grid_first", "flat 1st", ".3f"), ("flat_grid_end", "flat end", ".3f")])
    out = args.out or Path(__file__).resolve().parent / "results" / "lpips_pilot.json"
    print(write_results(out.stem, rows, {"steps": args.steps, "seed": args.seed, "profile": args.profile.name},
                        out.parent))


if __name__ == "__main__":
    main()
