"""Which lever makes the real pair's swaps swap? The recipe ablation (docs/results.md §4).

    python bench/recipe_ablation.py [--arms baseline mask colour mmd mask+colour ...] [--steps 3000]
                                    [--seeds 0 1] [--variant resize_nearest] [--phase train|evaluate|both]
                                    [--data-root .] [--out bench/results/recipe_ablation]

Run in a checkout whose data stages (``dvc repro identity``) have run on the real pair. Each arm is the
repository's params.yaml plus the arm's overrides (:data:`ARMS`), trained by the pipeline's own ``faceswap train``
for each seed and evaluated by ``faceswap evaluate`` on the same held-out faces, into its own folder (models,
curves, evaluation record, pictures; no MLflow), so the pipeline's outputs are left alone. Every arm trains the same
number of steps of the same batch (the same budget: the levers add < 5% to a step, measured in the table's wall
times). ``--phase train`` trains only (evaluate later, e.g. after the instruments change); ``--data-root`` reads the
data stages' outputs from another checkout. Writes ``<out>/summary.json`` and prints a markdown table.
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

MASK = {("model", "input_mask"): "ellipse", ("train", "loss", "background_weight"): 0.0}
RCT = {("train", "augment", "colour_transfer"): "rct", ("train", "augment", "colour_transfer_p"): 0.5}
LCT = {("train", "augment", "colour_transfer"): "lct", ("train", "augment", "colour_transfer_p"): 0.5}
MMD = {("train", "loss", "code_mmd"): 0.1}
SEVEN = "7x7"  # encoder_stages that leave a 7×7 bottleneck at the run's image size: log2(size) − 5
ARMS: dict[str, dict[tuple[str, ...], object]] = {
    "baseline": {},  # today's recipe
    "mask": MASK,  # the background out of the encoder's input and the target, the loss on the face
    "colour": RCT,  # each face recoloured as the other person's half of the time (Reinhard, Lab)
    "mmd": MMD,  # the two identities' codes pulled together
    "mask+colour": {**MASK, **RCT},
    "mask+lct": {**MASK, **LCT},
    "mask+colour+mmd": {**MASK, **RCT, **MMD},
    # what stands behind the masked face while training (grey in the arms above)
    "mask+colour+noise": {**MASK, **RCT, ("model", "input_fill"): "noise"},
    "mask+colour+other": {**MASK, **RCT, ("model", "input_fill"): "other"},
    # the random warp's strength (RMS displacement / side; 0.025 by default)
    "mask+colour+nowarp": {**MASK, **RCT, ("train", "augment", "warp"): 0.0},
    "mask+colour+warp2x": {**MASK, **RCT, ("train", "augment", "warp"): 0.05},
    "7x7:mask+colour": {**MASK, **RCT, ("model", "encoder_stages"): SEVEN},  # the seed's day-13 geometry
    "7x7:baseline": {("model", "encoder_stages"): SEVEN},
}
KEYS = ("recon_psnr_a", "recon_psnr_b", "recon_lpips", "swap_collapse_a2b", "swap_collapse_b2a",
        "swap_follow_structure_a2b", "swap_follow_structure_b2a",
        "swap_follow_mouth_a2b", "swap_follow_mouth_b2a", "swap_follow_expression_a2b", "swap_follow_expression_b2a",
        "swap_identity_retrieved_a2b", "swap_identity_retrieved_b2a", "swap_identity_verified_a2b",
        "swap_identity_verified_b2a", "swap_expression_unfitted")


def arm_params(base: dict, arm: str, steps: int, seeds: list[int], variant: str, folder: Path,
               data_root: Path) -> dict:
    p = json.loads(json.dumps(base))
    size = int(p["base"]["image_size"])
    for (*sections, name), value in ARMS[arm].items():
        if value == SEVEN:
            value = size.bit_length() - 1 - 5
        node = p
        for section in sections:
            node = node[section]
        node[name] = value
    p["model"]["variants"] = [variant]
    p["train"].update(steps=steps, seeds=seeds, mlflow=False, preview_every=steps,
                      checkpoint_every=max(200, steps // 5))
    p["evaluate"]["mlflow"] = False
    for key in ("accepted", "quarantine", "faces", "identity"):
        p["paths"][key] = str((data_root / p["paths"][key]).resolve())  # absolute paths stay as they are
    p["paths"].update(models=str(folder / "models"), train_metrics=str(folder / "train"),
                      train_curves=str(folder / "train" / "curves"), evaluations=str(folder / "evaluations"),
                      pictures=str(folder / "pictures"), variant_metrics=str(folder / "metrics"))
    return p


TABLE = (("recon_psnr_a", "PSNR a", ".1f"), ("recon_psnr_b", "PSNR b", ".1f"),
         ("swap_collapse_a2b", "collapse a→b", ".2f"), ("swap_collapse_b2a", "b→a", ".2f"),
         ("swap_follow_structure_a2b", "structure r a→b", ".2f"), ("swap_follow_structure_b2a", "b→a", ".2f"),
         ("swap_follow_mouth_a2b", "mouth r a→b", ".2f"), ("swap_follow_mouth_b2a", "b→a", ".2f"),
         ("swap_identity_retrieved_a2b", "retrieved a→b", ".2f"), ("swap_identity_retrieved_b2a", "b→a", ".2f"),
         ("swap_identity_verified_a2b", "verified a→b", ".2f"), ("swap_identity_verified_b2a", "b→a", ".2f"))


def report(out: Path, arms: list[str], variant: str) -> None:
    """The arms' evaluation records as one markdown table (mean [95% CI] where the record has one), and a trimmed
    copy of them (metrics and estimates) in ``<out>/records.json``."""
    records, table_rows = {}, []
    from faceswap.config import RegisterParams
    from faceswap.registry import gate_failures
    from faceswap.tables import markdown_table

    for arm in arms:
        path = out / arm.replace(":", "_").replace("+", "_") / "evaluations" / f"{variant}.json"
        if not path.is_file():
            continue
        rec = json.loads(path.read_text())
        m, est = rec["metrics"], rec.get("estimates", {})
        records[arm] = {"metrics": m, "estimates": est}
        cells = []
        for key, _, spec in TABLE:
            v, e = m.get(key), est.get(key) or {}
            cell = "–" if v is None else f"{v:{spec}}"
            if v is not None and e.get("ci_lo") is not None and e.get("kind") == "bootstrap":
                cell += f" [{e['ci_lo']:{spec}}, {e['ci_hi']:{spec}}]"
            cells.append(cell)
        table_rows.append([arm, *cells, len(gate_failures(m, RegisterParams()))])
    (out / "records.json").write_text(json.dumps(records, indent=1))
    print(markdown_table(["arm", *(t for _, t, _ in TABLE), "fails"], table_rows))


def faceswap(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "faceswap.cli", *args], cwd=REPO, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arms", nargs="+", default=[a for a in ARMS if not a.startswith("7x7")], choices=list(ARMS))
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--variant", default="resize_nearest")
    ap.add_argument("--phase", choices=("train", "evaluate", "both", "report"), default="both",
                    help="report: the table of the arms' evaluation records (no training or evaluation)")
    ap.add_argument("--data-root", type=Path, default=REPO)
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml",
                    help="the base params (e.g. the data stages' params at another image size)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "recipe_ablation")
    args = ap.parse_args()
    if args.phase == "report":
        report(args.out, args.arms, args.variant)
        return
    base = yaml.safe_load(args.params.read_text())
    rows = []
    for arm in args.arms:
        folder = (args.out / arm.replace(":", "_").replace("+", "_")).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        params = folder / "params.yaml"
        params.write_text(yaml.safe_dump(arm_params(base, arm, args.steps, args.seeds, args.variant, folder,
                                                     args.data_root.resolve())))
        walls = {}
        if args.phase in ("train", "both"):
            for seed in args.seeds:
                t0 = time.perf_counter()
                faceswap("train", "--variant", args.variant, "--seed", str(seed), "--params", str(params))
                walls[seed] = round(time.perf_counter() - t0, 1)
            (folder / "train_wall.json").write_text(json.dumps(walls))
        if args.phase in ("evaluate", "both"):
            faceswap("evaluate", "--variant", args.variant, "--params", str(params))
            record = json.loads((folder / "evaluations" / f"{args.variant}.json").read_text())
            wall_file = folder / "train_wall.json"
            walls = json.loads(wall_file.read_text()) if wall_file.exists() else {}
            m, est = record["metrics"], record.get("estimates", {})
            rows.append({"arm": arm, "train_wall_s": walls, **{k: m.get(k) for k in KEYS},
                         "ci": {k: est.get(k) for k in KEYS if est.get(k)}})
            print(json.dumps(rows[-1]), flush=True)
    if rows:
        args.out.mkdir(parents=True, exist_ok=True)
        summary = args.out / "summary.json"
        earlier = json.loads(summary.read_text())["rows"] if summary.is_file() else []
        done = {r["arm"] for r in rows}  # an arm evaluated again replaces its row; the other arms' rows stay
        rows = [r for r in earlier if r["arm"] not in done] + rows
        summary.write_text(json.dumps({"variant": args.variant, "steps": args.steps, "seeds": args.seeds,
                                       "rows": rows}, indent=1))
        head = ("arm", "PSNR a", "PSNR b", "collapse a→b", "b→a", "mouth r a→b", "b→a", "retrieved a→b", "b→a",
                "verified a→b", "b→a")
        keys = ("recon_psnr_a", "recon_psnr_b", "swap_collapse_a2b", "swap_collapse_b2a", "swap_follow_mouth_a2b",
                "swap_follow_mouth_b2a", "swap_identity_retrieved_a2b", "swap_identity_retrieved_b2a",
                "swap_identity_verified_a2b", "swap_identity_verified_b2a")
        from faceswap.tables import markdown_table

        print(markdown_table(head, [[r["arm"], *("–" if r[k] is None else f"{r[k]:.2f}" for k in keys)]
                                    for r in rows]))


if __name__ == "__main__":
    main()
