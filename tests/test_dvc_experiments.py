"""DVC's own comparison works: metrics are git-tracked (DVC's convention for ``cache: false`` metrics), so after
``dvc exp run -S …`` both ``dvc exp show`` and ``dvc metrics diff`` hold every variant's numbers for the baseline
commit and for the experiment; and an experiment whose training is killed resumes from its last checkpoint on the
next ``dvc exp run`` (the way the showcase profile is run). A tiny real pipeline (one short demo clip per
identity, one variant, one seed, a few steps) in a clone of this repository."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from faceswap.checkpoint import checkpoint_dir
from faceswap.config import set_key

from .conftest import REPO

VARIANT = "resize_nearest"
TINY = {
    "data.demo.source": "portraits", "data.demo.clips": 1, "data.demo.seconds": 4.0, "data.demo.fps": 10,
    "extract.every": 1,
    "split.gap_s": 0.2, "split.blocks": 1,
    "validate.min_train_faces": 5, "validate.min_val_faces": 2, "validate.min_test_faces": 2,
    "model.variants": [VARIANT],
    "train.seeds": [0], "train.steps": 10, "train.batch_size": 4, "train.warmup_steps": 2, "train.val_every": 5,
    "train.val_images": 4, "train.checkpoint_every": 5, "train.preview_every": 10, "train.preview_rows": 2,
    "train.log_every": 5, "train.workers": 0,
    "evaluate.max_faces": 6, "evaluate.landmarks": False, "evaluate.identity_train_faces": 6,
    "evaluate.preview_rows": 2,
}


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _metric_files(node: Any) -> dict[str, dict]:
    """``{path: numbers}`` of one row of ``dvc exp show --json`` (its ``data.metrics``)."""
    metrics = (node.get("data") or {}).get("metrics") or {}
    return {path: (m or {}).get("data") or {} for path, m in metrics.items()}


@pytest.mark.slow
def test_exp_show_and_metrics_diff_hold_baseline_and_experiment(tmp_path):
    repo = tmp_path / "repo"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
               PYTHONPATH=str(repo / "src"), DVC_NO_ANALYTICS="1", DO_NOT_TRACK="true",
               MLFLOW_DISABLE_TELEMETRY="true", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    _run(["git", "clone", "-q", str(REPO), str(repo)], tmp_path, env)
    for k, v in (("user.name", "t"), ("user.email", "t@example.com")):
        _run(["git", "config", k, v], repo, env)
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in TINY.items():
        set_key(raw, key, value)
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    _run(["git", "commit", "-qam", "tiny params"], repo, env)

    _run(["dvc", "repro"], repo, env)
    _run(["git", "add", "metrics"], repo, env)
    _run(["git", "commit", "-qm", "baseline metrics"], repo, env)
    base = json.loads((repo / "metrics" / f"{VARIANT}.json").read_text())

    _run(["dvc", "exp", "run", "-S", "train.steps=14", "-n", "quick"], repo, env)
    new = json.loads((repo / "metrics" / f"{VARIANT}.json").read_text())
    assert new["step"] != base["step"] or new["recon_lpips"] != base["recon_lpips"]

    rows = json.loads(_run(["dvc", "exp", "show", "--json"], repo, env))
    baseline = next(r for r in rows if r.get("rev") != "workspace")
    exp = next(e["revs"][0] for e in baseline.get("experiments") or [] if e.get("name") == "quick")
    for row, want in ((baseline, base), (exp, new)):
        files = _metric_files(row)
        assert files.get(f"metrics/{VARIANT}.json", {}).get("recon_lpips") == pytest.approx(want["recon_lpips"])
        assert files.get(f"metrics/train/{VARIANT}/seed0.json", {}).get("step") is not None

    diff = json.loads(_run(["dvc", "metrics", "diff", "--json", "--all"], repo, env))
    lpips = diff[f"metrics/{VARIANT}.json"]["recon_lpips"]
    assert lpips["old"] == pytest.approx(base["recon_lpips"]) and lpips["new"] == pytest.approx(new["recon_lpips"])

    # a killed experiment resumes: its training states live outside the run folder that `dvc exp run` checks out
    states = checkpoint_dir(repo / "models" / VARIANT / "seed0")
    long = ["dvc", "exp", "run", "-S", "train.steps=200", "-S", "train.checkpoint_every=20", "-S", "train.val_every=50",
            "-S", "train.preview_every=200"]
    proc = subprocess.Popen([*long, "-n", "killed"], cwd=repo, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    try:
        while not (states / "step_0000040.pt").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the long experiment ended before step 40"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    _run([*long, "-n", "resumed"], repo, env)
    record = json.loads((repo / "metrics" / "train" / VARIANT / "seed0.json").read_text())
    assert record["step"] == 200 and record["resumed_from"] is not None and record["resumed_from"] >= 40, record
