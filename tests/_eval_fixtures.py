"""Real inputs for the evaluation and registry tests: aligned face crops of the two public-domain stills,
a manifest with the project's schema, and tiny real models (untrained or briefly trained) saved through
``faceswap.checkpoint.save_checkpoint`` exactly as the training stage writes them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from tests._faces import split_of

SIZE = 64


def _jitter(rng: np.random.Generator, size: int) -> np.ndarray:
    """A small random similarity about the crop centre (3×3), like a moving head after alignment."""
    ang = math.radians(rng.uniform(-8, 8))
    s = rng.uniform(0.95, 1.05)
    tx, ty = rng.uniform(-2, 2, 2)
    c = size / 2
    r = np.array([[s * math.cos(ang), -s * math.sin(ang)], [s * math.sin(ang), s * math.cos(ang)]])
    m = np.eye(3)
    m[:2, :2] = r
    m[:2, 2] = np.array([c, c]) - r @ np.array([c, c]) + [tx, ty]
    return m


def make_face_set(
    root: Path, train: int = 24, val: int = 6, test: int = 12, size: int = SIZE, seed: int = 0
) -> Path:
    """Write crops under ``root/faces`` and ``root/faces.parquet`` (split train/val/test per identity)."""
    from faceswap.data.demo import astronaut, grace_hopper
    from faceswap.data.geometry import apply_affine, face_template, umeyama, warp_face
    from faceswap.data.manifest import write_manifest
    from faceswap.imageio import write_rgb

    rng = np.random.default_rng(seed)
    rows = []
    template = face_template(size)
    for ident, still in (("a", astronaut()), ("b", grace_hopper())):
        base = umeyama(still.landmarks, template)
        for k in range(train + val + test):
            j = _jitter(rng, size)
            m = (j @ np.vstack([base, [0, 0, 1]]))[:2]
            crop = warp_face(still.image, m, size)
            rel = f"{ident}/{k:04d}.png"
            write_rgb(root / "faces" / rel, crop)
            lm = apply_affine(m, still.landmarks)
            rows.append({
                "face_id": f"{ident}__clip00__{k:06d}", "identity": ident, "video": "clip00", "frame_index": k,
                "timestamp_s": k / 10, "split": split_of(k, train, val), "path": rel,
                "frame_path": f"{ident}/clip00/{k:06d}.jpg", "detector": "mtcnn", "score": 0.99,
                "detector_weights": "sha256:test",
                "box": [0.0, 0.0, 10.0, 10.0], "landmarks_src": still.landmarks, "landmarks_aligned": lm,
                "matrix": m, "alignment_residual_px": 0.5, "sharpness": 100.0, "brightness": 120.0,
                "width": size, "height": size, "frame_width": still.image.shape[1],
                "frame_height": still.image.shape[0], "segment": 0,
            })
    path = root / "faces.parquet"
    write_manifest(rows, path)
    return path


def train_tiny(
    root: Path, variant: str, steps: int = 0, seed: int = 0, run_json: dict | None = None, size: int = SIZE,
    width: int = 8, bottleneck: int = 32, init_seed: int | None = None,
) -> Path:
    """A tiny real model of ``variant`` trained ``steps`` L1 steps on the train crops; saved as the training
    stage does, ``root/models/<variant>/seed<seed>/model.pt`` (+ run.json). ``steps=0``: untrained.
    ``init_seed`` (default ``seed``) draws the weights, so the same run folder can hold a retrained model."""
    import pandas as pd
    import torch

    from faceswap.checkpoint import save_checkpoint
    from faceswap.imageio import read_rgb
    from faceswap.model import FaceSwapAutoencoder, ModelConfig

    torch.manual_seed(seed if init_seed is None else init_seed)
    cfg = ModelConfig(image_size=size, width=width, bottleneck_channels=bottleneck, decoder=variant)
    model = FaceSwapAutoencoder(cfg)
    if steps:
        df = pd.read_parquet(root / "faces.parquet")
        data = {}
        for ident in ("a", "b"):
            rows = df[(df.identity == ident) & (df.split == "train")]
            ims = np.stack([read_rgb(root / "faces" / p) for p in rows.path])
            data[ident] = torch.from_numpy(ims).permute(0, 3, 1, 2).float() / 255
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        g = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(steps):
            loss = 0
            for ident, x in data.items():
                idx = torch.randint(0, len(x), (8,), generator=g)
                loss = loss + (model(x[idx], ident) - x[idx]).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
    out = root / "models" / variant / f"seed{seed}"
    save_checkpoint(out / "model.pt", {
        "model": model.state_dict(), "model_config": cfg.to_dict(), "step": steps, "val_loss": 0.1,
        "variant": variant,
    })
    info = {"variant": variant, "data_version": "test-data", "git_commit": "0" * 40}
    info.update(run_json or {})
    (out / "run.json").write_text(json.dumps(info))
    return out / "model.pt"


def paths_under(root: Path, **paths: str) -> dict[str, str]:
    """Every ``paths.*`` key moved below ``root`` (the tests' own data folder), keeping params.yaml's layout;
    the accepted manifest is ``root/faces.parquet`` beside the crops in ``root/faces``."""
    from .conftest import repo_paths

    return repo_paths(root, accepted=str(root / "faces.parquet"), faces=str(root / "faces"), **paths)


def eval_params(root: Path, seeds: tuple[int, ...] = (0,), **evaluate):
    """Params pointing the evaluation at ``root`` (fast settings unless overridden)."""
    from faceswap.config import parse_params

    ev = {"batch_size": 16, "landmark_faces": 6, "preview_rows": 3, "mlflow": False}
    ev.update(evaluate)
    return parse_params({"paths": paths_under(root, identity=str(root / "identity"), models=str(root / "models")),
                         "evaluate": ev, "train": {"seeds": list(seeds)}})


def make_identity_reference(root: Path, params) -> Path:
    """The ``identity`` stage's output for ``root``'s faces (real dlib descriptors of the real crops)."""
    from faceswap.stages import identity

    identity.run(params)
    return identity.reference_path(params)
