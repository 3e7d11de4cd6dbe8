"""Where a training run lives: ``models/<variant>/seed<k>`` (model.pt, run.json, checkpoints, previews).

One definition for the train CLI, the evaluation and the flow's artifacts, matching dvc.yaml's matrix.
"""

from __future__ import annotations

from pathlib import Path


def run_dir(models_dir: str | Path, variant: str, seed: int) -> Path:
    return Path(models_dir) / variant / f"seed{seed}"
