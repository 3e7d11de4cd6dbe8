"""Stage ``identity``: each identity's face-recognition centroid from its training crops, and the test faces'
own baseline (how often a real face is nearer its own centroid), written once for every variant's evaluation."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faceswap.files import write_json
from faceswap.identity_reference import REFERENCE_NAME, IdentityReference, build_reference

if TYPE_CHECKING:
    from faceswap.config import Params


@dataclass(frozen=True)
class IdentityRecord:
    truth_identity_success: float
    per_identity_success: dict[str, float]
    per_identity_margin: dict[str, float]
    centroid_distance: float
    train_faces: dict[str, int]
    test_faces: dict[str, int]
    coverage: float
    seconds: float
    reference: str

    def to_json(self) -> dict[str, Any]:
        """The DVC metrics file's layout (flat keys per identity, as the metrics history has them)."""
        d = asdict(self)
        d.pop("reference")
        succ, margin = d.pop("per_identity_success"), d.pop("per_identity_margin")
        return {"truth_identity_success": d.pop("truth_identity_success"),
                **{f"truth_identity_success_{i}": v for i, v in succ.items()},
                **{f"truth_identity_margin_{i}": v for i, v in margin.items()}, **d}


def reference_path(params: Params) -> Path:
    """Where the evaluation reads the reference this stage writes."""
    return Path(params.paths.identity) / REFERENCE_NAME


def summarise(ref: IdentityReference, seconds: float, where: Path) -> IdentityRecord:
    ids = ref.identities
    return IdentityRecord(
        truth_identity_success=float(np.mean([ref.truth_success[i].mean() for i in ids])),
        per_identity_success={i: float(ref.truth_success[i].mean()) for i in ids},
        per_identity_margin={i: float(ref.truth_margin[i].mean()) for i in ids},
        centroid_distance=float(np.linalg.norm(ref.centroids[ids[0]] - ref.centroids[ids[1]])),
        train_faces=dict(ref.train_faces), test_faces={i: len(ref.truth_success[i]) for i in ids},
        coverage=ref.coverage, seconds=round(seconds, 1), reference=str(where))


def run(params: Params) -> IdentityRecord:
    t0 = time.perf_counter()
    ref = build_reference(params, params.paths.accepted, params.paths.faces)
    where = reference_path(params)
    ref.save(where)
    record = summarise(ref, time.perf_counter() - t0, where)
    write_json(params.paths.identity_metrics, record.to_json())
    return record


def format_record(r: IdentityRecord) -> str:
    return (f"identity reference → {r.reference}: centroids from {r.train_faces} training crops; test faces nearer "
            f"their own centroid: {r.truth_identity_success:.1%} (centroids {r.centroid_distance:.3f} apart; "
            f"{r.seconds:.0f} s)")
