"""Small real clips for the data-stage tests, filmed from the public-domain stills with the demo's camera."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceswap.data.demo import FaceStill, astronaut, grace_hopper, make_clip, write_video


def small_still(still: FaceStill, scale: float) -> FaceStill:
    """The still resized by ``scale`` (smaller frames keep MTCNN fast in tests)."""
    import cv2

    h, w = still.image.shape[:2]
    image = cv2.resize(still.image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return FaceStill(still.name, image, still.landmarks * scale)


def face_clip(path: Path, who: str = "a", seconds: float = 2.0, fps: int = 10, seed: int = 0) -> Path:
    """A 320×240 clip of one face with the demo's camera motion and lighting (no staged trouble)."""
    still = astronaut() if who == "a" else grace_hopper()
    return make_clip(still, path, seconds=seconds, fps=fps, width=320, height=240, seed=seed)


def paste(frame: np.ndarray, image: np.ndarray, x: int, y: int) -> None:
    h, w = image.shape[:2]
    frame[y : y + h, x : x + w] = image


def no_face_clip(path: Path, n: int = 8) -> Path:
    """A clip of textured noise and a blurred background: no face in it."""
    import cv2

    rng = np.random.default_rng(1)
    base = cv2.GaussianBlur(astronaut().image, (0, 0), 25)
    frames = []
    for _ in range(n):
        f = cv2.resize(base, (320, 240)).astype(np.int16) + rng.integers(-10, 10, (240, 320, 3))
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    return write_video(path, frames, 10)


def two_face_clip(path: Path, n: int = 10, second_from: int = 4) -> Path:
    """The astronaut on the left throughout; a larger Grace Hopper joins on the right from ``second_from``."""
    a = small_still(astronaut(), 0.5).image[:160, 40:220]  # face ~55 px
    b = small_still(grace_hopper(), 0.5).image[40:250, :]  # face ~90 px
    frames = []
    for i in range(n):
        f = np.full((270, 480, 3), 128, np.uint8)
        paste(f, a, 10 + i, 40)
        if i >= second_from:
            paste(f, b, 480 - b.shape[1] - 5, 30)
        frames.append(f)
    return write_video(path, frames, 10)
