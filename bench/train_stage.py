"""The training stage as the pipeline runs it, today's code against a baseline commit, in one run.

    python bench/train_stage.py [--baseline 7c24d62] [--runs 3] [--variants convtranspose resize_nearest]

Each run is the DVC stage's own command (``faceswap train --variant V --seed 0``, params.yaml's steps, data and
MLflow logging into a scratch store), once from a checkout of ``--baseline`` and once from this tree, alternated
(baseline, current, baseline, ...) so that a change of load on this shared machine hits both alike. Reported:
the ``images_per_s`` each run writes into its metrics JSON (the figure of ``<paths.train_metrics>/*/seed*.json``), the
median per side and their ratio, and the runs' final validation loss (same data, same model, same steps).
Writes bench/results/train_stage.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from _common import print_table, write_results

REPO = Path(__file__).resolve().parents[1]
NEW_KEYS = {"evaluate": ("precision", "channels_last"), "serve": ("precision", "channels_last")}


def checkout(rev: str, dest: Path) -> Path:
    """The baseline's ``src/`` (git archive: no work tree is touched)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def params_for_both(tmp: Path) -> Path:
    """params.yaml without the keys the baseline does not know (none of them reaches training; ``paths`` are the
    defaults, which equal the baseline's ``train.data`` and ``train.faces_dir``)."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw.pop("paths", None)
    for section, keys in NEW_KEYS.items():
        for k in keys:
            raw.get(section, {}).pop(k, None)
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_stage(src: Path, variant: str, root: Path, params: Path, store: Path) -> dict:
    """One stage run into ``root``: a baseline that still takes the run's locations on its command line gets them
    there; today's CLI reads them from the params file's ``paths`` only, so its copy of the params file names them."""
    env = {**os.environ, "PYTHONPATH": str(src), "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    metrics = root / "metrics" / variant / "seed0.json"
    cmd = [sys.executable, "-m", "faceswap.cli", "train", "--variant", variant, "--seed", "0"]
    if "--curves" in (src / "faceswap" / "cli.py").read_text():
        cmd += ["--out", str(root / "models" / variant / "seed0"), "--metrics", str(metrics),
                "--curves", str(root / "curves" / variant / "seed0")]
    else:
        raw = yaml.safe_load(params.read_text())
        raw["paths"] = {"models": str(root / "models"), "train_metrics": str(root / "metrics"),
                        "train_curves": str(root / "curves")}
        root.mkdir(parents=True, exist_ok=True)
        params = root / "params.yaml"
        params.write_text(yaml.safe_dump(raw))
    cmd += ["--params", str(params)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    plan = next((ln.split(": ", 1)[1] for ln in proc.stderr.splitlines() if " on cpu (" in ln), "fp32, NCHW")
    return {**json.loads(metrics.read_text()), "plan": plan.split(" on ")[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default="7c24d62", help="commit whose training code is 'before'")
    ap.add_argument("--runs", type=int, default=3, help="runs per side and variant (alternated)")
    ap.add_argument("--variants", nargs="+", default=["convtranspose", "resize_nearest"])
    args = ap.parse_args()
    rows, raw = [], []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        sides = {"before": checkout(args.baseline, tmp / "baseline"), "after": REPO / "src"}
        params = params_for_both(tmp)
        for variant in args.variants:
            got: dict[str, list[dict]] = {s: [] for s in sides}
            for i in range(args.runs):
                for side, src in sides.items():
                    r = run_stage(src, variant, tmp / f"{side}-{variant}-{i}", params, tmp / "mlflow.db")
                    got[side].append(r)
                    raw.append({"variant": variant, "side": side, "run": i, **r})
                    print(f"  {variant} {side} #{i}: {r['images_per_s']:.0f} images/s ({r['plan']})", flush=True)
            med = {s: statistics.median(r["images_per_s"] for r in v) for s, v in got.items()}
            for side, runs in got.items():
                rows.append({"variant": variant, "side": side, "code": args.baseline if side == "before" else "HEAD",
                             "plan": runs[0]["plan"], "images_per_s": med[side],
                             "x_before": med[side] / med["before"],
                             "best_val_loss": statistics.median(r["best_val_loss"] for r in runs),
                             "wall_s": statistics.median(r["wall_s"] for r in runs)})
    print()
    print_table(rows, [("variant", "variant", ""), ("side", "side", ""), ("code", "code", ""), ("plan", "plan", ""),
                       ("images_per_s", "images/s", ".0f"), ("x_before", "× before", ".2f"),
                       ("best_val_loss", "best val loss", ".4f"), ("wall_s", "loop s", ".0f")])
    path = write_results("train_stage", rows, {"baseline": args.baseline, "runs": raw,
                                               "loadavg_1min_after": os.getloadavg()[0]})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
