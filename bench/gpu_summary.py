"""``OUT_DIR/summary.md`` from what bench/gpu.sh left there: the steps, the training throughput against the bf16
matmul ceiling, the 256² run's table and the DDP run's record, so one file says what the GPU machine measured.

    python bench/gpu_summary.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _steps(out: Path) -> list[str]:
    lines = ["## Steps", "", "| step | status | seconds |", "|---|---|---:|"]
    for row in (out / "steps.tsv").read_text().splitlines() if (out / "steps.tsv").is_file() else []:
        name, status, secs = [*row.split("\t"), "", ""][:3]
        lines.append(f"| {name} | {status} | {secs} |")
    return lines


def _throughput(out: Path) -> list[str]:
    path = out / "gpu_train.json"
    if not path.is_file():
        return ["## Training throughput", "", "not measured (see steps)."]
    r = json.loads(path.read_text())
    lines = ["## Training throughput", "",
             f"{r['device']}, torch {r['torch']}, {r['dtype']}, {r['image_size']}², width {r['width']}, bottleneck "
             f"{r['bottleneck']}, LPIPS-{r['lpips']} loss; bf16 matmul ceiling {r['matmul_ceiling_tflops']:.4g} "
             "TFLOP/s.", "",
             "| variant | faces/identity | images/s | ms/step | model of ceiling | with LPIPS of ceiling | data wait |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in r["rows"]:
        lines.append(f"| {row['variant']} | {row['batch_per_identity']} | {row['images_per_s']:.0f} | "
                     f"{row['step_ms']:.1f} | {row['model_of_ceiling']:.1%} | {row['total_of_ceiling']:.1%} | "
                     f"{row['data_wait_share']:.0%} |")
    return lines


def _seed256(out: Path) -> list[str]:
    table = out / "seed256" / "seed256_summary.md"
    return [table.read_text().rstrip().replace("## ", "## 256² run: ", 1)] if table.is_file() else [
        "## 256² run", "", "not run (see steps)."]


def _ddp(out: Path) -> list[str]:
    records = sorted((out / "ddp").glob("metrics/train/*/seed*.json"))
    if not records:
        return ["## DDP", "", "not run (one GPU, or see steps)."]
    lines = ["## DDP (torchrun)", ""]
    for path in records:
        r = json.loads(path.read_text())
        keep = {k: r[k] for k in ("variant", "step", "world_size", "images_per_s", "best_val_loss", "wall_s")
                if k in r}
        lines.append(f"- `{path.relative_to(out)}`: " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in keep.items()))
    return lines


def summary(out: Path) -> str:
    env = (out / "env.txt").read_text().strip() if (out / "env.txt").is_file() else ""
    parts = [["# bench/gpu.sh", "", "```", env, "```"], _steps(out), _throughput(out), _seed256(out), _ddp(out)]
    return "\n\n".join("\n".join(p) for p in parts) + "\n"


def main(argv: list[str] | None = None) -> str:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit(__doc__)
    out = Path(args[0])
    text = summary(out)
    (out / "summary.md").write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
