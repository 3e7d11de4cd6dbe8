"""Per-row measurements the expectations read: what cannot be read off the manifest's columns directly.

Everything here is plain numpy/pandas/OpenCV (no Great Expectations), so it is quick to test and reuse.
:func:`measure` adds these columns to a copy of the manifest (``row`` is the row's position, the key
that ties Great Expectations' unexpected rows back to faces):

============================  ===================================================================
``file_exists``               the crop at ``path`` exists
``image_shape``               ``"<w>x<h>x<c>"`` of the decoded crop, ``"unreadable"``; null if missing
``crop_sharpness``            variance of the Laplacian of the grey crop, measured on the file
``crop_brightness``           mean grey level of the crop, measured on the file
``relative_sharpness``        ``crop_sharpness`` / median ``crop_sharpness`` of the identity
``face_size_px``              shortest side of the detector's box, frame pixels
``landmark_max_dev_px``       largest distance of an aligned landmark from its template point
``out_of_frame``              share of the crop mapped from outside its frame (``matrix``, frame size;
                              those pixels repeat the frame's edge)
``clip_jitter_px``            median frame-to-frame motion of the aligned landmarks in the clip
``split_gap_s``               train rows: time to the nearest val or test frame of the same clip
``split_margin_s``            train rows: ``split_gap_s`` less the clip's guard (``guard_s`` of the clip's length)
``duplicate_diff``            mean |grey| difference of 16×16 thumbnails to the clip's last non-duplicate
``array_shapes``              ``"ok"`` or the array columns whose shape is wrong
============================  ===================================================================

The sharpness and brightness are measured on the crop files (not copied from the manifest) so that the
gate checks what training will read, even if a crop was replaced after ``align``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ARRAY_SHAPES = {"box": (4,), "landmarks_src": (5, 2), "landmarks_aligned": (5, 2), "matrix": (2, 3)}
THUMB = 16


def _as_array(value, shape: tuple[int, ...]) -> np.ndarray | None:
    """A nested-list cell as a float array of ``shape``, or None when it is null or shaped otherwise."""
    if value is None:
        return None
    try:
        arr = np.asarray(np.stack(value).tolist() if len(shape) > 1 else list(value), float)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == shape else None


def _read_crop(path: Path | None) -> tuple[bool, str | None, float | None, float | None, np.ndarray | None]:
    """(exists, shape string, sharpness, brightness, 16×16 grey thumbnail) of one crop file."""
    import cv2

    if path is None or not path.is_file():
        return False, None, None, None, None
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        return True, "unreadable", None, None, None
    channels = 1 if img.ndim == 2 else img.shape[2]
    shape = f"{img.shape[1]}x{img.shape[0]}x{channels}"
    if channels == 3:
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)  # the same grey as align's (from RGB)
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    elif channels == 1:
        grey = img
    else:
        grey = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2GRAY)
    if grey.dtype != np.uint8:
        grey = cv2.convertScaleAbs(grey, alpha=255.0 / max(float(grey.max()), 1.0))
    sharpness = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    thumb = cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)
    return True, shape, sharpness, float(grey.mean()), thumb


def _out_of_frame(df, matrices: list[np.ndarray | None]) -> list[float]:
    """:func:`faceswap.data.geometry.out_of_frame_share` per row; NaN where the matrix or a size is missing."""
    from faceswap.data.geometry import out_of_frame_share

    cols = [df[c].to_numpy() if c in df.columns else np.full(len(df), np.nan) for c in
            ("frame_width", "frame_height", "width")]
    out = []
    for m, fw, fh, size in zip(matrices, *cols, strict=True):
        sizes_ok = all(isinstance(x, (int, float, np.number)) and math.isfinite(x) and x > 0 for x in (fw, fh, size))
        out.append(out_of_frame_share(m, int(fw), int(fh), int(size)) if m is not None and sizes_ok else math.nan)
    return out


def _clip_order(df) -> list[np.ndarray]:
    """Row positions of each clip (identity, video), in frame order."""
    if not {"identity", "video", "frame_index"} <= set(df.columns):
        return []
    keyed = df.reset_index(drop=True)
    keyed = keyed.assign(_pos=np.arange(len(keyed)))
    return [
        clip.sort_values("frame_index", kind="stable")["_pos"].to_numpy()
        for _, clip in keyed.groupby(["identity", "video"], sort=True, dropna=False)
    ]


def measure(df, faces_dir: str | Path, *, template: np.ndarray, duplicate_max_diff: float, workers: int = 4,
            guard_s: Callable[[float], float] = lambda seconds: 0.0):
    """A copy of the manifest ``df`` with the derived columns above (the manifest's own columns untouched).

    ``guard_s``: the least time a clip this long (its first to last face) keeps between its train frames and its
    held-out ones; the split fits its gap to the clip's frames, which span at least as long as its faces, so the
    guard of the faces' span is never more than the gap the split kept."""
    import pandas as pd

    faces_dir = Path(faces_dir)
    out = df.reset_index(drop=True).copy()
    n = len(out)
    out.insert(0, "row", np.arange(n, dtype=np.int64))

    # the crop files
    paths = [faces_dir / p if isinstance(p, str) and p else None for p in out.get("path", [None] * n)]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        crops = list(pool.map(_read_crop, paths))
    out["file_exists"] = [c[0] for c in crops]
    out["image_shape"] = pd.Series([c[1] for c in crops], dtype=object)
    out["crop_sharpness"] = pd.Series([c[2] for c in crops], dtype=float)
    out["crop_brightness"] = pd.Series([c[3] for c in crops], dtype=float)
    thumbs = [c[4] for c in crops]

    # sharpness relative to the identity's median (textures differ between people and cameras)
    if "identity" in out.columns:
        median = out.groupby("identity")["crop_sharpness"].transform("median")
        out["relative_sharpness"] = out["crop_sharpness"] / median.where(median > 0)
    else:
        out["relative_sharpness"] = np.nan

    # arrays: shapes, face size, landmark deviation from the template
    arrays = {c: [_as_array(v, s) for v in out[c]] if c in out.columns else [None] * n for c, s in ARRAY_SHAPES.items()}
    out["array_shapes"] = [
        ",".join(c for c in ARRAY_SHAPES if c in out.columns and arrays[c][i] is None) or "ok" for i in range(n)
    ]
    out["face_size_px"] = [
        float(min(b[2] - b[0], b[3] - b[1])) if b is not None else np.nan for b in arrays["box"]
    ]
    out["out_of_frame"] = _out_of_frame(out, arrays["matrix"])
    out["landmark_max_dev_px"] = [
        float(np.linalg.norm(a - template, axis=1).max()) if a is not None else np.nan
        for a in arrays["landmarks_aligned"]
    ]

    # per clip, in frame order: jitter, split leak, near-duplicates
    jitter = np.full(n, np.nan)
    gap = np.full(n, np.nan)
    margin = np.full(n, np.nan)
    dup = np.full(n, np.nan)
    seg = out["segment"].to_numpy() if "segment" in out.columns else np.zeros(n)
    ts = out["timestamp_s"].to_numpy(float) if "timestamp_s" in out.columns else np.full(n, np.nan)
    split = out["split"].to_numpy(object) if "split" in out.columns else np.full(n, None, object)
    for pos in _clip_order(out):
        lm = [arrays["landmarks_aligned"][i] for i in pos]
        moves = [
            float(np.linalg.norm(lm[k] - lm[k - 1], axis=1).mean())
            for k in range(1, len(pos))
            if seg[pos[k]] == seg[pos[k - 1]] and lm[k] is not None and lm[k - 1] is not None
        ]
        if moves:
            jitter[pos] = float(np.median(moves))
        val_t = ts[pos][np.isin(split[pos], ["val", "test"])]
        if len(val_t):
            guard = guard_s(float(np.nanmax(ts[pos]) - np.nanmin(ts[pos])))
            for i in pos[split[pos] == "train"]:
                gap[i] = float(np.abs(val_t - ts[i]).min())
                margin[i] = round(gap[i] - guard, 6)
        last = None  # the clip's last crop that was not itself a duplicate
        for i in pos:
            if thumbs[i] is None:
                continue
            if last is not None and thumbs[i].shape == last.shape:
                dup[i] = float(np.abs(thumbs[i] - last).mean())
            if math.isnan(dup[i]) or dup[i] > duplicate_max_diff:
                last = thumbs[i]
    out["clip_jitter_px"] = jitter
    out["split_gap_s"] = gap
    out["split_margin_s"] = margin
    out["duplicate_diff"] = dup
    return out

