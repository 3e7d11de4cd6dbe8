"""bench/train.py, the evidence for the CPU training defaults, runs (one tiny round) in the suite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from faceswap.compute import plan_compute

REPO = Path(__file__).resolve().parents[1]


def test_lever_table_has_every_config_against_the_before_row_and_the_ceilings(tmp_path):
    cmd = [sys.executable, "bench/train.py", "--repeats", "1", "--steps", "1", "--profiles", "demo-64",
           "--variants", "convtranspose", "--no-compile", "--sections", "ceiling", "levers", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "train_cpu.json").read_text())
    assert result["auto_plan"] == plan_compute("cpu").describe()
    ceilings = [r for r in result["rows"] if r["section"] == "ceiling"]
    assert {(r["dtype"], r["layout"]) for r in ceilings} >= {("fp32", "-"), ("bf16", "-"), ("fp32", "channels-last")}
    assert all(r["gflop_s"] > 0 for r in ceilings)
    levers = {r["config"]: r for r in result["rows"] if r["section"] == "levers"}
    assert set(levers) == {"fp32 NCHW, for-loop AdamW (before)", "fp32 NCHW", "fp32 channels-last", "bf16 NCHW",
                           "bf16 channels-last", "auto + LPIPS-vgg (every 5th step, 4 faces)"}
    assert levers["fp32 NCHW, for-loop AdamW (before)"]["x_before"] == 1.0
    for r in levers.values():
        assert r["images_per_s"] > 0 and 0 < r["of_ceiling"] < 1.5, r
