"""Stage ``extract``: sampled frames of every video of every identity, from ``paths.raw`` into ``paths.frames``.

The frames and their index (``frames.parquet``) come from :func:`faceswap.data.video.extract_frames`; this stage
writes its :class:`ExtractRecord` as ``<paths.frames>/report.json`` (per identity and per video: what happened,
frames decoded and kept). A bad file never stops it; an identity left without a frame does, after the report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceswap.data.sampling import footage_frames, resolve_every
from faceswap.data.video import REPORT_NAME, ExtractError, VideoResult, extract_frames
from faceswap.files import write_json

if TYPE_CHECKING:
    from faceswap.config import Params


class NoFramesError(ExtractError):
    """An identity has no frame: no folder, or no video in it could be decoded."""


@dataclass(frozen=True)
class IdentityFrames:
    videos: int
    videos_failed: int
    videos_partial: int
    frames: int
    folder_exists: bool
    every: int  # the sampling step it got (extract.every, or auto's choice from footage_frames)
    footage_frames: int  # frames of its videos before sampling, as their containers count them


@dataclass(frozen=True)
class ExtractRecord:
    out: str
    identities: dict[str, IdentityFrames]
    videos: tuple[VideoResult, ...]
    ignored_files: tuple[str, ...]

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.identities.values())

    def to_json(self) -> dict[str, Any]:
        """``report.json``'s layout."""
        return {"out": self.out, "identities": {i: asdict(s) for i, s in self.identities.items()},
                "videos": [asdict(v) for v in self.videos], "ignored_files": list(self.ignored_files)}


def run(params: Params) -> ExtractRecord:
    e, raw, out = params.extract, Path(params.paths.raw), Path(params.paths.frames)
    footage = footage_frames(raw, params.base.identities) if raw.is_dir() else dict.fromkeys(params.base.identities, 0)
    every = resolve_every(e, footage)
    result = extract_frames(raw, out, params.base.identities, every=every, max_frames=e.max_frames,
                            workers=e.workers, jpeg_quality=e.jpeg_quality)
    per_ident = {}
    for ident in params.base.identities:
        mine = [v for v in result.videos if v.identity == ident]
        per_ident[ident] = IdentityFrames(
            videos=len(mine), videos_failed=sum(v.status == "failed" for v in mine),
            videos_partial=sum(v.status == "partial" for v in mine), frames=sum(v.frames_kept for v in mine),
            folder_exists=(raw / ident).is_dir(), every=every[ident], footage_frames=footage[ident])
    record = ExtractRecord(str(out), per_ident, result.videos, result.ignored_files)
    write_json(out / REPORT_NAME, record.to_json())
    empty = [i for i, s in per_ident.items() if s.frames == 0]
    if empty:
        why = "; ".join(f"{i}: " + (f"no folder {raw / i}" if not per_ident[i].folder_exists
                                    else f"{per_ident[i].videos} video file(s), none decodable") for i in empty)
        raise NoFramesError(f"no frames for identity {', '.join(empty)} ({why}); see {out / REPORT_NAME}")
    return record


def format_record(r: ExtractRecord) -> str:
    """One line per identity, then every video that was not fully read."""
    lines = [f"extract → {r.out}: {r.frames} frames"]
    for ident, s in r.identities.items():
        lines.append(f"  {ident}: {s.frames} frames (every {s.every} of {s.footage_frames}) from {s.videos} videos"
                     f" ({s.videos_failed} failed, {s.videos_partial} partial)")
    problems = [v for v in r.videos if v.status != "ok" or v.message]
    if problems:
        lines.append("  problems:")
        for v in problems:
            lines.append(f"    {v.status:7s} {v.path}: {v.message} (kept {v.frames_kept} frames)")
    if r.ignored_files:
        lines.append(f"  ignored {len(r.ignored_files)} non-video file(s): " + ", ".join(r.ignored_files[:5]))
    return "\n".join(lines)
