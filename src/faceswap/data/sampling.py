"""``extract.every: auto``: how densely an identity's footage is sampled, from how many frames it has.

    every = clamp(ceil(frames / extract.target_frames), 1, 4)     frames: all of the identity's videos together

Footage of up to ``target_frames`` frames (500: 20 s at 25 fps) keeps every frame, so a phone clip of a few seconds
keeps all its faces; longer footage is thinned towards ``target_frames``, never sparser than every 4th frame (1/6 s
at 24–25 fps: the landmark smoothing counts in sampled frames and the tracking breaks after ``align.max_gap_s``).
The demo's talking heads (Franck's 4,800 frames, the webcam man's 1,337 + 765) resolve to 4, as measured.
``extract.max_frames`` still caps any video.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from faceswap.config import ExtractParams

AUTO_MAX_EVERY = 4  # the sparsest sampling auto chooses


def auto_every(frames: int, target_frames: int) -> int:
    """The step that samples ``frames`` frames towards ``target_frames`` (module docstring)."""
    return max(1, min(AUTO_MAX_EVERY, math.ceil(frames / target_frames)))


def resolve_every(extract: ExtractParams, frames: Mapping[str, int]) -> dict[str, int]:
    """Each identity's sampling step: ``extract.every`` as it is, or auto from its frame count."""
    if extract.every != "auto":
        return dict.fromkeys(frames, int(extract.every))
    return {ident: auto_every(n, extract.target_frames) for ident, n in frames.items()}


def footage_frames(raw_dir: str | Path, identities: tuple[str, ...]) -> dict[str, int]:
    """Frames of every video of each identity under ``raw_dir`` (a video that cannot be read counts 0)."""
    from faceswap.data.video import count_frames, find_videos

    return {ident: sum(count_frames(v) for v in find_videos(Path(raw_dir), ident)[0]) for ident in identities}
