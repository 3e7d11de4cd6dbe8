"""Shared helpers for the benchmarks: one training step, timing, the table and the JSON."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from faceswap.model import FaceSwapAutoencoder, ModelConfig
from faceswap.model.info import describe_model

RESULTS = Path(__file__).resolve().parent / "results"

PROFILES = {
    # the CPU demo model (params.yaml) and the seed-scale GPU model
    "demo-64": dict(image_size=64, width=16, bottleneck_channels=128),
    "seed-256": dict(image_size=256, width=128, bottleneck_channels=1024),
}


def build(profile: str, variant: str) -> tuple[FaceSwapAutoencoder, dict]:
    cfg = dict(PROFILES[profile], decoder=variant)
    info = describe_model(**cfg)
    return FaceSwapAutoencoder(ModelConfig(**cfg)), info


def train_step_fn(model: FaceSwapAutoencoder, x: torch.Tensor, autocast: Callable) -> Callable[[], None]:
    """One forward+backward of a batch through the encoder and decoder ``a`` (half of a training step)."""
    params = list(model.parameters())

    def step() -> None:
        for p in params:
            p.grad = None
        with autocast():
            loss = (model(x, "a") - x).abs().mean()
        loss.backward()

    return step


def median_time(step: Callable[[], None], repeats: int, sync: Callable[[], None] = lambda: None) -> list[float]:
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or
            platform.machine(), "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_results(name: str, rows: list[dict], extra: dict | None = None, out_dir: Path | None = None) -> Path:
    out_dir = out_dir or RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **(extra or {}), "rows": rows}, indent=2))
    return path


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """columns: (key, header, format spec)."""
    cells = [[format(r[k], f) if isinstance(r[k], float | int) and not isinstance(r[k], bool) else str(r[k])
              for k, _, f in columns] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (_, h, _) in enumerate(columns)]
    print("  ".join(h.rjust(w) if i else h.ljust(w) for i, ((_, h, _), w) in enumerate(zip(columns, widths,
                                                                                             strict=True))))
    for row in cells:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))


__all__ = ["PROFILES", "build", "median_time", "print_table", "statistics", "train_step_fn", "write_results"]
