"""A tiny real face set for training tests: aligned crops of the public-domain stills, written on the fly."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceswap.data.demo import astronaut, grace_hopper
from faceswap.data.geometry import face_template, umeyama, warp_face
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


# 5 landmarks of the cameraman in ``skimage.data.camera()`` (public domain), measured once with MTCNN (p = 0.999)
_CAMERAMAN_LANDMARKS = ((234.4, 147.2), (252.3, 149.6), (250.7, 169.1), (231.2, 180.4), (243.5, 181.9))


def cameraman():
    """A third real face, small and in profile: the cameraman of ``skimage.data.camera()``, as RGB."""
    import skimage.data

    from faceswap.data.demo import FaceStill

    grey = skimage.data.camera()
    return FaceStill("cameraman", np.repeat(grey[..., None], 3, axis=2), np.array(_CAMERAMAN_LANDMARKS))


def aligned_crops(still, n: int, size: int = 64, coverage: float = 0.8, seed: int = 0) -> np.ndarray:
    """``n`` aligned crops of a still, (n, size, size, 3) uint8, as the align stage cuts a moving head: the
    5-point similarity to the template with landmark noise, a small roll and a brightness change."""
    rng = np.random.default_rng(seed)
    template = face_template(size, coverage)
    out = []
    for _ in range(n):
        m = umeyama(still.landmarks + rng.normal(0, 1.0, (5, 2)), template)
        angle = rng.uniform(-0.1, 0.1)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        c = np.array([size / 2, size / 2])
        m = np.hstack([rot @ m[:, :2], (rot @ (m[:, 2] - c) + c)[:, None]])
        crop = warp_face(still.image, m, size).astype(np.float32) * rng.uniform(0.85, 1.15)
        out.append(np.clip(crop, 0, 255).astype(np.uint8))
    return np.stack(out)
