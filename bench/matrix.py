"""The train matrix (variant × seed, dvc.yaml's ``train`` stage) serial vs side by side, on the current data.

    python bench/matrix.py [--steps 200] [--items 4] [--modes serial fanout]

Each run is the stage's own command, read from dvc.yaml (``pipelines.graph``), pointed at a scratch folder
(a copy of params.yaml whose ``paths`` put models, metrics and curves there; MLflow into a scratch store),
so the workspace and its DVC records are untouched.

- ``serial``: one run after the other with torch's default threads, as ``dvc repro`` runs them;
- ``fanout``: the flow's lanes (params ``flow.workers`` / ``flow.threads_per_run``, ``pipelines.fanout``): that
  many runs at once, each pinned (``OMP_NUM_THREADS``, one GPU each), logging through an MLflow server in front
  of the scratch store, as ``make pipeline`` runs them.

Reported: each mode's wall time for all the runs and its speed-up over serial, and per run the largest
difference of its final metrics between the modes (same seed: deterministic on CPU is 0). Writes
bench/results/matrix.json. On a shared machine, run it when nothing else does.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from _common import print_table, write_results

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "src")]

from pipelines import fanout  # noqa: E402
from pipelines.graph import discover  # noqa: E402

from faceswap.config import load_params  # noqa: E402
from faceswap.tracking import serve_store  # noqa: E402

COMPARED = ("best_val_loss", "final_train_loss")  # whichever of these the metrics JSON holds


def commands(steps: int | None, limit: int | None, data_root: Path | None) -> list[tuple[str, list[str]]]:
    """(item, argv) of every train item, in DVC's order, as dvc.yaml states the command."""
    items = [s for s in discover(REPO) if s.name == "train"]
    extra = [f"--steps={steps}"] if steps else []
    if data_root:  # the faces of another checkout of this repository (its `make pipeline` made them)
        paths = load_params(REPO / "params.yaml").paths
        extra += ["--data", str(data_root / paths.accepted), "--faces-dir", str(data_root / paths.faces)]
    return [(s.item, shlex.split(s.cmd) + extra) for s in items[:limit]]


def scratch_params(root: Path) -> Path:
    """The repository's params with the runs' outputs (models, metrics, curves) moved under ``root``: the train
    command puts its files where ``paths`` says, so a copy of params is how a run writes elsewhere."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for key in ("accepted", "quarantine", "faces", "identity"):  # inputs stay the repository's (relative → absolute)
        raw["paths"][key] = str((REPO / raw["paths"][key]).resolve())
    raw["paths"].update(models=str(root / "models"), train_metrics=str(root / "metrics"),
                        train_curves=str(root / "curves"))
    root.mkdir(parents=True, exist_ok=True)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_one(item: str, argv: list[str], root: Path, env: dict[str, str]) -> dict:
    variant, seed = item.split("-", 1)
    metrics = root / "metrics" / variant / f"seed{seed}.json"
    cmd = argv
    exe = str(Path(sys.executable).with_name(cmd[0])) if cmd[0] == "faceswap" else cmd[0]
    t0 = time.perf_counter()
    proc = subprocess.run([exe, *cmd[1:]], cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return {"item": item, "seconds": time.perf_counter() - t0, **json.loads(metrics.read_text())}


def run_mode(mode: str, cmds: list[tuple[str, list[str]]], root: Path) -> tuple[float, list[dict], str]:
    params = load_params(REPO / "params.yaml")
    scratch = str(scratch_params(root))  # written once, before any run reads it
    cmds = [(item, [*argv, "--params", scratch]) for item, argv in cmds]
    base = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    if mode == "serial":
        env = {k: v for k, v in base.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        t0 = time.perf_counter()
        runs = [run_one(item, argv, root, env) for item, argv in cmds]
        return time.perf_counter() - t0, runs, "1 at a time, default threads"
    lanes = fanout.plan_lanes(params.flow.workers, params.flow.threads_per_run, params.train.device)
    os.environ["MLFLOW_TRACKING_URI"] = base["MLFLOW_TRACKING_URI"]
    with serve_store(params, log=root / "mlflow-server.log") as served, ThreadPoolExecutor(lanes.workers) as pool:
        import queue

        free: queue.Queue = queue.Queue()
        for lane in range(lanes.workers):
            free.put(lanes.env(lane))

        def job(item: str, argv: list[str]) -> dict:
            lane = free.get()
            try:
                return run_one(item, argv, root, {**base, **served, **lane})
            finally:
                free.put(lane)

        t0 = time.perf_counter()
        runs = list(pool.map(lambda c: job(*c), cmds))
        wall = time.perf_counter() - t0
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    gpus = f", GPUs {','.join(lanes.gpus)}" if lanes.gpus else ""
    return wall, runs, f"{lanes.workers} at a time, {lanes.threads} thread(s) each{gpus}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=None, help="training steps per run (default: params train.steps)")
    ap.add_argument("--items", type=int, default=None, help="only the first N items of the matrix (default: all)")
    ap.add_argument("--data-root", type=Path, default=None, help="read the faces from this checkout (default: here)")
    ap.add_argument("--modes", nargs="+", default=["serial", "fanout"], choices=["serial", "fanout"])
    args = ap.parse_args()
    cmds = commands(args.steps, args.items, args.data_root)
    rows, per_run = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-matrix-") as tmp:
        for mode in args.modes:
            wall, runs, how = run_mode(mode, cmds, Path(tmp) / mode)
            per_run[mode] = {r["item"]: r for r in runs}
            rows.append({"mode": mode, "how": how, "runs": len(runs), "wall_s": wall,
                         "images_per_s": sum(r.get("images_per_s", 0.0) for r in runs)})
            print(f"  {mode}: {len(runs)} runs in {wall:.1f} s ({how})", flush=True)
    first = rows[0]["wall_s"]
    for r in rows:
        r["x_serial"] = first / r["wall_s"] if rows[0]["mode"] == "serial" else float("nan")
    diffs = []
    if len(per_run) == 2:
        a, b = per_run.values()
        for item in a:
            keys = [k for k in COMPARED if k in a[item] and k in b[item]]
            diffs.append({"item": item, **{k: abs(a[item][k] - b[item][k]) for k in keys},
                          "max_abs_diff": max((abs(a[item][k] - b[item][k]) for k in keys), default=float("nan"))})
    print()
    print_table(rows, [("mode", "mode", ""), ("how", "lanes", ""), ("runs", "runs", "d"), ("wall_s", "wall s", ".1f"),
                       ("images_per_s", "sum images/s", ".0f"), ("x_serial", "× serial", ".2f")])
    if diffs:
        print()
        print_table(diffs, [("item", "item", ""), ("max_abs_diff", "max |serial − fanout| of final metrics", ".2e")])
    path = write_results("matrix", rows, {"steps": args.steps, "per_run_diff": diffs, "runs": per_run,
                                          "loadavg_1min_after": os.getloadavg()[0]})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
