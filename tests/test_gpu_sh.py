"""bench/gpu.sh --dry-run on the CPU: the script's arguments, budget and OUT_DIR layout, and every Python step it
would run on a GPU machine run here at a tiny size, so a broken step fails before GPU time is spent."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_seed_scale import packed, seed_scale  # noqa: F401 - the tiny pack of the two stills

REPO = Path(__file__).resolve().parents[1]


def gpu_sh(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run(["bash", str(REPO / "bench" / "gpu.sh"), *args], capture_output=True, text=True,
                          env=env, timeout=timeout, check=False)


def steps(out: Path) -> dict[str, str]:
    return {row.split("\t")[0]: row.split("\t")[1] for row in (out / "steps.tsv").read_text().splitlines()}


def test_arguments_are_checked():
    assert gpu_sh().returncode == 2
    bad = gpu_sh("--frobnicate", "x")
    assert bad.returncode == 2 and "unknown option --frobnicate" in bad.stderr
    assert gpu_sh("--budget-s", "soon", "x").returncode == 2


def test_an_exhausted_budget_skips_every_step_and_still_writes_the_layout(tmp_path):
    out = tmp_path / "out"
    r = gpu_sh("--dry-run", "--budget-s", "0", "--pack", str(tmp_path / "nopack"), str(out))
    assert r.returncode == 0, r.stderr
    assert steps(out) == {"install": "dry-run", "tests": "skipped", "throughput": "skipped", "seed256": "skipped",
                          "ddp": "skipped", "summary": "ok"}
    commands = (out / "commands.sh").read_text()
    assert "make setup" in commands and "bench/gpu_train.py" in commands and "torch.distributed.run" in commands
    assert "--nproc_per_node 2" in commands and "faceswap.cli train" in commands
    assert "mode: dry-run" in (out / "env.txt").read_text()
    assert "| tests | skipped |" in (out / "summary.md").read_text()


@pytest.mark.slow  # ~100 s on 2 shared cores: gpu_train, two tiny 64² trainings + evaluations, a 2-process DDP run
def test_dry_run_runs_every_step_at_a_tiny_size(packed, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    r = gpu_sh("--dry-run", "--pack", str(packed), str(out))
    assert r.returncode == 0, r.stderr + (out / "log.txt").read_text()
    assert steps(out) == {"install": "dry-run", "tests": "ok", "throughput": "ok", "seed256": "ok", "ddp": "ok",
                          "summary": "ok"}
    rows = json.loads((out / "gpu_train.json").read_text())["rows"]
    assert rows[0]["images_per_s"] > 0 and rows[0]["model_of_ceiling"] > 0
    assert {p.name for p in (out / "seed256").glob("*.tar")} == {"seed256_resize_nearest.tar",
                                                                 "seed256_pixelshuffle.tar"}
    ddp = json.loads((out / "ddp" / "metrics" / "train" / "resize_nearest" / "seed0.json").read_text())
    assert ddp["world_size"] == 2 and ddp["step"] == 2
    summary = (out / "summary.md").read_text()
    assert re.search(r"\| resize_nearest +\| +2 +\|", summary) and re.search(r"\| pixelshuffle +\| +1 +\|", summary)
    assert "world_size 2" in summary
