"""The identity reference (built by stage ``identity``, :mod:`faceswap.stages.identity`): what each person looks
like to a face-recognition network, measured once for every variant's evaluation.

Each identity's centroid is the mean dlib descriptor of its *training* crops (never test faces), and the test
crops' own descriptors give the baseline ``truth_identity_success``: the share of real faces nearer their own
centroid than the other's. A swap metric is only worth reading where that baseline is ≈ 1. Saved as
``<paths.identity>/reference.npz`` (centroids, the crop coverage they assume, the per-face baseline).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from faceswap.errors import FaceswapError

if TYPE_CHECKING:
    from faceswap.config import Params

REFERENCE_NAME = "reference.npz"


class IdentityReferenceError(FaceswapError, ValueError):
    """A missing, unreadable or stale identity reference."""


@dataclass(frozen=True)
class IdentityReference:
    identities: tuple[str, str]
    centroids: dict[str, np.ndarray]
    coverage: float
    train_faces: dict[str, int]
    truth_success: dict[str, np.ndarray]  # per test face of each identity: nearer its own centroid?
    truth_margin: dict[str, np.ndarray]

    def save(self, path: Path) -> None:
        from faceswap.files import atomic_write

        arrays = {f"centroid_{i}": c for i, c in self.centroids.items()}
        arrays |= {f"truth_success_{i}": v for i, v in self.truth_success.items()}
        arrays |= {f"truth_margin_{i}": v for i, v in self.truth_margin.items()}
        meta = {"identities": list(self.identities), "coverage": self.coverage, "train_faces": self.train_faces}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: np.savez(f, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays))

    @classmethod
    def load(cls, path: str | Path) -> IdentityReference:
        path = Path(path)
        if not path.is_file():
            raise IdentityReferenceError(f"identity reference not found: {path} (run `dvc repro identity`)")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                ids = tuple(meta["identities"])
                return cls(ids, {i: z[f"centroid_{i}"] for i in ids}, float(meta["coverage"]), meta["train_faces"],
                           {i: z[f"truth_success_{i}"] for i in ids}, {i: z[f"truth_margin_{i}"] for i in ids})
        except (OSError, KeyError, ValueError) as err:
            raise IdentityReferenceError(f"{path} is not a readable identity reference ({err}); rerun "
                                         "`dvc repro identity`") from None


def _evenly(images: np.ndarray, k: int | None) -> np.ndarray:
    if k is None or k >= len(images):
        return images
    return images[np.unique(np.linspace(0, len(images) - 1, k).round().astype(int))]


def build_reference(params: Params, manifest: str | Path, faces_dir: str | Path | None,
                    train_faces: int | None = None) -> IdentityReference:
    """Centroids from training crops (at most ``evaluate.identity_train_faces`` each, evenly spaced) and the
    test crops' baseline, from the accepted ``manifest`` (crops relative to ``faces_dir``; None: its folder)."""
    from faceswap.data.dataset import load_faces
    from faceswap.metrics.identity import identity_centroids, shared_encoder, transfer_scores

    cfg = params.evaluate
    ids = tuple(params.base.identities)
    if len(ids) != 2:
        raise IdentityReferenceError(f"identity transfer needs exactly two identities, params has {list(ids)}")
    k = cfg.identity_train_faces if train_faces is None else train_faces
    size, coverage = params.base.image_size, params.align.coverage
    train = load_faces(manifest, ids, "train", size, faces_dir)
    test = load_faces(manifest, ids, "test", size, faces_dir)
    enc = shared_encoder()
    picked = {i: _evenly(train[i].images, k) for i in ids}
    centroids = identity_centroids(picked, coverage, enc)
    success, margin = {}, {}
    for i in ids:
        other = ids[1] if i == ids[0] else ids[0]
        s = transfer_scores(enc.describe(test[i].images, coverage), other, i, centroids)
        success[i] = s["success_per_face"].astype(np.float64)
        margin[i] = s["margin_per_face"].astype(np.float64)
    return IdentityReference(ids, centroids, coverage, {i: len(picked[i]) for i in ids}, success, margin)
