"""Stage ``align``: detect, select, align (5-point similarity) and crop the faces of ``paths.frames`` into
``paths.faces``.

The crops come from :func:`faceswap.data.align.align_faces` with the detector ``align.detector`` names
(:func:`faceswap.data.detect.create_detector`); this stage writes their manifest (``<paths.faces>/manifest.parquet``,
what validate reads), its :class:`AlignRecord` as ``<paths.faces>/report.json`` and the headline figures as the
DVC metrics file ``paths.align_metrics``. An identity without a face stops it, after those are written.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faceswap.data.align import REPORT_NAME, AlignError, AlignResult, ClipStats, align_faces
from faceswap.data.manifest import MANIFEST_NAME, write_manifest
from faceswap.files import write_json

if TYPE_CHECKING:
    from faceswap.config import Params
    from faceswap.data.detect import Detector

# the report's figures that also go to the DVC metrics file, in its order (then rejected and identities)
METRICS = ("faces", "frames_read", "mean_residual_px", "jitter_px", "crop_jitter_px", "frames_per_second", "detector",
           "detector_weights", "roll_retried", "roll_turned", "roll_recovered")


class NoFaceError(AlignError):
    """An identity came out of the stage without a single face."""


@dataclass(frozen=True)
class IdentityFaces:
    frames: int
    faces: int
    train: int
    val: int
    test: int
    videos_with_faces: int


@dataclass(frozen=True)
class AlignRecord:
    out: str
    detector: str
    detector_weights: str
    detector_reason: str
    size: int
    frames_read: int
    faces: int
    rejected: dict[str, int]
    identities: dict[str, IdentityFaces]
    mean_residual_px: float | None
    jitter_px: float | None
    crop_jitter_px: float | None
    seconds: float
    frames_per_second: float
    clips: tuple[ClipStats, ...]
    roll_retried: int
    roll_turned: int
    roll_recovered: int
    roll_refined: int
    unreadable_frames: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """``report.json``'s layout."""
        return asdict(self) | {"clips": [asdict(c) for c in self.clips],
                               "unreadable_frames": list(self.unreadable_frames)}

    def metrics(self) -> dict[str, Any]:
        """The DVC metrics file ``paths.align_metrics``: the headline figures, the rejections, per identity."""
        d = self.to_json()
        return {k: d[k] for k in METRICS} | {"rejected": d["rejected"], "identities": d["identities"]}


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return round(float(np.mean(vals)), 4) if vals else None


def summarise(r: AlignResult, out: Path, detector_reason: str) -> AlignRecord:
    idents = {}
    for ident, frames in r.frames.items():
        mine = [row for row in r.rows if row.identity == ident]
        idents[ident] = IdentityFaces(
            frames=frames, faces=len(mine), train=sum(row.split == "train" for row in mine),
            val=sum(row.split == "val" for row in mine), test=sum(row.split == "test" for row in mine),
            videos_with_faces=len({row.video for row in mine}))
    return AlignRecord(
        out=str(out), detector=r.detector, detector_weights=r.detector_weights, detector_reason=detector_reason,
        size=r.size, frames_read=sum(r.frames.values()), faces=len(r.rows), rejected=r.rejected, identities=idents,
        mean_residual_px=_mean([row.alignment_residual_px for row in r.rows]),
        jitter_px=_mean([c.jitter_px for c in r.clips]), crop_jitter_px=_mean([c.crop_jitter_px for c in r.clips]),
        seconds=round(r.seconds, 3), frames_per_second=round(r.detected / r.seconds, 3) if r.seconds > 0 else 0.0,
        clips=r.clips, roll_retried=r.roll.retried, roll_turned=r.roll.turned, roll_recovered=r.roll.recovered,
        roll_refined=r.roll.refined, unreadable_frames=r.unreadable_frames)


def run(params: Params, detector: Detector | None = None) -> AlignRecord:
    """Align with ``detector`` if given (a caller that holds one: benchmarks), else the one the params name."""
    a, paths = params.align, params.paths
    reason = "given by the caller"
    if detector is None:
        from faceswap.data.detect import create_detector

        choice = create_detector(a.detector, device=a.device, retinaface_weights=a.retinaface_weights,
                                 min_face_size=a.min_face_size)
        detector, reason = choice.detector, choice.reason
    faces = Path(paths.faces)
    result = align_faces(paths.frames, faces, detector, a, params.split, size=a.size or params.base.image_size)
    write_manifest(result.rows, faces / MANIFEST_NAME)
    record = summarise(result, faces, reason)
    write_json(faces / REPORT_NAME, record.to_json())
    write_json(paths.align_metrics, record.metrics())
    empty = [i for i, d in record.identities.items() if d.faces == 0]
    if empty or not record.identities:
        raise NoFaceError(f"no face found for identity {', '.join(empty) or '(any)'}; see {faces / REPORT_NAME}")
    return record


def format_record(r: AlignRecord) -> str:
    lines = [
        f"align → {r.out}: {r.faces} faces from {r.frames_read} frames "
        f"({r.detector} {r.detector_weights[:19]}: {r.detector_reason}; {r.frames_per_second:.1f} frames/s)",
        "  rejected: " + ", ".join(f"{k} {v}" for k, v in r.rejected.items()),
        f"  roll retry: {r.roll_retried} frames without a face upright, {r.roll_turned} looked at again turned, "
        f"{r.roll_recovered} found; {r.roll_refined} rolled faces detected again de-rolled",
    ]
    lines += [f"  unreadable frame: {p}" for p in r.unreadable_frames]
    for ident, d in r.identities.items():
        lines.append(f"  {ident}: {d.faces} faces (train {d.train}, val {d.val}, test {d.test}) "
                     f"from {d.frames} frames")
    lines.append(
        f"  mean alignment residual {r.mean_residual_px} px at {r.size}²; jitter (aligned landmarks) "
        f"{r.jitter_px} px, crop jitter (phase correlation) {r.crop_jitter_px} px"
    )
    for c in r.clips:
        rej = ", ".join(f"{k} {v}" for k, v in c.rejected.items() if v)
        lines.append(
            f"    {c.identity}/{c.video}: {c.faces}/{c.frames} faces, residual {c.mean_residual_px},"
            f" jitter {c.jitter_px}, crop jitter {c.crop_jitter_px}" + (f"  [{rej}]" if rej else "")
        )
    return "\n".join(lines)
