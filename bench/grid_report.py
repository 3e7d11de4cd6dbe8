"""The grid experiment's verdict material (issue #22), read back from its DVC experiments.

    python bench/grid_report.py --repo CLONE --snap SNAP [--exps grid-pixel grid-lpips grid-positive grid-phase]

Every number comes from what the cells of ``bench/grid_experiment.sh`` wrote, nothing is re-run: params, models
and grid curves from their DVC experiments (refs in ``--repo``, read with ``dvc.api``: the models from DVC's
cache, the curves from each experiment's commit), and the outputs the pipeline keeps out of the cache and out of
git (``cache: false``: evaluation records, pictures) from ``SNAP/<cell>/reports``, the copy of the workspace
taken as each cell finished (the next cell overwrites them):

* ``<out>/summary.json``: one row per cell × variant × seed (the evaluation's ``per_seed`` numbers) and one per
  cell × variant (mean over seeds with the evaluation's 95% CIs), and the grid over training (``grid.csv``);
* ``<out>/<cell>/<variant>.json``: each evaluation record, without its per-image arrays (what the registry's
  rule reads: tests/test_registry_grid128.py checks the gate on them), and in ``summary.json`` what the
  project's register rule decides among each cell's variants;
* ``<img>/grid128-curves.png``: grid score of validation swaps and the flat-field probe over training, per cell
  and variant (mean over seeds);
* ``<img>/grid128-flat.png``: the flat skin-colour code decoded by identity b's decoder of each cell's seed-0
  model (centre 32², ×6 nearest-neighbour; the detail finer than a σ = 2 px Gaussian blur, ×16, so a faint
  lattice shows and the decoder's smooth "average face" shading does not);
* ``<img>/grid128-zoom.png``: the evaluation's zoomed flattest region of a test face (truth | recon | swap) for
  convtranspose and resize_nearest in every cell.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from faceswap.checkpoint import load_model
from faceswap.metrics.flatfield import DEFAULT_SKIN

HERE = Path(__file__).resolve().parent
#: one colour per decoder variant in every panel
COLOURS = {"convtranspose": "tab:blue", "pixelshuffle": "tab:orange", "pixelshuffle_icnr": "tab:green",
           "resize_bilinear": "tab:red", "resize_nearest": "tab:purple"}
CELLS = ("grid-pixel", "grid-lpips", "grid-positive", "grid-phase")
#: the table's columns: metric name in the evaluation record → short label
COLUMNS = {
    "swap_checkerboard_excess": "swap grid",
    "recon_checkerboard_excess": "recon grid",
    "flat_grid_score": "flat grid",
    "flat_lattice_share": "flat lattice share",
    "recon_lpips": "LPIPS (eval net)",
    "recon_psnr": "PSNR dB",
    "recon_ssim": "SSIM",
    "swap_identity_success": "identity nearer",
    "swap_identity_verified": "identity verified",
    "swap_expression_corr": "expression r",
}


def _read(repo: Path, path: str, rev: str, mode: str = "r"):
    import dvc.api

    return dvc.api.read(path, repo=str(repo), rev=rev, mode=mode)


def cell_params(repo: Path, rev: str) -> dict:
    p = yaml.safe_load(_read(repo, "params.yaml", rev))
    loss = p["train"]["loss"]
    return {"variants": list(p["model"]["variants"]), "seeds": list(p["train"]["seeds"]),
            "lpips_net": loss["lpips_net"], "lpips_weight": float(loss["lpips_weight"]),
            "lpips_shift": int(loss.get("lpips_shift", 0)), "steps": int(p["train"]["steps"]),
            "image_size": int(p["base"]["image_size"]), "eval_lpips_net": p["evaluate"]["lpips_net"],
            "paths": p["paths"]}


def collect(repo: Path, snap: Path, cell: str, out: Path) -> tuple[dict, list[dict], list[dict]]:
    """(params, rows: per seed and mean, curves) of one cell; writes the trimmed evaluation records."""
    cp = cell_params(repo, cell)
    rows, curves = [], []
    for v in cp["variants"]:
        rec = json.loads((snap / cell / cp["paths"]["evaluations"] / f"{v}.json").read_text())
        rec["per_image"] = {}
        (out / cell).mkdir(parents=True, exist_ok=True)
        (out / cell / f"{v}.json").write_text(json.dumps(rec, indent=1) + "\n")
        base = {"cell": cell, "variant": v, "lpips_weight": cp["lpips_weight"], "lpips_shift": cp["lpips_shift"],
                "steps": rec["step"]}
        for seed, m in sorted(rec["per_seed"].items()):
            rows.append({**base, "seed": seed, **{k: m.get(k) for k in COLUMNS}})
        mean = {**base, "seed": "mean"}
        for k in COLUMNS:
            mean[k] = rec["metrics"].get(k)
            est = rec["estimates"].get(k) or {}
            mean[f"{k}_ci"] = [est.get("ci_lo"), est.get("ci_hi")] if est.get("ci_lo") is not None else None
        rows.append(mean)
        for s in cp["seeds"]:
            csv = _read(repo, f"{cp['paths']['train_curves']}/{v}/seed{s}/grid.csv", cell)  # git-tracked
            df = pd.read_csv(io.StringIO(csv))
            curves += [{"cell": cell, "variant": v, "seed": s, **r} for r in df.to_dict("records")]
    return cp, rows, curves


def registry_verdict(records: Path) -> dict:
    """What the project's register rule (params.yaml ``register``) decides among one cell's evaluated variants."""
    from faceswap.config import load_params
    from faceswap.evaluation.record import EvaluationRecord
    from faceswap.registry import Candidate, select

    rule = load_params(HERE.parent / "params.yaml").registry
    cands = [Candidate.of(EvaluationRecord.from_json(json.loads(f.read_text()), str(f)))
             for f in sorted(records.glob("*.json"))]
    win, reason = select(cands, rule)
    return {"winner": win.variant if win else None, "reason": reason,
            "variants": {c.variant: {"qualifies": c.qualifies, "rank": c.rank, "note": c.note} for c in cands}}


def flat_decode(repo: Path, cell: str, variant: str, cp: dict, identity: str = "b") -> np.ndarray:
    """The flat skin-colour code through ``identity``'s decoder of the seed-0 model, as uint8 RGB."""
    blob = _read(repo, f"{cp['paths']['models']}/{variant}/seed{cp['seeds'][0]}/model.pt", cell, mode="rb")
    with tempfile.NamedTemporaryFile(suffix=".pt") as f:
        f.write(blob)
        f.flush()
        model, _ = load_model(f.name, "cpu")
    model.eval()
    n = model.config.image_size
    flat = torch.tensor(DEFAULT_SKIN).view(1, 3, 1, 1).expand(1, 3, n, n).contiguous()
    with torch.no_grad():
        out = model.decode(model.encode(flat), identity)[0].permute(1, 2, 0).clamp(0, 1).numpy()
    return out


def picture_grid(plt, rows: int, cols: int, tile: tuple[float, float]):
    """A rows × cols figure of picture panels (no ticks), each ``tile`` inches."""
    fig, axes = plt.subplots(rows, cols, figsize=(tile[0] * cols, tile[1] * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def flat_figure(tiles: dict[tuple[str, str], np.ndarray], path: Path, crop: int = 32, stretch: float = 16.0) -> None:
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted({c for c, _ in tiles}, key=CELLS.index)
    variants = sorted({v for _, v in tiles})
    fig, axes = picture_grid(plt, len(cells), len(variants), (2.2, 2.4))
    for i, c in enumerate(cells):
        for j, v in enumerate(variants):
            ax = axes[i][j]
            if (c, v) not in tiles:
                ax.axis("off")
                continue
            im = tiles[(c, v)]
            n = im.shape[0]
            y0 = (n - crop) // 2
            win = im[y0:y0 + crop, y0:y0 + crop].astype(np.float32)
            shown = np.clip((win - cv2.GaussianBlur(win, (0, 0), 2.0)) * stretch + 0.5, 0, 1)  # the fine detail
            ax.imshow(np.repeat(np.repeat(shown, 6, 0), 6, 1), interpolation="nearest")
            if i == 0 or j == 0:
                ax.set_title(v if i == 0 else "", fontsize=8)
            if j == 0:
                ax.set_ylabel(c, fontsize=8)
    fig.suptitle(f"flat skin code decoded (decoder b), centre {crop}²: detail finer than a σ = 2 px blur, ×{stretch:g}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def zoom_figure(snap: Path, cells: list[str], params: dict, path: Path,
                variants: tuple[str, ...] = ("convtranspose", "resize_nearest")) -> None:
    """The evaluation's own ``zoom.png`` (flattest region of the first test face of each identity: truth | recon
    | swap, ×8) for ``variants`` in every cell, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from faceswap.imageio import read_rgb

    fig, axes = picture_grid(plt, len(cells), len(variants), (4.2, 2.9))
    for i, c in enumerate(cells):
        for j, v in enumerate(variants):
            ax = axes[i][j]
            if v not in params[c]["variants"]:
                ax.axis("off")
                continue
            ax.imshow(read_rgb(snap / c / params[c]["paths"]["pictures"] / v / "zoom.png"), interpolation="nearest")
            ax.set_title(f"{c} · {v}", fontsize=8)
    fig.suptitle("flattest 16² of a test face, ×8: truth | recon | swap (rows a, b)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curves_figure(curves: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in CELLS if c in set(curves["cell"])]
    fig, axes = plt.subplots(2, len(cells), figsize=(3.6 * len(cells), 5.6), squeeze=False, sharey="row")
    for j, c in enumerate(cells):
        d = curves[curves["cell"] == c].groupby(["variant", "step"], as_index=False)[["grid_swap", "flat_grid"]].mean()
        for row, (col, label) in enumerate((("grid_swap", "val swap grid"), ("flat_grid", "flat-field grid"))):
            ax = axes[row][j]
            for v, g in d.groupby("variant"):
                ax.plot(g["step"], g[col], label=v, lw=1.2, color=COLOURS.get(v))
            ax.axhline(0.03, color="k", lw=0.6, ls="--")
            ax.set_yscale("symlog", linthresh=0.003)
            ax.set_ylim(0, 1)
            ax.set_title(c if row == 0 else "", fontsize=9)
            ax.set_xlabel("step" if row == 1 else "")
            if j == 0:
                ax.set_ylabel(label)
    handles = {v: plt.Line2D([], [], color=c, lw=1.2) for v, c in COLOURS.items() if v in set(curves["variant"])}
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=len(handles), fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, required=True, help="a clone holding the cells' experiment refs")
    ap.add_argument("--snap", type=Path, required=True, help="SNAP/<cell>/{reports,metrics} of each cell")
    ap.add_argument("--exps", nargs="+", default=list(CELLS))
    ap.add_argument("--out", type=Path, default=HERE.parent / "docs" / "bench" / "grid128")
    ap.add_argument("--img", type=Path, default=HERE.parent / "docs" / "img")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.img.mkdir(parents=True, exist_ok=True)
    rows, curves, params, tiles, full = [], [], {}, {}, {}
    for cell in args.exps:
        cp, r, c = collect(args.repo, args.snap, cell, args.out)
        full[cell] = cp
        params[cell] = {k: v for k, v in cp.items() if k != "paths"}
        rows += r
        curves += c
        for v in cp["variants"]:
            tiles[(cell, v)] = flat_decode(args.repo, cell, v, cp)
    verdicts = {cell: registry_verdict(args.out / cell) for cell in args.exps}
    (args.out / "summary.json").write_text(json.dumps({"cells": params, "registry": verdicts, "rows": rows,
                                                       "curves": curves}, indent=1))
    df = pd.DataFrame([r for r in rows if r["seed"] == "mean"])
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(df[["cell", "variant", *COLUMNS]].round(4).to_string(index=False))
    for cell, v in verdicts.items():
        print(f"{cell}: {v['reason']}")
    curves_figure(pd.DataFrame(curves), args.img / "grid128-curves.png")
    flat_figure(tiles, args.img / "grid128-flat.png")
    zoom_figure(args.snap, list(args.exps), full, args.img / "grid128-zoom.png")
    print(f"→ {args.out}/summary.json, {args.img}/grid128-{{curves,flat,zoom}}.png")


if __name__ == "__main__":
    main()
