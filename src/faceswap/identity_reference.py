"""The identity reference (built by stage ``identity``, :mod:`faceswap.stages.identity`): what each person looks
like to a face-recognition network, measured once for every variant's evaluation.

Each identity's centroid is the mean dlib descriptor of its *training* crops (never test faces), and the test
crops' own descriptors give the baseline ``truth_identity_success``: the share of real faces nearer their own
centroid than the other's. A swap metric is only worth reading where that baseline is ≈ 1.

The same test faces calibrate the verification threshold (issue #21): the 95th percentile of each identity's
real test faces' distances to its own centroid, both identities pooled
(:func:`faceswap.metrics.identity.calibrate_verification`), with its false-accept rate (the other person's
real faces within it of a centroid not theirs), its false-reject rate (≈ 5% by construction), the two
distributions' medians and, for comparison, their equal-error point. A swap is *verified* as its target when it
is nearer the target than the source and within that threshold of the target's centroid.

Saved as ``<paths.identity>/reference.npz`` (format :data:`FORMAT`: centroids, the crop coverage they assume,
the per-face baseline and distances, the calibration).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from faceswap.errors import FaceswapError
from faceswap.metrics.identity import Verification

if TYPE_CHECKING:
    from faceswap.config import Params

REFERENCE_NAME = "reference.npz"
FORMAT = 2  # 2: per-face truth distances and the verification threshold (issue #21); 1 (unversioned): neither
_PER_FACE = ("truth_success", "truth_margin", "truth_distance", "truth_other_distance")  # arrays per identity


class IdentityReferenceError(FaceswapError, ValueError):
    """A missing, unreadable or stale identity reference."""


@dataclass(frozen=True)
class IdentityReference:
    identities: tuple[str, str]
    centroids: dict[str, np.ndarray]
    coverage: float
    train_faces: dict[str, int]
    truth_success: dict[str, np.ndarray]  # per test face of each identity: nearer its own centroid?
    truth_margin: dict[str, np.ndarray]  # per test face: distance to the other's centroid − to its own
    truth_distance: dict[str, np.ndarray]  # per test face: distance to its own identity's centroid
    truth_other_distance: dict[str, np.ndarray]  # per test face: distance to the other identity's centroid
    verification: Verification  # the calibrated threshold and its error rates on these test faces

    @property
    def threshold(self) -> float:
        """The verification threshold (a descriptor distance to a centroid)."""
        return self.verification.threshold

    def save(self, path: Path) -> None:
        from faceswap.files import atomic_write

        arrays = {f"centroid_{i}": c for i, c in self.centroids.items()}
        for key in _PER_FACE:
            arrays |= {f"{key}_{i}": v for i, v in getattr(self, key).items()}
        meta = {"format": FORMAT, "identities": list(self.identities), "coverage": self.coverage,
                "train_faces": self.train_faces, "verification": self.verification.to_dict()}
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
                version = meta.get("format", 1)
                if version == FORMAT:
                    ids = tuple(meta["identities"])
                    arrays = {key: {i: z[f"{key}_{i}"] for i in ids} for key in _PER_FACE}
                    return cls(ids, {i: z[f"centroid_{i}"] for i in ids}, float(meta["coverage"]),
                               meta["train_faces"], **arrays,
                               verification=Verification.from_dict(meta["verification"]))
        except (AttributeError, OSError, KeyError, TypeError, ValueError) as err:
            raise IdentityReferenceError(f"{path} is not a readable identity reference ({err}); rerun "
                                         "`dvc repro identity`") from None
        raise IdentityReferenceError(
            f"{path} is an identity reference of format {version}; this code reads format {FORMAT} (per-face "
            "distances and the calibrated verification threshold, issue #21): rerun `dvc repro identity`")


def reference_path(params: Params) -> Path:
    """Where stage ``identity`` writes the reference and the evaluation reads it."""
    return Path(params.paths.identity) / REFERENCE_NAME


def _evenly(images: np.ndarray, k: int | None) -> np.ndarray:
    if k is None or k >= len(images):
        return images
    return images[np.unique(np.linspace(0, len(images) - 1, k).round().astype(int))]


def build_reference(params: Params, manifest: str | Path, faces_dir: str | Path | None,
                    train_faces: int | None = None) -> IdentityReference:
    """Centroids from training crops (at most ``evaluate.identity_train_faces`` each, evenly spaced), the test
    crops' baseline and the verification threshold calibrated on them, from the accepted ``manifest`` (crops
    relative to ``faces_dir``; None: its folder)."""
    from faceswap.data.dataset import load_faces
    from faceswap.metrics.identity import calibrate_verification, identity_centroids, shared_encoder, transfer_scores

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
    success, margin, own, to_other = {}, {}, {}, {}
    other = {ids[0]: ids[1], ids[1]: ids[0]}
    for i in ids:
        s = transfer_scores(enc.describe(test[i].images, coverage), other[i], i, centroids)
        success[i] = s["success_per_face"].astype(np.float64)
        margin[i] = s["margin_per_face"].astype(np.float64)
        own[i] = s["distance_per_face"].astype(np.float64)
        to_other[i] = s["distance_source_per_face"].astype(np.float64)
    # against centroid i, the impostors are the other person's real test faces
    verification = calibrate_verification(own, {i: to_other[other[i]] for i in ids})
    return IdentityReference(ids, centroids, coverage, {i: len(picked[i]) for i in ids}, success, margin, own,
                             to_other, verification)
