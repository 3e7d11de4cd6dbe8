"""The GPU benchmark scripts run on CPU at tiny sizes, so they cannot rot between GPU sessions."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module", autouse=True)
def bench_on_path():
    sys.path.insert(0, str(BENCH))
    yield
    sys.path.remove(str(BENCH))


def test_gpu_train_reports_throughput_flops_and_a_profile(tmp_path):
    import gpu_train

    result = gpu_train.main(["--steps", "1", "--warmup", "1", "--batch", "2", "--image-size", "64", "--width", "8",
                             "--bottleneck", "16", "--variants", "resize_nearest", "--lpips", "alex",
                             "--workers", "0", "--faces", "4", "--profile", "1", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "gpu_train.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(result["rows"]))
    row = saved["rows"][0]
    for key in ("images_per_s", "step_ms", "model_tflops", "total_tflops", "model_of_ceiling", "total_of_ceiling",
                "data_wait_share"):
        assert row[key] > 0 if key != "data_wait_share" else 0 <= row[key] < 1
    # the LPIPS network counts as useful work: forward of prediction and target, backward of the prediction
    assert row["lpips_gflops_per_image"] > 0 and row["total_tflops"] > row["model_tflops"]
    assert "aten::" in saved["profile"]["table"]
