"""Face detection, selection, 5-point alignment and the manifest (``faceswap align``).

The geometry (template, Umeyama, warping, smoothing) lives in :mod:`faceswap.data.geometry`. Per clip (one video of
one identity), in frame order:

1. detect faces in batches (decoded on every core between detector calls; on a GPU a thread decodes ahead);
   once the clip is read, its runs of frames with no usable face upright are probed turned in 45° steps (90°
   next to large faces; ``align.roll_retry``, :class:`~faceswap.data.detect.RollRetry`);
2. reject frames with no face, only low-score faces or only small faces; among the rest keep the face
   that continues the clip's track (highest IoU with the previous face, at least ``track_iou``),
   falling back to the largest (policy ``track``), or simply the largest / the highest score;
3. reject faces whose landmarks do not fit the template (shape misfit above ``max_residual``);
4. smooth the landmarks over time within each track segment (Gaussian, centred: no lag);
5. fit the similarity transform (Umeyama) from the smoothed landmarks to the template, warp the crop,
   and write one manifest row per face.

Two jitter figures are reported per clip: ``jitter_px`` is the frame-to-frame motion of the *detected*
landmarks after alignment (the issue's definition; smoothing raises it, because the detector's noise is no
longer absorbed by the transform), and ``crop_jitter_px`` is the frame-to-frame shift of the crop's
content measured by phase correlation (what a viewer sees shake; smoothing lowers it).
"""

from __future__ import annotations

import json
import math
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from faceswap.config import AlignParams, SplitParams
from faceswap.data.detect import Detections, Detector, RollRetry
from faceswap.data.geometry import (
    apply_affine,
    face_template,
    rms_residual,
    select_face,
    smooth_landmarks,
    umeyama,
    warp_face,
)
from faceswap.data.manifest import MANIFEST_NAME, write_manifest
from faceswap.errors import FaceswapError

REPORT_NAME = "report.json"
REJECT_REASONS = ("unreadable", "no_face", "low_score", "too_small", "bad_landmarks", "split_gap")


class AlignError(FaceswapError, RuntimeError):
    """The align stage cannot run (missing frame index, unusable output folder)."""


# --- split -------------------------------------------------------------------------------------------


def assign_split(frames, split: SplitParams) -> np.ndarray:
    """'train', 'val', 'test' or 'gap' per frame row (frames: identity, video, timestamp_s).

    tail: every clip is cut in time as train | gap | val | gap | test, so held-out frames are never next to
    frames another split saw. clips: whole clips (the last ones test, those before val), when an identity has
    at least three clips; otherwise its clips are cut in time.
    """
    labels = np.full(len(frames), "train", dtype=object)
    ts = frames["timestamp_s"].to_numpy(float)
    for _ident, by_ident in frames.groupby("identity", sort=True):
        videos = sorted(by_ident["video"].unique())
        if split.mode == "clips" and len(videos) >= 3:
            n_test = min(len(videos) - 2, max(1, round(len(videos) * split.test_fraction)))
            n_val = min(len(videos) - 1 - n_test, max(1, round(len(videos) * split.val_fraction)))
            held = {v: "test" for v in videos[len(videos) - n_test:]}
            held |= {v: "val" for v in videos[len(videos) - n_test - n_val:len(videos) - n_test]}
            for pos, v in zip(by_ident.index, by_ident["video"], strict=True):
                labels[frames.index.get_loc(pos)] = held.get(v, "train")
            continue
        for _v, clip in by_ident.groupby("video", sort=True):  # tail (or clips with fewer than three videos)
            locs = np.array([frames.index.get_loc(i) for i in clip.index])
            t = ts[locs]
            start, end = t.min(), t.max()
            test_start = end - split.test_fraction * (end - start)
            val_end = test_start - split.gap_s
            val_start = val_end - split.val_fraction * (end - start)
            labels[locs[t < val_start - split.gap_s]] = "train"
            labels[locs[(t >= val_start - split.gap_s) & (t < val_start)]] = "gap"
            labels[locs[(t >= val_start) & (t < val_end)]] = "val"
            labels[locs[(t >= val_end) & (t < test_start)]] = "gap"
            labels[locs[t >= test_start]] = "test"
    return labels


# --- the stage ---------------------------------------------------------------------------------------


@dataclass
class ClipStats:
    identity: str
    video: str
    frames: int = 0
    faces: int = 0
    mean_residual_px: float | None = None
    jitter_px: float | None = None
    crop_jitter_px: float | None = None
    rejected: dict[str, int] = field(default_factory=dict)


@dataclass
class AlignSummary:
    out: str
    detector: str
    detector_weights: str
    detector_reason: str
    size: int
    frames_read: int
    faces: int
    rejected: dict[str, int]
    identities: dict[str, dict]
    mean_residual_px: float | None
    jitter_px: float | None
    crop_jitter_px: float | None
    seconds: float
    frames_per_second: float
    clips: list[dict]
    roll_retried: int = 0
    roll_turned: int = 0
    roll_recovered: int = 0
    roll_refined: int = 0
    unreadable_frames: list[str] = field(default_factory=list)


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


def _decoded_batches(frames_dir: Path, work: list, batch_size: int, pool: Executor) -> Iterator[tuple]:
    """(clip_key, [row dicts], [RGB frames or None]) per batch, then (clip_key, None, None) at each clip's end."""
    for key, rows in work:
        for i in range(0, len(rows), batch_size):
            chunk = rows[i : i + batch_size]
            yield key, chunk, list(pool.map(_read_frame, [frames_dir / r["path"] for r in chunk]))
        yield key, None, None


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


def align_faces(
    frames_dir: str | Path,
    out: str | Path,
    detector: Detector,
    params: AlignParams,
    split: SplitParams,
    *,
    size: int,
    detector_reason: str = "",
    progress: bool = True,
    cache_bytes: int = 1 << 30,
) -> AlignSummary:
    """Run the align stage over ``frames_dir`` (written by extract) into ``out``; see the module docstring."""
    import sys

    import cv2
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
    frames["split"] = assign_split(frames, split) if len(frames) else []
    template = face_template(size, params.coverage)
    max_res = params.max_residual * size
    if params.roll_retry and not isinstance(detector, RollRetry):
        detector = RollRetry(detector, usable=_usable(params, size), every=params.roll_retry_every)

    work = []
    clip_stats: dict[tuple[str, str], ClipStats] = {}
    rejected: Counter[str] = Counter()
    for (ident, video), clip in frames.groupby(["identity", "video"], sort=True):
        st = clip_stats[(ident, video)] = ClipStats(ident, video, frames=len(clip))
        gap = clip["split"] == "gap"
        st.rejected["split_gap"] = int(gap.sum())
        work.append(((ident, video), clip[~gap].to_dict("records")))
    rejected["split_gap"] = sum(s.rejected["split_gap"] for s in clip_stats.values())
    n_detect = sum(len(rows) for _, rows in work)

    pool = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="align-io")  # decoding, warps, PNG writes
    batches = _decoded_batches(frames_dir, work, params.batch_size, pool)
    if str(detector.device) != "cpu":
        batches = _prefetched(batches)
    t0 = time.perf_counter()
    bar = tqdm(total=n_detect, unit="frame", desc=f"align ({detector.name})", file=sys.stderr, disable=None)
    manifest_rows: list[dict] = []
    window = cv2.createHanningWindow((size, size), cv2.CV_32F)
    unreadable: list[str] = []
    pending: dict[tuple, list] = {}  # clip → [(row, detections, image or None)]
    cached = 0
    try:
        for key, chunk, images in batches:
            if chunk is None:
                if isinstance(detector, RollRetry):
                    _recover_clip(frames_dir, pending.get(key, []), detector)
                manifest_rows += _finish_clip(
                    frames_dir,
                    out,
                    pending.pop(key, []),
                    clip_stats[key],
                    (detector.name, detector.weights_digest),
                    params,
                    template,
                    max_res,
                    size,
                    window,
                    pool,
                )
                cached = 0
                continue
            for r, im in zip(chunk, images, strict=True):
                if im is None:
                    unreadable.append(r["path"])
                    print(f"warning: cannot read frame {frames_dir / r['path']} (skipped)", file=sys.stderr)
                    pending.setdefault(key, []).append(({**r, "unreadable": True}, Detections.empty(), None))
            for rows, ims in _batches_by_size(chunk, images):
                dets = detector.look_upright(ims) if isinstance(detector, RollRetry) else detector.detect(ims)
                for r, d, im in zip(rows, dets, ims, strict=True):
                    keep_img = cached + im.nbytes <= cache_bytes and len(d) > 0
                    cached += im.nbytes if keep_img else 0
                    pending.setdefault(key, []).append((r, d, im if keep_img else None))
            bar.update(len(chunk))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    seconds = time.perf_counter() - t0

    for st in clip_stats.values():
        for reason, n in st.rejected.items():
            if reason != "split_gap":
                rejected[reason] += n
    manifest_rows.sort(key=lambda r: r["face_id"])
    write_manifest(manifest_rows, out / MANIFEST_NAME)

    def mean_of(values):
        vals = [v for v in values if v is not None and not math.isnan(v)]
        return round(float(np.mean(vals)), 4) if vals else None

    idents = {}
    for ident in sorted(frames["identity"].unique()):
        mine = [r for r in manifest_rows if r["identity"] == ident]
        idents[ident] = {
            "frames": int((frames["identity"] == ident).sum()),
            "faces": len(mine),
            "train": sum(r["split"] == "train" for r in mine),
            "val": sum(r["split"] == "val" for r in mine),
            "test": sum(r["split"] == "test" for r in mine),
            "videos_with_faces": len({r["video"] for r in mine}),
        }
    res = [r["alignment_residual_px"] for r in manifest_rows]
    clips = list(clip_stats.values())
    summary = AlignSummary(
        out=str(out),
        detector=detector.name,
        detector_weights=detector.weights_digest,
        detector_reason=detector_reason,
        size=size,
        frames_read=len(frames),
        faces=len(manifest_rows),
        rejected={k: int(rejected.get(k, 0)) for k in REJECT_REASONS},
        identities=idents,
        mean_residual_px=mean_of(res),
        jitter_px=mean_of([c.jitter_px for c in clips]),
        crop_jitter_px=mean_of([c.crop_jitter_px for c in clips]),
        seconds=round(seconds, 3),
        frames_per_second=round(n_detect / seconds, 3) if seconds > 0 else 0.0,
        clips=[asdict(c) for c in clips],
        roll_retried=getattr(detector, "retried", 0),
        roll_turned=getattr(detector, "turned", 0),
        roll_recovered=getattr(detector, "recovered", 0),
        roll_refined=getattr(detector, "refined", 0),
        unreadable_frames=unreadable,
    )
    (out / REPORT_NAME).write_text(json.dumps(asdict(summary), indent=2) + "\n")
    return summary


def _recover_clip(frames_dir: Path, items: list, retry: RollRetry) -> None:
    """The roll retry's turned looks over one clip's faceless frames (in frame order), ``items`` updated in place.

    Run per clip rather than per batch, so that a run of faceless frames is probed as one whatever the batch
    boundaries. Frames not kept in memory are read again from their JPEG (cheap next to a detector look).
    """
    items.sort(key=lambda it: it[0]["frame_index"])
    readable = [k for k, (row, _, _) in enumerate(items) if not row.get("unreadable")]

    def frame(i: int) -> np.ndarray:
        row, _, image = items[readable[i]]
        return image if image is not None else _reread_frame(frames_dir, row)

    dets = [items[k][1] for k in readable]
    retry.recover(dets, frame)
    for k, d in zip(readable, dets, strict=True):
        row, old, image = items[k]
        if d is not old:
            items[k] = (row, d, image)


def _finish_clip(
    frames_dir: Path,
    out: Path,
    items: list,
    st: ClipStats,
    detector_id: tuple[str, str],
    params: AlignParams,
    template: np.ndarray,
    max_res: float,
    size: int,
    window: np.ndarray,
    pool: Executor,
) -> list[dict]:
    """Select, smooth, align and write one clip's faces (the crops on ``pool``); fill its stats; return its rows."""
    import cv2

    items.sort(key=lambda it: it[0]["frame_index"])
    kept = []  # (row, det, index, image, segment)
    prev_box, prev_t, segment = None, None, -1
    for row, det, image in items:
        t = row["timestamp_s"]
        if row.get("unreadable"):
            st.rejected["unreadable"] = st.rejected.get("unreadable", 0) + 1
            continue
        if prev_t is not None and t - prev_t > params.max_gap_s:
            prev_box = None
        i, reason, continued = select_face(
            det, prev_box, params.select, params.score_threshold, params.min_face_size, params.track_iou
        )
        if i is None:
            st.rejected[reason] = st.rejected.get(reason, 0) + 1
            continue
        if not _fits_template(det.landmarks[i], template, max_res):
            st.rejected["bad_landmarks"] = st.rejected.get("bad_landmarks", 0) + 1
            continue
        if not continued and (params.select == "track" or prev_t is None or t - prev_t > params.max_gap_s):
            segment += 1
        prev_box, prev_t = det.boxes[i], t
        kept.append((row, det, i, image, segment))
    if not kept:
        return []
    raw = np.stack([d.landmarks[i] for _, d, i, _, _ in kept])
    segments = np.array([s for *_, s in kept])
    smooth = smooth_landmarks(raw, segments, params.smoothing_sigma) if params.smoothing == "gaussian" else raw

    (out / st.identity).mkdir(parents=True, exist_ok=True)

    def crop_one(k: int) -> tuple[dict, np.ndarray, np.ndarray]:
        row, det, i, image, seg = kept[k]
        if image is None:
            image = _reread_frame(frames_dir, row)
        m = umeyama(smooth[k], template)
        crop = warp_face(image, m, size)
        aligned = apply_affine(m, raw[k])
        grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
        face_id = f"{row['identity']}__{row['video']}__{row['frame_index']:06d}"
        rel = f"{row['identity']}/{face_id}.png"
        cv2.imwrite(str(out / rel), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        manifest_row = {
            "face_id": face_id,
            "identity": row["identity"],
            "video": row["video"],
            "frame_index": int(row["frame_index"]),
            "timestamp_s": float(row["timestamp_s"]),
            "split": row["split"],
            "path": rel,
            "frame_path": row["path"],
            "detector": detector_id[0],
            "detector_weights": detector_id[1],
            "score": float(det.scores[i]),
            "box": det.boxes[i],
            "landmarks_src": raw[k],
            "landmarks_aligned": aligned,
            "matrix": m,
            "alignment_residual_px": float(np.sqrt(((aligned - template) ** 2).sum(1).mean())),
            "sharpness": float(cv2.Laplacian(grey, cv2.CV_64F).var()),
            "brightness": float(grey.mean()),
            "width": size,
            "height": size,
            "frame_width": int(image.shape[1]),
            "frame_height": int(image.shape[0]),
            "segment": int(seg),
        }
        return manifest_row, aligned, crop

    rows, aligned_all, crops = (list(col) for col in zip(*pool.map(crop_one, range(len(kept))), strict=True))
    st.faces = len(rows)
    st.mean_residual_px = round(float(np.mean([r["alignment_residual_px"] for r in rows])), 4)
    moves, shifts = [], []
    for k in range(1, len(rows)):
        if segments[k] == segments[k - 1]:
            moves.append(float(np.linalg.norm(aligned_all[k] - aligned_all[k - 1], axis=1).mean()))
            shifts.append(_crop_shift(crops[k - 1], crops[k], window))
    st.jitter_px = round(float(np.mean(moves)), 4) if moves else None
    st.crop_jitter_px = round(float(np.mean(shifts)), 4) if shifts else None
    return rows


def format_align_summary(s: AlignSummary) -> str:
    lines = [
        f"align → {s.out}: {s.faces} faces from {s.frames_read} frames "
        f"({s.detector} {s.detector_weights[:19]}: {s.detector_reason}; {s.frames_per_second:.1f} frames/s)",
        "  rejected: " + ", ".join(f"{k} {v}" for k, v in s.rejected.items()),
        f"  roll retry: {s.roll_retried} frames without a face upright, {s.roll_turned} looked at again turned, "
        f"{s.roll_recovered} found; {s.roll_refined} rolled faces detected again de-rolled",
    ]
    lines += [f"  unreadable frame: {p}" for p in s.unreadable_frames]
    for ident, d in s.identities.items():
        lines.append(f"  {ident}: {d['faces']} faces (train {d['train']}, val {d['val']}, test {d['test']}) "
                     f"from {d['frames']} frames")
    lines.append(
        f"  mean alignment residual {s.mean_residual_px} px at {s.size}²; jitter (aligned landmarks) "
        f"{s.jitter_px} px, crop jitter (phase correlation) {s.crop_jitter_px} px"
    )
    for c in s.clips:
        rej = ", ".join(f"{k} {v}" for k, v in c["rejected"].items() if v)
        lines.append(
            f"    {c['identity']}/{c['video']}: {c['faces']}/{c['frames']} faces, residual {c['mean_residual_px']},"
            f" jitter {c['jitter_px']}, crop jitter {c['crop_jitter_px']}" + (f"  [{rej}]" if rej else "")
        )
    return "\n".join(lines)
