"""Face detection, selection, 5-point alignment and the manifest (``faceswap align``).

One module because the steps below share one pass over each clip's frames (and its per-clip report); the
detector, the geometry and the roll retry are modules of their own.

The geometry (template, Umeyama, warping, smoothing) lives in :mod:`faceswap.data.geometry`. Per clip (one video of
one identity), in frame order:

1. detect faces in batches (decoded on every core between detector calls; on a GPU a thread decodes ahead);
   once the clip is read, its runs of frames with no usable face upright are probed turned in 45° steps (90°
   next to large faces; ``align.roll_retry``, :class:`~faceswap.data.roll_retry.RollRetry`);
2. reject frames with no face, only low-score faces or only small faces; among the rest keep the face
   that continues the clip's track (highest IoU with the previous face, at least ``track_iou``),
   falling back to the largest (policy ``track``), or simply the largest / the highest score;
3. reject faces whose landmarks do not fit the template (shape misfit above ``max_residual``);
4. smooth the landmarks over time within each track segment (Gaussian, centred: no lag);
5. fit the similarity transform (Umeyama) from the smoothed landmarks to the template, warp the crop
   (written into the output folder), and make one :class:`~faceswap.data.manifest.ManifestRow` per face.

:func:`align_faces` returns the rows and each clip's figures (:class:`AlignResult`); the stage
(:mod:`faceswap.stages.align`) writes the manifest, the report and the DVC metrics from them.

Two jitter figures are reported per clip: ``jitter_px`` is the frame-to-frame motion of the *detected*
landmarks after alignment (the issue's definition; smoothing raises it, because the detector's noise is no
longer absorbed by the transform), and ``crop_jitter_px`` is the frame-to-frame shift of the crop's
content measured by phase correlation (what a viewer sees shake; smoothing lowers it).
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from faceswap.config import AlignParams, SplitParams
from faceswap.data.detect import Detections, Detector
from faceswap.data.geometry import (
    apply_affine,
    face_template,
    rms_residual,
    select_face,
    smooth_landmarks,
    umeyama,
    warp_face,
)
from faceswap.data.manifest import MANIFEST_NAME, ManifestRow
from faceswap.data.roll_retry import RollRetry, RollStats
from faceswap.data.split import ClipSplit, plan_split
from faceswap.errors import FaceswapError

REPORT_NAME = "report.json"  # the stage's report, next to the crops (and what marks a folder as this stage's)
REJECT_REASONS = ("unreadable", "no_face", "low_score", "too_small", "bad_landmarks", "split_gap")


class AlignError(FaceswapError, RuntimeError):
    """The align stage cannot run (missing frame index, unusable output folder)."""


# --- one clip at a time ------------------------------------------------------------------------------


@dataclass
class PendingFrame:
    """A frame of the clip being read: its row of the frame index, what the detector found, and its pixels while
    they fit in the cache (``None``: read again from its JPEG when needed)."""

    row: dict
    det: Detections
    image: np.ndarray | None
    unreadable: bool = False


@dataclass
class ClipState:
    """One clip (a video of one identity) while it is read: the frames to detect on, and those detected so far."""

    identity: str
    video: str
    frames: int  # rows of the frame index, split-gap frames included
    split_gap: int  # of those, frames in a split's guard gap (never detected on)
    rows: list[dict]  # the others, in frame order
    split: ClipSplit  # how the clip was split (mode, blocks, gap)
    pending: list[PendingFrame] = field(default_factory=list)
    cached_bytes: int = 0  # pixels of ``pending`` kept in memory


@dataclass(frozen=True)
class ClipStats:
    """One clip's figures in the report."""

    identity: str
    video: str
    frames: int = 0
    faces: int = 0
    mean_residual_px: float | None = None
    jitter_px: float | None = None
    crop_jitter_px: float | None = None
    rejected: dict[str, int] = field(default_factory=dict)  # split_gap first, then reasons as they came
    split: ClipSplit | None = None  # how the clip was split
    train: int = 0  # faces kept per split
    val: int = 0
    test: int = 0

    @property
    def split_dropped_most(self) -> bool:
        """More than half of the clip's frames fell in the split's gaps: at the rate the other frames gave faces,
        the split dropped more of its faces than it kept (the setting, not the video, is the problem)."""
        return self.faces > 0 and 2 * self.rejected.get("split_gap", 0) > self.frames


@dataclass(frozen=True)
class _Face:
    """A face kept by the selection: the frame, which of its detections, and its track segment."""

    frame: PendingFrame
    index: int
    segment: int


@dataclass(frozen=True)
class AlignResult:
    """What :func:`align_faces` found: the faces (one manifest row each, sorted by face id) and the run's figures."""

    detector: str
    detector_weights: str
    size: int
    frames: dict[str, int]  # frames in the index per identity (sorted), split-gap frames included
    detected: int  # frames shown to the detector (those not in a split gap)
    seconds: float  # detection, selection, alignment and crop writes
    rows: tuple[ManifestRow, ...]
    clips: tuple[ClipStats, ...]  # by identity, then video
    rejected: dict[str, int]  # frames without a face, per REJECT_REASONS, over every clip
    roll: RollStats
    unreadable_frames: tuple[str, ...]
    split_problems: tuple[str, ...] = ()  # clips (and identities) the split leaves without train, val or test


def _read_frame(path: Path) -> np.ndarray | None:
    """An extracted frame as RGB uint8, or None if it cannot be decoded (decoded straight to RGB: 1.4 vs 2.1 ms)."""
    import cv2

    return cv2.imread(str(path), cv2.IMREAD_COLOR_RGB)


def _reread_frame(frames_dir: Path, row: dict) -> np.ndarray:
    """A frame decoded before and not kept in memory, read again; a clear error if it went away meanwhile."""
    rgb = _read_frame(frames_dir / row["path"])
    if rgb is None:
        raise AlignError(f"frame {frames_dir / row['path']} was readable and is not any more")
    return rgb


def _fits_template(landmarks: np.ndarray, template: np.ndarray, max_res: float) -> bool:
    """Whether 5 landmarks fit the crop template within ``max_res`` px RMS after the similarity fit."""
    return rms_residual(umeyama(landmarks, template), landmarks, template) <= max_res


def _decoded_batches(frames_dir: Path, clips: list[ClipState], batch_size: int, pool: Executor) -> Iterator[tuple]:
    """(clip, [row dicts], [RGB frames or None]) per batch, then (clip, None, None) at each clip's end."""
    for clip in clips:
        for i in range(0, len(clip.rows), batch_size):
            chunk = clip.rows[i : i + batch_size]
            yield clip, chunk, list(pool.map(_read_frame, [frames_dir / r["path"] for r in chunk]))
        yield clip, None, None


def _prefetched(batches: Iterator[tuple], depth: int = 4) -> Iterator[tuple]:
    """``batches`` produced by a thread ``depth`` ahead of the consumer; its errors re-raised in the consumer.

    Worth it when the detector runs on a GPU. On a CPU it is not: the decoding thread takes a core from the
    detector's threads, which then wait for each other, and the detector loses the decoder's whole CPU time
    (measured: 0.6 s of decoding slowed it by 0.6–0.7 s); decoding between detector calls on every core costs half.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in batches:
                if stop.is_set():
                    return
                q.put(item)
        except BaseException as err:  # surface decoding failures in the consumer
            q.put(err)
        finally:
            q.put(StopIteration)

    threading.Thread(target=produce, daemon=True).start()
    try:
        while (item := q.get()) is not StopIteration:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def _usable(params: AlignParams, size: int):
    """Mask of the faces the selection would keep (score, size and landmark-fit thresholds): what the roll retry
    looks for.

    The fit matters: upright, a 64-px face rolled by −80° scored 0.957 with landmarks that read it as rolled by
    12° (measured, ``bench/roll_coverage.py``); taken as found, its frame was lost to ``bad_landmarks`` (or, with
    a looser fit, cropped 33° off level) where a turned look finds it with good landmarks.
    """
    template, max_res = face_template(size, params.coverage), params.max_residual * size

    def usable(det: Detections) -> np.ndarray:
        side = np.minimum(det.boxes[:, 2] - det.boxes[:, 0], det.boxes[:, 3] - det.boxes[:, 1])
        ok = (det.scores >= params.score_threshold) & (side >= params.min_face_size)
        for j in np.flatnonzero(ok):
            ok[j] = _fits_template(det.landmarks[j], template, max_res)
        return ok

    return usable


def _batches_by_size(chunk: list[dict], images: list) -> Iterator[tuple[list[dict], list]]:
    """Split a batch where frame sizes differ (a detector batch needs one size)."""
    groups: dict[tuple, tuple[list, list]] = {}
    for r, im in zip(chunk, images, strict=True):
        if im is None:
            continue
        g = groups.setdefault(im.shape, ([], []))
        g[0].append(r)
        g[1].append(im)
    yield from groups.values()


def _crop_shift(a: np.ndarray, b: np.ndarray, window: np.ndarray) -> float:
    import cv2

    ga = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gb = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY).astype(np.float32)
    (dx, dy), _ = cv2.phaseCorrelate(ga, gb, window)
    return float(math.hypot(dx, dy))


def _clips(frames, split: SplitParams) -> tuple[list[ClipState], tuple[str, ...]]:
    """Every clip of the frame index (by identity, then video), its split-gap frames set aside; and what the split
    could not give (clips too short for it, named)."""
    plan = plan_split(frames, split)
    frames["split"] = plan.labels if len(frames) else []
    clips = []
    for (ident, video), clip in frames.groupby(["identity", "video"], sort=True):
        gap = clip["split"] == "gap"
        clips.append(ClipState(ident, video, frames=len(clip), split_gap=int(gap.sum()),
                               rows=clip[~gap].to_dict("records"), split=plan.clips[(ident, video)]))
    return clips, plan.problems


def _recover_clip(frames_dir: Path, pending: list[PendingFrame], retry: RollRetry) -> None:
    """The roll retry's turned looks over one clip's faceless frames (in frame order), ``pending`` updated in place.

    Run per clip rather than per batch, so that a run of faceless frames is probed as one whatever the batch
    boundaries. Frames not kept in memory are read again from their JPEG (cheap next to a detector look).
    """
    readable = [f for f in pending if not f.unreadable]

    def frame(i: int) -> np.ndarray:
        f = readable[i]
        return f.image if f.image is not None else _reread_frame(frames_dir, f.row)

    dets = [f.det for f in readable]
    retry.recover(dets, frame)
    for f, d in zip(readable, dets, strict=True):
        f.det = d


@dataclass(frozen=True)
class _Aligner:
    """What aligning any clip of one run needs: where frames are read and crops written, the detector recorded with
    each face, the params, and the pool the crops are warped and written on."""

    frames_dir: Path
    out: Path
    detector: str
    detector_weights: str
    params: AlignParams
    size: int
    pool: Executor
    template: np.ndarray = field(init=False)  # the 5 landmarks' places in the crop
    window: np.ndarray = field(init=False)  # the crop-jitter phase correlation's Hanning window

    def __post_init__(self) -> None:
        import cv2

        object.__setattr__(self, "template", face_template(self.size, self.params.coverage))
        object.__setattr__(self, "window", cv2.createHanningWindow((self.size, self.size), cv2.CV_32F))

    def select(self, clip: ClipState) -> tuple[list[_Face], dict[str, int]]:
        """The faces kept from a clip's frames (in frame order) with their track segments, and the frames rejected
        by reason."""
        p, max_res = self.params, self.params.max_residual * self.size
        rejected = {"split_gap": clip.split_gap}
        kept: list[_Face] = []
        prev_box, prev_t, segment = None, None, -1
        for f in clip.pending:
            t = f.row["timestamp_s"]
            if f.unreadable:
                rejected["unreadable"] = rejected.get("unreadable", 0) + 1
                continue
            if prev_t is not None and t - prev_t > p.max_gap_s:
                prev_box = None
            i, reason, continued = select_face(
                f.det, prev_box, p.select, p.score_threshold, p.min_face_size, p.track_iou
            )
            if i is None:
                rejected[reason] = rejected.get(reason, 0) + 1
                continue
            if not _fits_template(f.det.landmarks[i], self.template, max_res):
                rejected["bad_landmarks"] = rejected.get("bad_landmarks", 0) + 1
                continue
            if not continued and (p.select == "track" or prev_t is None or t - prev_t > p.max_gap_s):
                segment += 1
            prev_box, prev_t = f.det.boxes[i], t
            kept.append(_Face(f, i, segment))
        return kept, rejected

    def crop(self, face: _Face, detected: np.ndarray, smoothed: np.ndarray) -> tuple[ManifestRow, np.ndarray]:
        """Warp and write one face's crop (from the ``smoothed`` landmarks); its manifest row and the crop."""
        import cv2

        row, det, i = face.frame.row, face.frame.det, face.index
        image = face.frame.image if face.frame.image is not None else _reread_frame(self.frames_dir, row)
        m = umeyama(smoothed, self.template)
        crop = warp_face(image, m, self.size)
        aligned = apply_affine(m, detected)
        grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
        face_id = f"{row['identity']}__{row['video']}__{row['frame_index']:06d}"
        rel = f"{row['identity']}/{face_id}.png"
        cv2.imwrite(str(self.out / rel), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        return ManifestRow(
            face_id=face_id, identity=row["identity"], video=row["video"], frame_index=int(row["frame_index"]),
            timestamp_s=float(row["timestamp_s"]), split=row["split"], path=rel, frame_path=row["path"],
            detector=self.detector, detector_weights=self.detector_weights, score=float(det.scores[i]),
            box=det.boxes[i], landmarks_src=detected, landmarks_aligned=aligned, matrix=m,
            alignment_residual_px=float(np.sqrt(((aligned - self.template) ** 2).sum(1).mean())),
            sharpness=float(cv2.Laplacian(grey, cv2.CV_64F).var()), brightness=float(grey.mean()),
            width=self.size, height=self.size, frame_width=int(image.shape[1]), frame_height=int(image.shape[0]),
            segment=int(face.segment),
        ), crop

    def finish(self, clip: ClipState) -> tuple[ClipStats, list[ManifestRow]]:
        """Select, smooth, align and write one clip's faces (the crops on the pool): its figures and its rows."""
        kept, rejected = self.select(clip)
        if not kept:
            return ClipStats(clip.identity, clip.video, clip.frames, rejected=rejected, split=clip.split), []
        raw = np.stack([k.frame.det.landmarks[k.index] for k in kept])
        segments = np.array([k.segment for k in kept])
        p = self.params
        smooth = smooth_landmarks(raw, segments, p.smoothing_sigma) if p.smoothing == "gaussian" else raw
        (self.out / clip.identity).mkdir(parents=True, exist_ok=True)
        done = list(self.pool.map(lambda k: self.crop(kept[k], raw[k], smooth[k]), range(len(kept))))
        rows = [r for r, _ in done]
        moves, shifts = [], []
        for k in range(1, len(rows)):
            if segments[k] == segments[k - 1]:
                moves.append(float(np.linalg.norm(rows[k].landmarks_aligned - rows[k - 1].landmarks_aligned,
                                                  axis=1).mean()))
                shifts.append(_crop_shift(done[k - 1][1], done[k][1], self.window))
        return ClipStats(
            clip.identity, clip.video, clip.frames, faces=len(rows),
            mean_residual_px=round(float(np.mean([r.alignment_residual_px for r in rows])), 4),
            jitter_px=round(float(np.mean(moves)), 4) if moves else None,
            crop_jitter_px=round(float(np.mean(shifts)), 4) if shifts else None,
            rejected=rejected, split=clip.split,
            **{k: sum(r.split == k for r in rows) for k in ("train", "val", "test")},
        ), rows


# --- the run -----------------------------------------------------------------------------------------


def align_faces(
    frames_dir: str | Path,
    out: str | Path,
    detector: Detector,
    params: AlignParams,
    split: SplitParams,
    *,
    size: int,
    progress: bool = True,
    cache_bytes: int = 1 << 30,
) -> AlignResult:
    """Detect, select, align and crop the faces of ``frames_dir`` (written by extract) into ``out``; see the module
    docstring. ``progress``: a bar of frames on stderr (on a terminal); ``cache_bytes``: frame pixels kept in
    memory per clip for the roll retry and the crops (the rest are read again)."""
    import sys
    from collections import Counter

    import pandas as pd
    from tqdm import tqdm

    from faceswap.data.video import INDEX_NAME, prepare_out_dir

    frames_dir, out = Path(frames_dir), Path(out)
    index = frames_dir / INDEX_NAME
    if not index.is_file():
        raise AlignError(f"no frame index at {index}: run `faceswap extract` first")
    frames = pd.read_parquet(index).sort_values(["identity", "video", "frame_index"], kind="stable")
    frames = frames.reset_index(drop=True)
    try:
        prepare_out_dir(out, (MANIFEST_NAME, REPORT_NAME))
    except RuntimeError as err:
        raise AlignError(str(err)) from None
    clips, split_problems = _clips(frames, split)
    for problem in split_problems:
        print(f"warning: {problem}", file=sys.stderr)
    retry = None  # align.roll_retry: upright looks per batch, turned ones per clip
    if params.roll_retry:
        retry = RollRetry(detector, usable=_usable(params, size), every=params.roll_retry_every)
    look = retry.look_upright if retry is not None else detector.detect
    n_detect = sum(len(c.rows) for c in clips)

    pool = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="align-io")  # decoding, warps, PNG writes
    aligner = _Aligner(frames_dir, out, detector.name, detector.weights_digest, params, size, pool)
    batches = _decoded_batches(frames_dir, clips, params.batch_size, pool)
    if str(detector.device) != "cpu":
        batches = _prefetched(batches)
    t0 = time.perf_counter()
    bar = tqdm(total=n_detect, unit="frame", desc=f"align ({detector.name})", file=sys.stderr,
               disable=None if progress else True)
    rows: list[ManifestRow] = []
    stats: list[ClipStats] = []
    unreadable: list[str] = []
    try:
        for clip, chunk, images in batches:
            if chunk is None:
                clip.pending.sort(key=lambda f: f.row["frame_index"])
                if retry is not None:
                    _recover_clip(frames_dir, clip.pending, retry)
                st, clip_rows = aligner.finish(clip)
                stats.append(st)
                rows += clip_rows
                clip.pending = []
                continue
            for r, im in zip(chunk, images, strict=True):
                if im is None:
                    unreadable.append(r["path"])
                    print(f"warning: cannot read frame {frames_dir / r['path']} (skipped)", file=sys.stderr)
                    clip.pending.append(PendingFrame(r, Detections.empty(), None, unreadable=True))
            for chunk_rows, ims in _batches_by_size(chunk, images):
                for r, d, im in zip(chunk_rows, look(ims), ims, strict=True):
                    keep = clip.cached_bytes + im.nbytes <= cache_bytes and len(d) > 0
                    clip.cached_bytes += im.nbytes if keep else 0
                    clip.pending.append(PendingFrame(r, d, im if keep else None))
            bar.update(len(chunk))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    seconds = time.perf_counter() - t0

    totals: Counter[str] = Counter()
    for st in stats:
        totals.update(st.rejected)
    rows.sort(key=lambda r: r.face_id)
    return AlignResult(
        detector=detector.name,
        detector_weights=detector.weights_digest,
        size=size,
        frames={i: int((frames["identity"] == i).sum()) for i in sorted(frames["identity"].unique())},
        detected=n_detect,
        seconds=seconds,
        rows=tuple(rows),
        clips=tuple(stats),
        rejected={k: int(totals.get(k, 0)) for k in REJECT_REASONS},
        roll=replace(retry.stats) if retry is not None else RollStats(),
        unreadable_frames=tuple(unreadable),
        split_problems=split_problems,
    )
