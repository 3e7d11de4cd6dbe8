"""The train | val | test split of the frame index, fitted to each clip (stage ``align``, before detection).

``split.mode`` says how faces are held out:

- ``tail``: every clip is cut in time into ``blocks`` equal spans, each train | gap | val | gap | test (a gap also
  opens every span after the first), so no held-out frame has a neighbour in another split. Frames in a gap are
  never detected (``split_gap`` in the align report).
- ``clips``: whole clips are held out (per identity the last ones test, those before val) when an identity has at
  least three clips; its clips are cut in time otherwise.
- ``auto``: ``clips`` for an identity whose whole-clip holdout leaves training at least as many frames as cutting
  its clips in time would, ``tail`` otherwise (whole clips lose no frame to gaps and are the stronger holdout).

``split.blocks: auto`` fits the cut to each clip, from its duration D (first to last sampled frame), so that short
footage keeps its faces and long footage is still held out at several moments:

    gap    = min(split.gap_s, D / 20)                 a one-block clip's two gaps take at most 10 % of it
    blocks = clamp(floor(D / (15 × gap)), 1, 4)       a block is at least 15 gaps long: its gaps take ≤ 20 % of it

At ``gap_s`` 0.5 s: one block below 15 s, two from 15 s, three from 22.5 s, four from 30 s (the demo's clips of 30.6,
53.4 and 200 s keep the four blocks they were measured with). A whole number of blocks uses ``gap_s`` as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from faceswap.config import SplitParams

AUTO_MAX_BLOCKS = 4  # a long clip held out at four moments (Franck talking, smiling and turning in each split)
AUTO_GAP_SHARE = 1 / 20  # blocks: auto: a gap is at most this share of its clip
AUTO_BLOCK_GAPS = 15  # blocks: auto: a block is at least this many gaps long
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ClipSplit:
    """How one clip was split (the align report prints it per clip)."""

    mode: str  # tail (cut in time) | clips (held out whole)
    seconds: float  # first to last sampled frame
    blocks: int  # tail: spans of time, each train | gap | val | gap | test; clips: 0
    gap_s: float  # tail: the guard gap before each held-out part; clips: 0
    role: str | None = None  # clips: the split the whole clip went to

    def describe(self) -> str:
        if self.mode == "clips":
            return f"whole clip → {self.role}"
        return f"{self.blocks} block{'s' if self.blocks > 1 else ''}, gap {self.gap_s:.2g} s"


@dataclass(frozen=True)
class SplitPlan:
    """The split of a frame index: a label per row, how each clip was split, and what it could not give."""

    labels: np.ndarray  # per frame row: train | val | test | gap
    clips: dict[tuple[str, str], ClipSplit]  # (identity, video) → its split
    problems: tuple[str, ...]  # clips and identities left without a train, val or test frame, each named


def clip_cut(seconds: float, split: SplitParams) -> tuple[int, float]:
    """(blocks, gap_s) of a clip this long cut in time: ``split.blocks`` and ``split.gap_s`` when blocks is a number,
    else the rule of the module docstring."""
    if split.blocks != "auto":
        return int(split.blocks), split.gap_s
    if seconds <= 0:
        return 1, 0.0
    gap = min(split.gap_s, seconds * AUTO_GAP_SHARE)
    if gap <= 0:
        return AUTO_MAX_BLOCKS, 0.0
    return int(min(AUTO_MAX_BLOCKS, max(1, math.floor(seconds / (AUTO_BLOCK_GAPS * gap) + 1e-9)))), gap


def clip_guard_s(seconds: float, split: SplitParams) -> float:
    """The gap the split keeps between a clip's train frames and its held-out ones (what validation checks)."""
    return clip_cut(seconds, split)[1]


def _cut_in_time(t: np.ndarray, blocks: int, gap: float, split: SplitParams) -> np.ndarray:
    """Labels of one clip's frames (times ``t``) as ``blocks`` equal spans of time, each train | gap | val | gap |
    test; a span after the first starts with a gap too, so no training frame is next to the previous span's test
    frames. One block: the clip's tail is held out; several: a long clip is held out at several moments."""
    labels = np.full(len(t), "train", dtype=object)
    start, end = t.min(), t.max()
    edges = np.linspace(start, end, blocks + 1)
    for k in range(blocks):
        lo, hi = edges[k], edges[k + 1]
        inside = (t >= lo) & ((t < hi) if k < blocks - 1 else (t <= hi))
        span = hi - lo
        test_start = hi - split.test_fraction * span
        val_end = test_start - gap
        val_start = val_end - split.val_fraction * span
        labels[inside & (t < val_start - gap)] = "train"
        labels[inside & (t >= val_start - gap) & (t < val_start)] = "gap"
        labels[inside & (t >= val_start) & (t < val_end)] = "val"
        labels[inside & (t >= val_end) & (t < test_start)] = "gap"
        labels[inside & (t >= test_start)] = "test"
        if k:
            labels[inside & (t < lo + gap)] = "gap"
    return labels


def _whole_clips(videos: list[str], split: SplitParams) -> dict[str, str] | None:
    """Each clip's split when whole clips are held out (the last ones test, those before val); None below three."""
    if len(videos) < 3:
        return None
    n_test = min(len(videos) - 2, max(1, round(len(videos) * split.test_fraction)))
    n_val = min(len(videos) - 1 - n_test, max(1, round(len(videos) * split.val_fraction)))
    roles = dict.fromkeys(videos, "train")
    roles |= dict.fromkeys(videos[len(videos) - n_test:], "test")
    roles |= dict.fromkeys(videos[len(videos) - n_test - n_val:len(videos) - n_test], "val")
    return roles


def _settings(split: SplitParams, blocks: int, gap: float) -> str:
    chosen = f"auto → {blocks}" if split.blocks == "auto" else str(blocks)
    return (f"split.blocks {chosen}, split.gap_s {gap:.2g} s, split.val_fraction {split.val_fraction:g}, "
            f"split.test_fraction {split.test_fraction:g}")


def plan_split(frames, split: SplitParams) -> SplitPlan:
    """Split a frame index (columns identity, video, timestamp_s; any row order) as ``split`` says: see the module
    docstring."""
    labels = np.full(len(frames), "train", dtype=object)
    ident_col = frames["identity"].to_numpy(object)
    video_col = frames["video"].to_numpy(object)
    ts = frames["timestamp_s"].to_numpy(float)
    clips: dict[tuple[str, str], ClipSplit] = {}
    problems: list[str] = []
    for ident in sorted(set(ident_col)):
        mine = ident_col == ident
        videos = sorted(set(video_col[mine]))
        locs = {v: np.flatnonzero(mine & (video_col == v)) for v in videos}
        seconds = {v: float(ts[locs[v]].max() - ts[locs[v]].min()) for v in videos}
        cuts = {v: clip_cut(seconds[v], split) for v in videos}
        tail = {v: _cut_in_time(ts[locs[v]], *cuts[v], split) for v in videos}
        roles = _whole_clips(videos, split) if split.mode != "tail" else None
        if roles is not None and split.mode == "auto":
            train_tail = sum(int((tail[v] == "train").sum()) for v in videos)
            train_whole = sum(len(locs[v]) for v in videos if roles[v] == "train")
            roles = roles if train_whole >= train_tail else None
        for v in videos:
            if roles is not None:
                labels[locs[v]] = roles[v]
                clips[(ident, v)] = ClipSplit("clips", seconds[v], 0, 0.0, roles[v])
                continue
            labels[locs[v]] = tail[v]
            clips[(ident, v)] = ClipSplit("tail", seconds[v], *cuts[v])
            missing = [s for s in SPLITS if not (tail[v] == s).any()]
            if missing:
                problems.append(
                    f"clip {ident}/{v} ({len(locs[v])} sampled frames over {seconds[v]:.2f} s) is too short for the "
                    f"split ({_settings(split, *cuts[v])}): no {' and no '.join(missing)} frame in it; "
                    + ("split.blocks: auto fits the split to the clip; else " if split.blocks != "auto" else "")
                    + "bring a longer clip of this person, or sample more of its frames (extract.every)")
        have = set(labels[mine])
        lacking = [s for s in SPLITS if s not in have]
        if lacking:
            problems.append(f"identity {ident} has no {' and no '.join(lacking)} frame in any of its {len(videos)} "
                            f"clip(s): see the clips named above (split.mode {split.mode})")
    return SplitPlan(labels, clips, tuple(problems))


def assign_split(frames, split: SplitParams) -> np.ndarray:
    """'train', 'val', 'test' or 'gap' per frame row (frames: identity, video, timestamp_s)."""
    return plan_split(frames, split).labels
