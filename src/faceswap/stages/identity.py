"""Stage ``identity``: each identity's face-recognition centroid from its training crops, the test faces' own
baseline (how often a real face is nearer its own centroid) and the verification threshold calibrated on them,
written once for every variant's evaluation.

The threshold (issue #21) is the 95th percentile of the real test faces' descriptor distances to their own
identity's centroid, both identities pooled: a swap is *verified* as its target when it is nearer the target than
the source and as close to the target's centroid as 95% of the target's real faces are. The record states its
false-reject rate on those faces (≈ 5% by construction), its false-accept rate (the other person's real test
faces within it of a centroid not theirs), both distributions' medians and their equal-error point (for
comparison; the threshold is the percentile, not the EER point)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faceswap.files import write_json
from faceswap.identity_reference import IdentityReference, build_reference, reference_path

if TYPE_CHECKING:
    from faceswap.config import Params


@dataclass(frozen=True)
class IdentityRecord:
    truth_identity_success: float
    per_identity_success: dict[str, float]
    per_identity_margin: dict[str, float]
    centroid_distance: float
    verify_threshold: float  # 95th percentile of real test faces' distances to their own centroid (pooled)
    verify_quantile: float
    verify_false_accept: float  # the other person's real test faces within the threshold of a centroid not theirs
    verify_false_reject: float  # real test faces beyond the threshold of their own centroid (≈ 1 − quantile)
    per_identity_false_accept: dict[str, float]  # keyed by the centroid's identity
    per_identity_false_reject: dict[str, float]
    verify_eer: float  # equal-error rate of own vs other distances (for comparison)
    verify_eer_threshold: float
    own_distance_median: float  # real test faces to their own centroid
    other_distance_median: float  # real test faces to the other identity's centroid
    per_identity_own_distance_median: dict[str, float]
    train_faces: dict[str, int]
    test_faces: dict[str, int]
    coverage: float
    seconds: float
    reference: str

    def to_json(self) -> dict[str, Any]:
        """The DVC metrics file's layout (flat keys per identity, as the metrics history has them)."""
        d = asdict(self)
        d.pop("reference")
        flat = {}
        for key, name in (("per_identity_success", "truth_identity_success"),
                          ("per_identity_margin", "truth_identity_margin"),
                          ("per_identity_false_accept", "verify_false_accept"),
                          ("per_identity_false_reject", "verify_false_reject"),
                          ("per_identity_own_distance_median", "own_distance_median")):
            flat |= {f"{name}_{i}": v for i, v in d.pop(key).items()}
        return {"truth_identity_success": d.pop("truth_identity_success"), **flat, **d}


def summarise(ref: IdentityReference, seconds: float, where: Path) -> IdentityRecord:
    ids, v = ref.identities, ref.verification
    return IdentityRecord(
        truth_identity_success=float(np.mean([ref.truth_success[i].mean() for i in ids])),
        per_identity_success={i: float(ref.truth_success[i].mean()) for i in ids},
        per_identity_margin={i: float(ref.truth_margin[i].mean()) for i in ids},
        centroid_distance=float(np.linalg.norm(ref.centroids[ids[0]] - ref.centroids[ids[1]])),
        verify_threshold=v.threshold, verify_quantile=v.quantile, verify_false_accept=v.false_accept,
        verify_false_reject=v.false_reject, per_identity_false_accept=dict(v.false_accept_per_identity),
        per_identity_false_reject=dict(v.false_reject_per_identity), verify_eer=v.eer,
        verify_eer_threshold=v.eer_threshold, own_distance_median=v.own_median,
        other_distance_median=v.other_median,
        per_identity_own_distance_median={i: float(np.median(ref.truth_distance[i])) for i in ids},
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
            f"{r.seconds:.0f} s)\n"
            f"  verification threshold {r.verify_threshold:.3f} (p{r.verify_quantile * 100:.0f} of real test faces' "
            f"distance to their own centroid, median {r.own_distance_median:.3f}; to the other's "
            f"{r.other_distance_median:.3f}): false reject {r.verify_false_reject:.1%}, false accept "
            f"{r.verify_false_accept:.1%}; equal-error point {r.verify_eer:.1%} at {r.verify_eer_threshold:.3f}")
