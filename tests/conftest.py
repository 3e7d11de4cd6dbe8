"""Shared fixtures: real public-domain faces (no downloads) and the repository layout."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

for _k, _v in {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "NO_ALBUMENTATIONS_UPDATE": "1",
}.items():
    os.environ.setdefault(_k, _v)
# The one tracking rule puts $MLFLOW_TRACKING_URI first: a developer's store must not receive test runs, and
# tests name their own store (mlflow.tracking_uri in their params, or this variable set in the test).
os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """Eileen Collins (NASA, public domain), 512×512 RGB uint8, from the scikit-image wheel."""
    import skimage.data

    return skimage.data.astronaut()


@pytest.fixture(scope="session")
def grace_hopper() -> np.ndarray:
    """Grace Hopper (US Navy, public domain), RGB uint8, from the matplotlib wheel."""
    from matplotlib import cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f, Image.open(f) as im:
        return np.asarray(im.convert("RGB"))


def repo_paths(root: Path, **overrides: str) -> dict[str, str]:
    """params.yaml's ``paths:`` (every path is stated there only, the code has no default), each moved below
    ``root`` so that a test's stage writes into its own folder, with ``overrides`` on top."""
    import yaml

    stated = yaml.safe_load((REPO / "params.yaml").read_text())["paths"]
    return {k: str(Path(root) / v) for k, v in stated.items()} | overrides
