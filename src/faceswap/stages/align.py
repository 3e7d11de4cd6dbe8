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

from faceswap.config import SplitParams
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
    warnings: tuple[str, ...] = ()  # clips too short for the split, clips the split dropped most of: each named

    def to_json(self) -> dict[str, Any]:
        """``report.json``'s layout."""
        return asdict(self) | {"clips": [asdict(c) for c in self.clips],
                               "unreadable_frames": list(self.unreadable_frames), "warnings": list(self.warnings)}

    def metrics(self) -> dict[str, Any]:
        """The DVC metrics file ``paths.align_metrics``: the headline figures, the rejections, per identity."""
        d = self.to_json()
        return {k: d[k] for k in METRICS} | {"rejected": d["rejected"], "identities": d["identities"]}


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return round(float(np.mean(vals)), 4) if vals else None


def split_warning(c: ClipStats, split: SplitParams) -> str | None:
    """One line naming the setting when the split, not the video, lost most of a clip (:attr:`ClipStats.
    split_dropped_most`); None otherwise."""
    if not c.split_dropped_most or c.split is None:
        return None
    blocks = f"auto → {c.split.blocks}" if split.blocks == "auto" else str(c.split.blocks)
    return (f"{c.identity}/{c.video}: the split dropped {c.rejected.get('split_gap', 0)} of its {c.frames} frames "
            f"as split_gap (split.blocks {blocks} with split.gap_s {c.split.gap_s:g} s on a {c.split.seconds:.1f}-s "
            "clip), more than it kept: "
            + ("split.blocks: auto fits both to the clip" if split.blocks != "auto" else "lower split.gap_s"))


def summarise(r: AlignResult, out: Path, detector_reason: str, split: SplitParams | None = None) -> AlignRecord:
    """The record of a run; ``split`` (the params the run used) names the setting in its warnings."""
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
        roll_refined=r.roll.refined, unreadable_frames=r.unreadable_frames,
        warnings=(*r.split_problems, *(w for c in r.clips if (w := split_warning(c, split or SplitParams())))))


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
    record = summarise(result, faces, reason, params.split)
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
    lines.append("  per clip: faces kept of its frames (train, val, test), how it was split; dropped by reason")
    for c in r.clips:
        rej = ", ".join(f"{k} {v}" for k, v in c.rejected.items() if v)
        how = f", {c.split.describe()} over {c.split.seconds:.1f} s" if c.split is not None else ""
        lines.append(
            f"    {c.identity}/{c.video}: {c.faces}/{c.frames} faces (train {c.train}, val {c.val}, test {c.test}"
            f"{how}); residual {c.mean_residual_px}, jitter {c.jitter_px}, crop jitter {c.crop_jitter_px}"
            + (f"  [dropped: {rej}]" if rej else "")
        )
    lines += [f"  warning: {w}" for w in r.warnings]
    return "\n".join(lines)
