"""Validation of the checkerboard score on the demo's real crops (the figures in docs/metrics.md).

    python bench/checkerboard.py [--faces DIR] [--frames DIR] [--models DIR] [--out bench/results]

- clean ground truth: per-image score quantiles and the set score per identity and split, also for the
  same faces re-cut from their frames at other coverages and sizes (when ``--frames`` exists);
- planted grids (checkerboard and 1-px lines, periods 2, 4, 8; RMS = amplitude × the crop's RMS, the same
  on every crop) on the held-out crops: set score per amplitude, and the amplitude that crosses 0.03;
- for every ``<models>/<variant>/model.pt``: the set score of its reconstructions and of its swaps in both
  directions, each swap direction against the target identity's ground truth (as ``evaluate`` does).

Prints the tables and writes ``checkerboard.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from faceswap.config import load_params

REPO = Path(__file__).resolve().parents[1]
AMPS = (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.1)
PROPOSED_GATE = 0.03


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = load_params(REPO / "params.yaml").paths  # the pipeline's own outputs, where params.yaml puts them
    ap.add_argument("--faces", type=Path, default=REPO / where.faces)
    ap.add_argument("--frames", type=Path, default=REPO / where.frames)
    ap.add_argument("--models", type=Path, default=REPO / where.models)
    ap.add_argument("--out", type=Path, default=REPO / "bench/results")
    args = ap.parse_args(argv)

    import pandas as pd

    from faceswap.data.geometry import face_template, umeyama, warp_face
    from faceswap.imageio import read_rgb
    from faceswap.metrics.checkerboard import (
        checkerboard_score,
        checkerboard_score_set,
        decoder_grid_score,
        plant_lattice,
    )

    df = pd.read_parquet(args.faces / "manifest.parquet")
    res: dict = {"clean": [], "planted": [], "models": {}}
    sets: dict = {}
    print("clean ground truth: per-image median / p95 / max, set score")
    for (ident, split), rows in df.groupby(["identity", "split"]):
        variants = {("crops", 0.0): np.stack([read_rgb(args.faces / p) for p in rows.path])}
        if args.frames.is_dir():
            for size in (64, 128):
                for cov in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
                    t = face_template(size, cov)
                    variants[f"recut {size}", cov] = np.stack([
                        warp_face(read_rgb(args.frames / fp), umeyama(np.asarray(lm.tolist(), float), t), size)
                        for fp, lm in zip(rows.frame_path, rows.landmarks_src, strict=True)])
        sets[ident, split] = variants["crops", 0.0]
        for (what, cov), ims in variants.items():
            pi = np.array([checkerboard_score(im).score for im in ims])
            row = {"identity": ident, "split": split, "images": what, "coverage": cov or None, "n": len(ims),
                   "median": float(np.median(pi)), "p95": float(np.quantile(pi, 0.95)), "max": float(pi.max()),
                   "set": checkerboard_score_set(list(ims)).score}
            res["clean"].append(row)
            print(f"  {ident} {split:5s} {what:10s} cov {cov or '-':<4} n={len(ims):3d}  {row['median']:.4f} / "
                  f"{row['p95']:.4f} / {row['max']:.4f}  set {row['set']:.4f}")

    print(f"planted grids on the held-out crops (set score; amplitudes {AMPS})")
    for ident in sorted({i for i, _ in sets}):
        faces = sets[ident, "val"]
        for kind in ("checker", "screen"):
            for period in (2, 4, 8):
                s = [checkerboard_score_set([plant_lattice(f, a, period, kind) for f in faces]).score for a in AMPS]
                cross = next((a for a, v in zip(AMPS, s, strict=True) if v > PROPOSED_GATE), None)
                res["planted"].append({"identity": ident, "kind": kind, "period": period, "scores": s,
                                       "crosses_proposed_gate_at": cross})
                print(f"  {ident} {kind:7s} p{period}: " + " ".join(f"{v:.3f}" for v in s) + f"  crosses at {cross}")

    if args.models.is_dir():
        import torch

        from faceswap.checkpoint import load_model

        truth = {i: sets[i, "val"] for i in sorted({i for i, _ in sets})}
        a, b = sorted(truth)
        for path in sorted(args.models.glob("*/model.pt")):
            model, ckpt = load_model(path)
            model.eval()
            out: dict = {"step": ckpt.get("step")}
            with torch.no_grad():
                for src, dst in ((a, b), (b, a)):
                    x = torch.from_numpy(truth[src]).permute(0, 3, 1, 2).float() / 255
                    z = model.encode(x)
                    rec = model.decode(z, src).permute(0, 2, 3, 1).numpy() * 255
                    swp = model.decode(z, dst).permute(0, 2, 3, 1).numpy() * 255
                    out[f"recon_{src}"] = decoder_grid_score(list(rec), list(truth[src]))
                    out[f"swap_{src}2{dst}"] = decoder_grid_score(list(swp), list(truth[dst]))
            res["models"][path.parent.name] = out
            print(f"  {path.parent.name:18s} step {out['step']}: " + "  ".join(
                f"{k} {v['score']:.4f} (excess {v['excess']:+.4f})" for k, v in out.items() if k != "step"))

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "checkerboard.json").write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    sys.exit(main() and 0)
