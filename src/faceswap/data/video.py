"""Frame extraction (``faceswap extract``): sample frames from every video of every identity.

Layout in: ``<raw>/<identity>/**/<video>.<ext>``. Layout out::

    <out>/<identity>/<video>/<frame_index:06d>.jpg   sampled frames
    <out>/frames.parquet                             one row per frame (see FRAME_COLUMNS)

and :func:`extract_frames` returns what happened to every video (:class:`ExtractResult`); the stage
(:mod:`faceswap.stages.extract`) writes it as ``<out>/report.json``.

Videos are decoded sequentially; frames that are not sampled are only *grabbed* (demuxed and decoded
by FFmpeg, but never converted to BGR or copied into Python), and videos are processed in parallel
threads (OpenCV releases the GIL while decoding and encoding). A bad file never stops the stage: it is
reported (the stage calls an identity left with no frame at all an error).
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceswap.errors import FaceswapError

# FFmpeg's own log lines ("moov atom not found", ...) duplicate what the report says; keep them quiet
# unless the user asks for them. Only effective if set before cv2 is first imported.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv"})
FRAME_COLUMNS = ("identity", "video", "frame_index", "timestamp_s", "path", "width", "height", "fps")
INDEX_NAME = "frames.parquet"
REPORT_NAME = "report.json"  # the stage's report, next to the frames (and what marks a folder as this stage's)


class ExtractError(FaceswapError, RuntimeError):
    """The stage cannot produce a usable result (an identity without frames, an unusable output dir)."""


@dataclass
class VideoResult:
    """What happened to one video file."""

    identity: str
    video: str
    path: str
    status: str = "ok"  # ok | partial (decoding stopped early) | failed (nothing usable)
    message: str = ""
    fps: float = 0.0
    frames_expected: int | None = None  # from the container header; None when it does not say
    frames_decoded: int = 0  # frames read (grabbed) before the end or an error
    frames_kept: int = 0


def find_videos(raw_dir: Path, identity: str) -> tuple[list[Path], list[Path]]:
    """Video files (by extension) under ``raw_dir/identity``, sorted, and the other files found there."""
    root = raw_dir / identity
    if not root.is_dir():
        return [], []
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    videos = [p for p in files if p.suffix.lower() in VIDEO_EXTENSIONS]
    return videos, [p for p in files if p.suffix.lower() not in VIDEO_EXTENSIONS]


def video_name(raw_dir: Path, identity: str, path: Path) -> str:
    """A stable id for a video within its identity: its path under the identity folder, '/' → '__'."""
    return path.relative_to(raw_dir / identity).as_posix().replace("/", "__")


def count_frames(path: str | Path) -> int:
    """Frames in a video: the container's count, or (a container that does not say) the frames a decode grabs; 0
    for a file that cannot be opened (extract reports it)."""
    import cv2

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            return 0
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if n > 0:
            return n
        while cap.grab():
            n += 1
        return n
    finally:
        cap.release()


def iter_sampled_frames(
    path: str | Path, every: int = 1, max_frames: int | None = None, result: VideoResult | None = None
) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield ``(frame_index, timestamp_s, frame_bgr)`` for every ``every``-th frame, at most ``max_frames``.

    Skipped frames are grabbed, not retrieved. Problems are recorded in ``result`` (if given) rather
    than raised: an unreadable file yields nothing and a decode that stops early yields what it got.
    """
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    result = result or VideoResult("", "", str(path))
    path = Path(path)
    if path.stat().st_size == 0:
        result.status, result.message = "failed", "empty file (0 bytes)"
        return
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            result.status = "failed"
            result.message = "cannot open: not a video FFmpeg can decode (corrupt, truncated or not a video)"
            return
        fps = cap.get(cv2.CAP_PROP_FPS)
        if not (fps and math.isfinite(fps) and fps > 0):
            fps, result.message = 25.0, "no frame rate in the container; timestamps assume 25 fps"
        result.fps = float(fps)
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        result.frames_expected = n if n > 0 else None
        index = 0
        while max_frames is None or result.frames_kept < max_frames:
            if not cap.grab():
                break
            result.frames_decoded += 1
            if index % every == 0:
                ok, frame = cap.retrieve()
                if not ok or frame is None:
                    result.status, result.message = "partial", f"frame {index} could not be decoded"
                    break
                result.frames_kept += 1
                yield index, index / fps, frame
            index += 1
    except cv2.error as err:
        result.status, result.message = "partial", f"OpenCV error at frame {result.frames_decoded}: {err}"
    finally:
        cap.release()
    capped = max_frames is not None and result.frames_kept >= max_frames
    if (
        result.status == "ok"
        and not capped
        and result.frames_expected
        and result.frames_decoded < result.frames_expected
    ):
        result.status = "partial"
        result.message = f"decoding stopped at frame {result.frames_decoded} of {result.frames_expected}"
    if result.frames_kept == 0 and result.status != "failed":
        result.status = "failed"
        result.message = result.message or "no frame could be decoded"


def _extract_one(
    raw_dir: Path, out: Path, identity: str, path: Path, every: int, max_frames: int | None, quality: int
) -> tuple[VideoResult, list[dict]]:
    """One video's sampled frames written under ``out``: what happened to it, and its rows of the frame index."""
    import cv2

    name = video_name(raw_dir, identity, path)
    res = VideoResult(identity, name, str(path))
    rows: list[dict] = []
    folder = out / identity / name
    try:
        for index, ts, frame in iter_sampled_frames(path, every, max_frames, res):
            rel = f"{identity}/{name}/{index:06d}.jpg"
            folder.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(out / rel), frame, [cv2.IMWRITE_JPEG_QUALITY, quality]):
                raise OSError(f"cannot write {out / rel}")
            h, w = frame.shape[:2]
            rows.append(
                {
                    "identity": identity,
                    "video": name,
                    "frame_index": index,
                    "timestamp_s": round(ts, 6),
                    "path": rel,
                    "width": w,
                    "height": h,
                    "fps": res.fps,
                }
            )
    except OSError as err:  # the output side failing is not the video's fault: stop the stage
        raise ExtractError(str(err)) from err
    return res, rows


def prepare_out_dir(out: Path, markers: Sequence[str]) -> None:
    """Empty ``out`` if it holds a previous result of this stage; refuse to wipe anything else."""
    if out.exists() and any(out.iterdir()):
        if not any((out / m).exists() for m in markers):
            raise ExtractError(
                f"output folder {out} is not empty and was not written by this stage; refusing to wipe it"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class ExtractResult:
    """What :func:`extract_frames` did: every video's outcome (sorted by identity, then video) and the files it
    passed over (not videos by their extension)."""

    videos: tuple[VideoResult, ...]
    ignored_files: tuple[str, ...]


def extract_frames(
    raw_dir: str | Path,
    out: str | Path,
    identities: Sequence[str] = ("a", "b"),
    *,
    every: int | Mapping[str, int] = 2,
    max_frames: int | None = 500,
    workers: int | None = None,
    jpeg_quality: int = 95,
    progress: bool = True,
) -> ExtractResult:
    """Sample frames of every video of every identity into ``out`` (frames and frames.parquet); see the module
    docstring. ``every``: one step for all, or one per identity; ``progress``: a bar of videos on stderr."""
    import pandas as pd
    from tqdm import tqdm

    raw_dir, out = Path(raw_dir), Path(out)
    steps = every if isinstance(every, Mapping) else dict.fromkeys(identities, every)
    if any(steps.get(i, 0) < 1 for i in identities):
        raise ExtractError(f"--every must be at least 1 for each identity, got {every}")
    if not raw_dir.is_dir():
        raise ExtractError(f"raw video folder not found: {raw_dir} (expected {raw_dir}/<identity>/*.mp4)")
    prepare_out_dir(out, (INDEX_NAME, REPORT_NAME))
    jobs, ignored = [], []
    for ident in identities:
        videos, others = find_videos(raw_dir, ident)
        jobs += [(ident, v) for v in videos]
        ignored += [str(p) for p in others]
    done: list[tuple[VideoResult, list[dict]]] = []
    bar = tqdm(total=len(jobs), unit="video", desc="extract", file=sys.stderr, disable=None if progress else True)
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))) as pool:
            futures = [
                pool.submit(_extract_one, raw_dir, out, ident, path, steps[ident], max_frames, jpeg_quality)
                for ident, path in jobs
            ]
            for fut in as_completed(futures):
                res, rows = fut.result()
                done.append((res, rows))
                bar.update(1)
                bar.set_postfix_str(f"{res.identity}/{res.video}: {res.frames_kept} frames")
    finally:
        bar.close()
    done.sort(key=lambda d: (d[0].identity, d[0].video))
    frame_df = pd.DataFrame([row for _, rows in done for row in rows], columns=list(FRAME_COLUMNS))
    frame_df = frame_df.astype({"frame_index": "int64", "width": "int64", "height": "int64", "timestamp_s": "float64"})
    frame_df.to_parquet(out / INDEX_NAME, index=False)
    return ExtractResult(videos=tuple(res for res, _ in done), ignored_files=tuple(ignored))
