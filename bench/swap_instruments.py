"""Validate the swap instruments on the real pair's crops before anything gates on them (docs/metrics.md).

    python bench/swap_instruments.py [--models NAME=PATH/model.pt ...] [--faces 64] [--data-root .]
                                     [--out bench/results/swap_instruments]

Reads the held-out (test) crops that the pipeline's own data stages made (``dvc repro identity`` first) and
measures, for each identity, planted cases whose answer is known:

1. **Identity at matched sharpness** (:func:`faceswap.metrics.identity.gallery_retrieval`): real test faces
   blurred at σ ∈ {0, 0.7, 1, 1.5, 2} px, galleries of the same blur (leave-one-out), so every query is as sharp
   as its galleries. Impostors: a face of one man scored as the other. The margin is the largest 99th percentile
   of impostor scores over the blurs (clipped at 0), so the other man passes ≤ 1% at every sharpness; FAR and
   FRR per blur at that margin, and the target's mean face (retrieved: identity alone cannot see a collapse).
2. **Collapse**, **structure followed** (:mod:`faceswap.metrics.collapse`) and **expression on every swap**:
   "swaps" that are the faces themselves (1 and 1), the same faces 0.8 s late (varied, not following), the
   target's mean face for every source (0 and 0), that mean face at a random brightness per source (varied, not
   following), that mean face plus per-source noise (a smear: the low-pass must read it as collapsed where
   a per-pixel spread does not), and, for each ``--models`` checkpoint, its real swaps and reconstructions.

Bootstrap 95% intervals over faces. Writes ``<out>/summary.json`` and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BLURS = (0.0, 0.7, 1.0, 1.5, 2.0)
LATE = 5  # sampled frames: every 4th frame at 24-25 fps, so 5 of them ≈ 0.8 s


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    if sigma <= 0:
        return images
    return np.stack([cv2.GaussianBlur(im, (0, 0), sigma) for im in images])


def ci(values: np.ndarray, stat=np.mean, samples: int = 2000, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    v = np.asarray(values, float)
    boots = [stat(v[rng.integers(0, len(v), len(v))]) for _ in range(samples)]
    return [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]


def identity_calibration(faces: dict[str, np.ndarray], coverage: float) -> dict:
    from faceswap.metrics.identity import gallery_retrieval, shared_encoder

    enc = shared_encoder()
    (_, fa), (_, fb) = faces.items()
    rows, impostor_p99 = [], []
    for sigma in BLURS:
        da, db = enc.describe(blur(fa, sigma), coverage), enc.describe(blur(fb, sigma), coverage)
        # impostors: a's faces scored "as b" (source gallery a, leave-one-out), and b's "as a"
        imp = np.concatenate([gallery_retrieval(da, da, db, leave_out=True)["score_per_face"],
                              gallery_retrieval(db, db, da, leave_out=True)["score_per_face"]])
        # genuine: b's faces scored as b against a's gallery (target gallery b without the query itself)
        gen = np.concatenate([-np.asarray(gallery_retrieval(db, db, da, leave_out=True)["score_per_face"]),
                              -np.asarray(gallery_retrieval(da, da, db, leave_out=True)["score_per_face"])])
        impostor_p99.append(float(np.percentile(imp, 99)))
        mean_b = enc.describe(blur(fb.mean(0, keepdims=True).round().astype(np.uint8), sigma), coverage)
        mean_score = gallery_retrieval(mean_b, da, db)["score"]
        rows.append({"sigma": sigma, "impostor": imp.tolist(), "genuine": gen.tolist(), "mean_face_score": mean_score})
    margin = max(0.0, max(impostor_p99))
    table = []
    for r in rows:
        imp, gen = np.asarray(r.pop("impostor")), np.asarray(r.pop("genuine"))
        table.append({**r, "far": float((imp > margin).mean()), "frr": float((gen <= margin).mean()),
                      "far_ci": ci(imp > margin), "frr_ci": ci(gen <= margin),
                      "impostor_p99": float(np.percentile(imp, 99)), "genuine_median": float(np.median(gen)),
                      "mean_face_retrieved": bool(r["mean_face_score"] > margin)})
    return {"margin": round(margin, 4), "blurs": table}


def following(name: str, swaps: dict[str, np.ndarray], recons: dict[str, np.ndarray], sources: dict[str, np.ndarray],
              coverage: float, drawn: tuple[dict, dict] | None = None) -> dict:
    """Collapse and every-swap expression of planted or real swaps, per direction (source identity → other);
    ``drawn``: (swaps, recons) as the decoders drew them, for collapse and structure (as evaluation does)."""
    from faceswap.data.template import face_region
    from faceswap.metrics.collapse import following as collapse_and_structure
    from faceswap.metrics.expression import measure_expressions, preservation

    out = {"case": name}
    for src in sources:
        s, r = (drawn[0][src], drawn[1][src]) if drawn else (swaps[src], recons[src])
        region = face_region(s.shape[1], coverage)
        s01, r01 = s.astype(np.float32) / 255, r.astype(np.float32) / 255
        c, structure = collapse_and_structure(s01, r01, region)
        flat = ((s.reshape(len(s), -1) - s.reshape(len(s), -1).mean(0)) ** 2).sum(1).mean() / max(
            ((r.reshape(len(r), -1) - r.reshape(len(r), -1).mean(0)) ** 2).sum(1).mean(), 1e-12)
        src_x = measure_expressions(sources[src], coverage)
        every = measure_expressions(swaps[src], coverage, face_check=False, require_fit=False)
        p = preservation(src_x, every, coverage=coverage)
        out[src] = {"collapse": c["ratio"], "collapse_ci": ci(np.asarray(c["per_face"])),
                    "follow_structure": structure,
                    "pixel_spread_ratio": float(flat), "mouth_r": p["mouth_corr"],
                    "mouth_ci": [p["mouth"]["ci_lo"], p["mouth"]["ci_hi"]], "expression_r": p["corr_mean"],
                    "unmeasured": float((~every.fitted).mean())}
    return out


def model_outputs(path: Path, faces: dict[str, np.ndarray]) -> tuple[dict, dict, tuple[dict, dict]]:
    import torch

    from faceswap.checkpoint import load_model
    from faceswap.pictures import to_uint8

    model, _ = load_model(path)
    (a, fa), (b, fb) = faces.items()
    swaps, recons, drawn_swaps, drawn_recons = {}, {}, {}, {}
    with torch.inference_mode():
        for ident, other, f in ((a, b, fa), (b, a, fb)):
            x = torch.from_numpy(f).permute(0, 3, 1, 2).float() / 255
            z = model.encode(x)
            rec, swp = model.decode(z, ident), model.decode(z, other)
            recons[ident], swaps[ident] = to_uint8(model.composite(rec, x)), to_uint8(model.composite(swp, x))
            drawn_recons[ident], drawn_swaps[ident] = to_uint8(rec), to_uint8(swp)
    return swaps, recons, (drawn_swaps, drawn_recons)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=[], help="NAME=path/to/model.pt: real swaps to measure")
    ap.add_argument("--faces", type=int, default=64, help="test faces per identity (evenly spaced)")
    ap.add_argument("--data-root", type=Path, default=REPO)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "swap_instruments")
    args = ap.parse_args()

    from faceswap.config import load_params
    from faceswap.data.dataset import load_faces

    params = load_params(args.data_root / "params.yaml")
    paths, ids = params.paths, tuple(params.base.identities)
    root = args.data_root.resolve()
    sets = load_faces(root / paths.accepted, ids, "test", params.base.image_size, faces_dir=root / paths.faces)
    coverage = params.align.coverage
    # consecutive faces (for "0.8 s late"), the first `faces` of every identity's test faces in time order
    faces = {i: fs.images[: args.faces + LATE] for i, fs in sets.items()}
    now = {i: f[: args.faces] for i, f in faces.items()}
    late = {i: f[LATE: args.faces + LATE] for i, f in faces.items()}
    (a, b) = ids
    other = {a: b, b: a}
    mean_face = {i: np.repeat(now[other[i]].mean(0, keepdims=True).round().astype(np.uint8), args.faces, 0)
                 for i in ids}
    rng = np.random.default_rng(0)
    lit = {i: np.clip(mean_face[i] * rng.uniform(0.7, 1.3, (args.faces, 1, 1, 1)), 0, 255).astype(np.uint8)
           for i in ids}
    smear = {i: np.clip(mean_face[i].astype(float) + rng.normal(0, 25, mean_face[i].shape), 0, 255).astype(np.uint8)
             for i in ids}

    calibration = identity_calibration(now, coverage)
    cases = [following("itself", now, now, now, coverage),
             following("0.8 s late", late, now, now, coverage),
             following("target's mean face", mean_face, now, now, coverage),
             following("mean face, brightness varied", lit, now, now, coverage),
             following("mean face + noise (smear)", smear, now, now, coverage)]
    for spec in args.models:
        name, _, path = spec.partition("=")
        swaps, recons, drawn = model_outputs(Path(path), now)
        cases.append(following(name, swaps, recons, now, coverage, drawn))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps({"faces": args.faces, "identity": calibration,
                                                       "following": cases}, indent=1))
    print(f"retrieval margin (max p99 of impostor scores over blurs): {calibration['margin']:.4f}")
    from faceswap.tables import markdown_table

    print(markdown_table(
        ["blur σ px", "FAR", "FRR", "impostor p99", "genuine median", "target's mean face retrieved"],
        [[r["sigma"], f"{r['far']:.3f}", f"{r['frr']:.3f}", f"{r['impostor_p99']:.3f}", f"{r['genuine_median']:.3f}",
          r["mean_face_retrieved"]] for r in calibration["blurs"]]))
    print()
    print(markdown_table(
        ["case", "dir", "collapse [95% CI]", "per-pixel spread ratio", "structure r", "mouth r [95% CI]",
         "expression r", "unmeasured"],
        [[c["case"], f"{i}→{other[i]}", f"{d['collapse']:.2f} [{d['collapse_ci'][0]:.2f}, {d['collapse_ci'][1]:.2f}]",
          f"{d['pixel_spread_ratio']:.2f}", f"{d['follow_structure']:.2f}",
          f"{d['mouth_r']:.2f} [{d['mouth_ci'][0]:.2f}, {d['mouth_ci'][1]:.2f}]", f"{d['expression_r']:.2f}",
          f"{d['unmeasured']:.2f}"] for c in cases for i in ids for d in [c[i]]]))


if __name__ == "__main__":
    main()
