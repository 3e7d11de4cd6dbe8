"""Demo clips synthesised from two public-domain face photographs (``faceswap demo-data``).

No face *video* ships with any package we can install offline, so the demo (and the tests) film the
stills with a virtual camera: pan, zoom, roll of up to ±20°, a little perspective, lighting and colour
drift, motion blur along the camera's motion and sensor noise. Two kinds of trouble are staged on
purpose so that detection and validation have real work to reject: in the second clip of every
identity the face leaves the frame for a while, in the third it is smeared by heavy motion blur.

Identity ``a`` is ``skimage.data.astronaut()`` (Eileen Collins, NASA, public domain) and identity
``b`` is matplotlib's ``grace_hopper.jpg`` (US Navy, public domain). Output is deterministic for a
seed: the same frames are encoded the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# 5 landmarks (left eye, right eye, nose, mouth left, mouth right) in each still, measured once with MTCNN.
_ASTRONAUT_LANDMARKS = ((205.0, 101.7), (246.8, 103.7), (224.7, 129.0), (201.7, 139.2), (245.3, 141.9))
_HOPPER_LANDMARKS = ((221.7, 192.2), (309.8, 186.1), (269.4, 239.2), (232.7, 279.6), (306.6, 275.9))


@dataclass(frozen=True)
class FaceStill:
    """A photograph of one face and where its 5 landmarks are."""

    name: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    landmarks: np.ndarray  # (5, 2) x, y

    @property
    def centre(self) -> np.ndarray:
        return self.landmarks.mean(axis=0)

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))


def astronaut() -> FaceStill:
    import skimage.data

    return FaceStill("astronaut", skimage.data.astronaut(), np.array(_ASTRONAUT_LANDMARKS))


def grace_hopper() -> FaceStill:
    from matplotlib import cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f, Image.open(f) as im:
        image = np.asarray(im.convert("RGB"))
    return FaceStill("grace_hopper", image, np.array(_HOPPER_LANDMARKS))


def demo_stills() -> list[FaceStill]:
    """The stills for the demo's identities, in order (first identity: astronaut, second: Grace Hopper)."""
    return [astronaut(), grace_hopper()]


# --- camera path -----------------------------------------------------------------------------------


def _wave(rng: np.random.Generator, t: np.ndarray, n: int = 3, lo: float = 0.08, hi: float = 0.5) -> np.ndarray:
    """A smooth random signal in [-1, 1]: a few sinusoids with random frequency (Hz) and phase."""
    freqs = rng.uniform(lo, hi, n)
    phases = rng.uniform(0, 2 * math.pi, n)
    amps = rng.uniform(0.5, 1.0, n)
    s = (amps[:, None] * np.sin(2 * math.pi * freqs[:, None] * t[None] + phases[:, None])).sum(0)
    return s / amps.sum()


def _bump(t: np.ndarray, start: float, length: float) -> np.ndarray:
    """0 outside [start, start + length], rising smoothly to 1 in the middle (raised cosine)."""
    x = np.clip((t - start) / length, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(2 * math.pi * x)


@dataclass(frozen=True)
class Shot:
    """Everything that varies over one clip, sampled per frame."""

    homographies: np.ndarray  # (T, 3, 3) still → frame
    blur: np.ndarray  # (T, 2) motion-blur vector in frame pixels
    gain: np.ndarray  # (T, 3) per-channel gain (lighting and colour)
    gamma: np.ndarray  # (T,)
    noise_sigma: float


def plan_shot(
    still: FaceStill, n_frames: int, fps: int, width: int, height: int, rng: np.random.Generator, event: str
) -> Shot:
    """Camera path for one clip; ``event`` is "none", "leave" (face exits the frame) or "blur"."""
    t = np.arange(n_frames) / fps
    duration = n_frames / fps
    unit = width / 640.0
    cx = width / 2 + 0.18 * width * _wave(rng, t)
    cy = height / 2 + 0.12 * height * _wave(rng, t)
    eye = unit * rng.uniform(48, 62) * np.exp(0.3 * _wave(rng, t))  # eye distance in frame pixels
    roll = np.deg2rad(20.0) * _wave(rng, t, lo=0.15, hi=0.6)
    persp = 2.5e-4 / unit * np.stack([_wave(rng, t), _wave(rng, t)], 1)
    blur_extra = np.zeros(n_frames)
    if event == "leave":  # slide out sideways past the edge and come back
        start = rng.uniform(0.3, 0.5) * duration
        side = rng.choice([-1.0, 1.0])
        cx = cx + side * 0.75 * width * _bump(t, start, min(1.4, 0.35 * duration))
    elif event == "blur":
        start = rng.uniform(0.3, 0.5) * duration
        blur_extra = 0.12 * width * _bump(t, start, min(1.0, 0.3 * duration))

    homographies = np.empty((n_frames, 3, 3))
    c0 = still.centre
    for i in range(n_frames):
        s = eye[i] / still.eye_distance
        cos, sin = s * math.cos(roll[i]), s * math.sin(roll[i])
        a = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
        a[:2, 2] = np.array([cx[i], cy[i]]) - a[:2, :2] @ c0
        # small perspective about the frame centre
        to_c = np.array([[1, 0, -width / 2], [0, 1, -height / 2], [0, 0, 1.0]])
        p = np.eye(3)
        p[2, :2] = persp[i]
        homographies[i] = np.linalg.inv(to_c) @ p @ to_c @ a

    velocity = np.gradient(np.stack([cx, cy], 1), axis=0)  # pixels per frame
    speed = np.linalg.norm(velocity, axis=1, keepdims=True)
    direction = np.where(speed > 1e-6, velocity / np.maximum(speed, 1e-6), np.array([1.0, 0.0]))
    blur = velocity * 0.5 + direction * blur_extra[:, None]  # half-frame exposure plus the staged blur
    gain = (1.0 + 0.25 * _wave(rng, t))[:, None] * (1.0 + 0.08 * np.stack([_wave(rng, t) for _ in range(3)], 1))
    gamma = 1.0 + 0.2 * _wave(rng, t)
    return Shot(homographies, blur, gain, gamma, float(rng.uniform(2.0, 4.0)))


# --- rendering -------------------------------------------------------------------------------------


def _canvas(still: FaceStill) -> tuple[np.ndarray, np.ndarray]:
    """The still on a wide, heavily blurred surround (no second detectable face), and its offset."""
    import cv2

    h, w = still.image.shape[:2]
    pad = max(h, w)
    bg = cv2.copyMakeBorder(still.image, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    bg = cv2.GaussianBlur(bg, (0, 0), 40)
    mask = np.zeros(bg.shape[:2], np.float32)
    mask[pad : pad + h, pad : pad + w] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), 12)[..., None]
    fg = np.zeros_like(bg)
    fg[pad : pad + h, pad : pad + w] = still.image
    canvas = (mask * fg + (1 - mask) * bg).astype(np.uint8)
    offset = np.array([[1, 0, -pad], [0, 1, -pad], [0, 0, 1.0]])  # canvas → still coordinates
    return canvas, offset


_CANVASES: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _canvas_cached(still: FaceStill) -> tuple[np.ndarray, np.ndarray]:
    key = f"{still.name}:{still.image.shape}:{hash(still.image[::7, ::7].tobytes())}"
    if key not in _CANVASES:
        _CANVASES[key] = _canvas(still)
    return _CANVASES[key]


def _motion_kernel(vec: np.ndarray) -> np.ndarray | None:
    import cv2

    length = float(np.linalg.norm(vec))
    if length < 1.5:
        return None
    k = math.ceil(length) | 1
    kernel = np.zeros((k, k), np.float32)
    c = k // 2
    d = vec / length * (length / 2)
    cv2.line(kernel, (round(c - d[0]), round(c - d[1])), (round(c + d[0]), round(c + d[1])), 1.0, 1, cv2.LINE_AA)
    return kernel / kernel.sum()


def render_frames(still: FaceStill, shot: Shot, width: int, height: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Render a shot as RGB uint8 frames."""
    import cv2

    canvas, offset = _canvas_cached(still)
    lut_x = np.arange(256, dtype=np.float32) / 255.0
    # sensor noise: a small bank of noise fields, cut at a random offset per frame (cheap, still random)
    bank = np.float32(shot.noise_sigma) * rng.standard_normal((4, height + 32, width + 32, 3), dtype=np.float32)
    frames = []
    for i in range(len(shot.homographies)):
        h = shot.homographies[i] @ offset
        frame = cv2.warpPerspective(canvas, h, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        kernel = _motion_kernel(shot.blur[i])
        if kernel is not None:
            frame = cv2.filter2D(frame, -1, kernel, borderType=cv2.BORDER_REFLECT)
        gain = shot.gain[i][None, :].astype(np.float32)
        lut = np.clip(255.0 * lut_x[:, None] ** shot.gamma[i] * gain, 0, 255).astype(np.uint8)
        frame = cv2.LUT(frame, lut.reshape(256, 1, 3))  # lighting: gamma and per-channel gain
        dy, dx = rng.integers(0, 33, 2)
        noise = np.ascontiguousarray(bank[i % len(bank), dy : dy + height, dx : dx + width])
        frame = cv2.add(frame, noise, dtype=cv2.CV_8U)  # sensor noise, saturated to 0..255
        frames.append(frame)
    return frames


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: float, codec: str = "mp4v") -> Path:
    """Write RGB frames with OpenCV's VideoWriter; raise if the codec or path is unusable."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*codec), float(fps), (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write {codec!r} video to {path}")
    try:
        for f in frames:
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


EVENTS = ("none", "leave", "blur")


def make_clip(
    still: FaceStill,
    path: str | Path,
    *,
    seconds: float,
    fps: int,
    width: int,
    height: int,
    seed: int | Sequence[int],
    event: str = "none",
) -> Path:
    """Film one still into one clip; deterministic for ``seed``."""
    if event not in EVENTS:
        raise ValueError(f"event must be one of {EVENTS}, got {event!r}")
    rng = np.random.default_rng(seed)
    n = max(2, round(seconds * fps))
    shot = plan_shot(still, n, fps, width, height, rng, event)
    return write_video(path, render_frames(still, shot, width, height, rng), fps)


def make_demo(
    out: str | Path,
    *,
    identities: Sequence[str] = ("a", "b"),
    clips: int = 3,
    seconds: float = 5.0,
    fps: int = 25,
    width: int = 640,
    height: int = 480,
    seed: int = 0,
    workers: int | None = None,
) -> list[Path]:
    """Write ``out/<identity>/clipNN.mp4`` for each identity; return the paths written."""
    import os

    if len(identities) > 2:
        raise ValueError(f"the demo has two faces, for two identities; got {list(identities)}")
    out = Path(out)
    stills = demo_stills()
    jobs = []
    for i, ident in enumerate(identities):
        for k in range(clips):
            jobs.append((stills[i], out / ident / f"clip{k:02d}.mp4", (seed, i, k), EVENTS[k % len(EVENTS)]))

    def run(job):
        still, path, s, event = job
        return make_clip(still, path, seconds=seconds, fps=fps, width=width, height=height, seed=s, event=event)

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(run, jobs))
