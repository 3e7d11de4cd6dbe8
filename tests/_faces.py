"""A tiny real face set for training tests: aligned crops of the public-domain stills, written on the fly."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceswap.data.align import face_template, umeyama, warp_face
from faceswap.data.demo import astronaut, grace_hopper
from faceswap.data.manifest import MANIFEST_NAME


def split_of(k: int, train: int, val: int) -> str:
    """Face ``k`` of a clip laid out as train | val | test."""
    return "train" if k < train else "val" if k < train + val else "test"


def make_face_set(root: Path, size: int = 64, train: int = 12, val: int = 4, test: int = 4, seed: int = 0) -> Path:
    """Crops of the astronaut (identity a) and Grace Hopper (b) under small pose/scale/light changes.

    Writes ``root/<identity>/*.png`` and ``root/manifest.parquet`` (face_id, identity, split, path, …; the
    path relative to ``root`` as in the align stage's manifest) and returns the manifest's path.
    """
    import pandas as pd

    from faceswap.imageio import write_rgb

    rng = np.random.default_rng(seed)
    template = face_template(size, 0.8)
    rows = []
    for ident, still in (("a", astronaut()), ("b", grace_hopper())):
        for k in range(train + val + test):
            lm = still.landmarks + rng.normal(0, 1.5, (5, 2))
            m = umeyama(lm, template)
            angle = rng.uniform(-0.1, 0.1)
            rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            c = np.array([size / 2, size / 2])
            m = np.hstack([rot @ m[:, :2], (rot @ (m[:, 2] - c) + c)[:, None]])
            crop = warp_face(still.image, m, size).astype(np.float32) * rng.uniform(0.85, 1.15)
            rel = f"{ident}/{ident}__clip00__{k:06d}.png"
            write_rgb(root / rel, np.clip(crop, 0, 255).astype(np.uint8))
            rows.append({"face_id": f"{ident}__clip00__{k:06d}", "identity": ident, "video": "clip00",
                         "frame_index": k, "timestamp_s": k / 10, "split": split_of(k, train, val),
                         "path": rel})
    path = root / MANIFEST_NAME
    pd.DataFrame(rows).to_parquet(path)
    return path
