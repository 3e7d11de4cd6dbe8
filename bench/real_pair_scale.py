"""What would it take for the real pair's swaps to be recognised as their target? (issue #21)

    python bench/real_pair_scale.py [--variant pixelshuffle_icnr] [--runs steps=4000 steps=4000,width=32]
                                    [--max-faces 64] [--out bench/results/real_pair_scale]

Run in a checkout whose data stages (``dvc repro identity``) have run on the real pair (``data.demo.source:
talking-heads``). Each run trains one variant with seed 0 by the pipeline's own ``faceswap train`` with the
repository's params.yaml plus the run's overrides (``steps``, ``width``, ``batch``), then evaluates it with
``faceswap evaluate`` on the same test faces, into its own folder (models, curves, evaluation, pictures; no
MLflow), so the pipeline's outputs are left alone. Keys: ``steps``, ``width`` (model.width), ``batch``
(train.batch_size), ``lpips`` (train.loss.lpips_weight, the seed's perceptual term; params.yaml's
``lpips_every``/``lpips_images`` apply) and ``bg`` (train.loss.background_weight: the face-weighted pixel
term). The table sets, per run, the distances that decide the
verdict beside the identity stage's calibrated threshold: a real test face's, a reconstruction's and a swap's
distance to its own (target) centroid, the share of swaps verified as the target, the expression correlation,
and the reconstruction's PSNR and SSIM; plus the wall time on this machine. First, the sharpness floor: real test
faces blurred at σ 0.5–1.5 px, with their PSNR and the share still verified (``--floor-only``: just that).
Writes ``<out>/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
KEYS = ("truth_identity_distance", "recon_identity_distance", "swap_identity_distance", "swap_identity_verified_a2b",
        "swap_identity_verified_b2a", "swap_identity_success", "swap_expression_corr_a2b", "swap_expression_corr_b2a",
        "swap_mouth_corr", "recon_expression_corr", "recon_psnr_a", "recon_psnr_b", "recon_ssim_a", "recon_ssim_b",
        "identity_threshold", "swap_checkerboard_excess")
OVERRIDES = {"steps": ("train", "steps"), "width": ("model", "width"), "batch": ("train", "batch_size"),
             "lpips": ("train", "loss", "lpips_weight"), "bg": ("train", "loss", "background_weight")}


def parse_run(spec: str) -> dict[str, float]:
    out = {}
    for part in spec.split(","):
        key, _, value = part.partition("=")
        try:
            out[key] = float(value) if key in ("lpips", "bg") else int(value)
        except ValueError:
            out[key] = None
        if key not in OVERRIDES or out[key] is None:
            raise SystemExit(f"bad run {spec!r}: expected key=number,... with keys {', '.join(OVERRIDES)}")
    return out


def run_params(base: dict, run: dict[str, int], variant: str, folder: Path, max_faces: int) -> dict:
    p = json.loads(json.dumps(base))
    for key, value in run.items():
        *sections, name = OVERRIDES[key]
        node = p
        for section in sections:
            node = node[section]
        node[name] = value
    p["model"]["variants"] = [variant]
    p["train"]["seeds"] = [0]
    p["train"]["mlflow"] = False
    p["train"]["preview_every"] = 10 ** 9
    p["evaluate"]["mlflow"] = False
    p["evaluate"]["max_faces"] = max_faces
    rel = folder.relative_to(REPO)
    p["paths"].update(models=str(rel / "models"), train_metrics=str(rel / "train"),
                      train_curves=str(rel / "train" / "curves"), evaluations=str(rel / "evaluations"),
                      pictures=str(rel / "pictures"), variant_metrics=str(rel / "metrics"))
    return p


def sharpness_floor(sigmas: tuple[float, ...] = (0.5, 0.7, 1.0, 1.5), faces: int = 48) -> list[dict]:
    """How sharp must a face be to be verified? Real test faces (the validated split), Gaussian-blurred at each σ
    (px at the crop's size): their PSNR against the unblurred face, their median distance to their own centroid
    and the share verified as themselves, by the identity stage's own reference. A reconstruction's error is not a
    blur, but a blur's PSNR says what PSNR the descriptor's floor asks for."""
    import cv2
    import numpy as np
    import pandas as pd

    from faceswap.config import load_params
    from faceswap.identity_reference import IdentityReference
    from faceswap.imageio import read_rgb
    from faceswap.metrics.identity import shared_encoder, transfer_scores
    from faceswap.pictures import evenly_spaced

    paths = load_params(REPO / "params.yaml").paths
    ref = IdentityReference.load(REPO / paths.identity / "reference.npz")
    test = pd.read_parquet(REPO / paths.accepted).query("split == 'test'")
    a, b = ref.identities
    rows = []
    for t, o in ((a, b), (b, a)):
        g = test[test.identity == t].sort_values("face_id")
        ims = np.stack([read_rgb(REPO / paths.faces / p) for p in g.path.to_numpy()[evenly_spaced(len(g), faces)]])
        for sigma in (0.0, *sigmas):
            out = ims if sigma == 0 else np.stack([cv2.GaussianBlur(im, (0, 0), sigma) for im in ims])
            mse = ((out.astype(float) - ims.astype(float)) / 255) ** 2
            psnr = float(np.mean(10 * np.log10(1 / np.maximum(mse.mean(axis=(1, 2, 3)), 1e-10)))) if sigma else None
            r = transfer_scores(shared_encoder().describe(out, ref.coverage), o, t, ref.centroids, ref.threshold)
            rows.append({"identity": t, "sigma": sigma, "psnr": psnr, "verified": r["verified"],
                         "distance_median": float(np.median(r["distance_per_face"]))})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="pixelshuffle_icnr")
    ap.add_argument("--runs", nargs="+", default=["steps=1000", "steps=4000", "steps=4000,width=32"])
    ap.add_argument("--max-faces", type=int, default=64)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "real_pair_scale")
    ap.add_argument("--floor-only", action="store_true", help="only the sharpness floor (no training)")
    args = ap.parse_args()
    floor = sharpness_floor()
    if args.floor_only:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "floor.json").write_text(json.dumps(floor, indent=1))
        return
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    if base["data"]["demo"]["source"] != "talking-heads":
        print("note: params.yaml's data.demo.source is not talking-heads; measuring whatever data/ holds",
              file=sys.stderr)
    rows = []
    for spec in args.runs:
        run = parse_run(spec)
        name = spec.replace(",", "_").replace("=", "")
        folder = (args.out / name).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        params = folder / "params.yaml"
        params.write_text(yaml.safe_dump(run_params(base, run, args.variant, folder, args.max_faces)))
        t0 = time.perf_counter()
        for cmd in (["train", "--variant", args.variant, "--seed", "0"], ["evaluate", "--variant", args.variant]):
            subprocess.run([sys.executable, "-m", "faceswap.cli", *cmd, "--params", str(params)], cwd=REPO,
                           check=True)
        wall = time.perf_counter() - t0
        record = json.loads((folder / "evaluations" / f"{args.variant}.json").read_text())
        m = record["metrics"]
        rows.append({"run": spec, "wall_s": round(wall, 1), **{k: m.get(k) for k in KEYS}})
        print(json.dumps(rows[-1]), flush=True)
    (args.out / "summary.json").write_text(json.dumps({"variant": args.variant, "max_faces": args.max_faces,
                                                       "rows": rows, "floor": floor}, indent=1))
    head = ("run", "wall s", "thr", "truth d", "recon d", "swap d", "verified a→b", "b→a", "expr r a→b", "b→a",
            "PSNR a", "PSNR b")
    shown = ("identity_threshold", "truth_identity_distance", "recon_identity_distance", "swap_identity_distance",
             "swap_identity_verified_a2b", "swap_identity_verified_b2a", "swap_expression_corr_a2b",
             "swap_expression_corr_b2a", "recon_psnr_a", "recon_psnr_b")
    from faceswap.tables import markdown_table

    print(markdown_table(head, [[r["run"], f"{r['wall_s']:.0f}", *("–" if r[k] is None else f"{r[k]:.3f}"
                                                                  for k in shown)] for r in rows]))


if __name__ == "__main__":
    main()
