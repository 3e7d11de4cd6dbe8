"""Does dlib's identity descriptor separate the demo's two people at the demo's crop size? (docs/metrics.md)

    python bench/identity.py [--faces DIR] [--frames DIR] [--size 64] [--modes template shape5]

On the aligned crops of the align stage (manifest.parquet: identity, split, path relative to --faces): pairwise
descriptor distances within a, within b and between a and b; how well they separate (ROC AUC of "different
person" over "same person" pairs, d′, share of pairs on the wrong side of dlib's 0.6); the share of val crops
nearer their own identity's centroid (train crops) than the other's, i.e. ``identity_transfer`` on truth
crops (the ceiling) and on the source crops themselves as a "swap that keeps the source" (the floor); the same
after Gaussian blur (what a blurry swap looks like); and the time per face. ``--size N`` re-cuts every crop
from its frame at N² with the align stage's own transform (scaled), to see what a larger crop buys.
Writes bench/results/identity_<size>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from faceswap.config import load_params
from faceswap.metrics.identity import SAME_PERSON_THRESHOLD, IdentityEncoder, transfer_scores

RESULTS = Path(__file__).resolve().parent / "results"


def load(faces: Path, frames: Path, size: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, int]:
    import pandas as pd

    from faceswap.data.geometry import warp_face
    from faceswap.imageio import read_rgb

    man = pd.read_parquet(faces / "manifest.parquet").sort_values("face_id")
    native = int(man["width"].iloc[0])
    coverage = 0.8
    report = faces / "report.json"
    if report.is_file():  # the stage's coverage is not in the manifest; params.yaml's default is 0.8
        coverage = float(json.loads(report.read_text()).get("coverage", coverage))
    if size is None or size == native:
        crops = np.stack([read_rgb(faces / p) for p in man["path"]])
    else:
        crops = np.stack([
            warp_face(read_rgb(frames / fp), np.stack([np.asarray(r, float) for r in m]) * (size / native), size)
            for fp, m in zip(man["frame_path"], man["matrix"], strict=True)
        ])
    return crops, man["identity"].to_numpy(), man["split"].to_numpy(), coverage, crops.shape[1]


def pair_stats(d: np.ndarray) -> dict:
    return {"n": len(d), "mean": float(d.mean()), "median": float(np.median(d)), "p5": float(np.percentile(d, 5)),
            "p95": float(np.percentile(d, 95)), "min": float(d.min()), "max": float(d.max())}


def separation(desc: np.ndarray, ids: np.ndarray) -> dict:
    from scipy.stats import mannwhitneyu

    dist = np.linalg.norm(desc[:, None] - desc[None], axis=2)
    iu = np.triu_indices(len(desc), 1)
    same_pair = (ids[:, None] == ids[None])[iu]
    dd = dist[iu]
    out = {}
    for a in sorted(set(ids)):
        m = (ids[:, None] == a) & (ids[None] == a)
        out[f"within_{a}"] = pair_stats(dist[iu][m[iu]])
    out["between"] = pair_stats(dd[~same_pair])
    same, diff = dd[same_pair], dd[~same_pair]
    out["auc"] = float(mannwhitneyu(diff, same).statistic / (len(diff) * len(same)))
    out["d_prime"] = float((diff.mean() - same.mean()) / np.sqrt(0.5 * (diff.var() + same.var())))
    out["same_above_0.6"] = float((same > SAME_PERSON_THRESHOLD).mean())
    out["different_below_0.6"] = float((diff < SAME_PERSON_THRESHOLD).mean())
    return out


def transfer(desc: np.ndarray, ids: np.ndarray, split: np.ndarray) -> tuple[dict, dict]:
    a, b = sorted(set(ids))
    cents = {i: desc[(ids == i) & (split == "train")].mean(0) for i in (a, b)}
    res = {"centroid_distance": float(np.linalg.norm(cents[a] - cents[b]))}
    for src, tgt in ((a, b), (b, a)):
        truth = transfer_scores(desc[(ids == tgt) & (split == "val")], src, tgt, cents)
        keeps = transfer_scores(desc[(ids == src) & (split == "val")], src, tgt, cents)
        res[f"truth_{tgt}"] = {k: truth[k] for k in ("success", "distance", "distance_source", "n")}
        res[f"keeps_source_{src}_to_{tgt}"] = {k: keeps[k] for k in ("success", "distance", "distance_source", "n")}
    return res, cents


def main() -> None:
    import cv2

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    where = load_params().paths  # the pipeline's own outputs, where params.yaml puts them
    ap.add_argument("--faces", type=Path, default=Path(where.faces))
    ap.add_argument("--frames", type=Path, default=Path(where.frames))
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--modes", nargs="+", default=["template", "shape5"])
    ap.add_argument("--blur", nargs="*", type=float, default=[1.0, 2.0], help="Gaussian σ at 64² (scaled by size)")
    args = ap.parse_args()
    crops, ids, split, coverage, size = load(args.faces, args.frames, args.size)
    counts = ", ".join(f"{i}/{s} {int(((ids == i) & (split == s)).sum())}" for i in sorted(set(ids))
                       for s in ("train", "val"))
    print(f"{len(crops)} crops {size}², coverage {coverage}: {counts}")
    results: dict = {"size": size, "coverage": coverage, "faces": len(crops), "modes": {}}
    for mode in args.modes:
        enc = IdentityEncoder(mode)
        enc.describe(crops[:2], coverage)  # warm-up
        t0 = time.perf_counter()
        desc = enc.describe(crops, coverage)
        ms = 1000 * (time.perf_counter() - t0) / len(crops)
        r = {"ms_per_face": ms, **separation(desc, ids)}
        tr, cents = transfer(desc, ids, split)
        r.update(tr)
        val = split == "val"
        for sigma in args.blur:
            s = sigma * size / 64
            blurred = np.stack([cv2.GaussianBlur(c, (0, 0), s) for c in crops[val]])
            bd = enc.describe(blurred, coverage)
            own = []
            for tgt in sorted(set(ids)):
                src = next(i for i in cents if i != tgt)
                own.append(transfer_scores(bd[ids[val] == tgt], src, tgt, cents))
            n = sum(o["n"] for o in own)
            r[f"truth_blur_{sigma:g}"] = {
                "success": sum(o["success"] * o["n"] for o in own) / n,
                "distance": sum(o["distance"] * o["n"] for o in own) / n,
                "distance_other": sum(o["distance_source"] * o["n"] for o in own) / n,
            }
        results["modes"][mode] = r
        w = {k: r[k] for k in r if k.startswith("within_")}
        print(f"\n[{mode}] {ms:.0f} ms/face; AUC {r['auc']:.4f}, d′ {r['d_prime']:.2f}, same>0.6 "
              f"{r['same_above_0.6']:.3f}, different<0.6 {r['different_below_0.6']:.3f}; centroids "
              f"{r['centroid_distance']:.3f} apart")
        for k, v in [*w.items(), ("between", r["between"])]:
            print(f"  {k:10s} mean {v['mean']:.3f} median {v['median']:.3f} p5 {v['p5']:.3f} p95 {v['p95']:.3f} "
                  f"[{v['min']:.3f}, {v['max']:.3f}]")
        for k, v in r.items():
            if k.startswith(("truth_", "keeps_")):
                print(f"  {k:22s} success {v['success']:.3f}, distance {v['distance']:.3f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"identity_{size}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
