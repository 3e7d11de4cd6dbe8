"""Swap faces in a whole video or a still with the registered model (``faceswap swap``).

Video, in two passes over the input (decoding is cheap next to detection):

1. **detect**: frames in batches of ``serve.batch_size`` through the data stage's detector; per frame
   the face that continues the previous frame's track (IoU ≥ ``align.track_iou``), else the largest,
   with the align section's score and size thresholds;
2. **smooth**: landmarks and boxes are Gaussian-smoothed over time (``serve.smoothing_sigma`` frames,
   centred, so no lag) within each run of tracked frames; a run breaks where the track is lost or more
   than ``serve.max_gap_frames`` frames have no face. This is what keeps the pasted face from jittering;
3. **swap**: frames decoded again, faces aligned from the smoothed landmarks, swapped in batches,
   pasted back (:mod:`faceswap.serving.blend`) and written with OpenCV's ``VideoWriter`` (mp4v) at the
   input's frame rate and size. Frames without a face are written as decoded.

Audio: OpenCV writes video only. The input's audio streams are then muxed into the output with ffmpeg (copied
as they are; re-encoded to AAC only where the container cannot hold the codec): the system's ``ffmpeg`` on
``PATH``, else the binary of the pinned PyPI package ``imageio-ffmpeg``. The result says which one, and says so
when the input has no audio or no ffmpeg is found (then the output is silent).
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from faceswap.errors import FaceswapError

if TYPE_CHECKING:
    from faceswap.config import Params
    from faceswap.serving.swapper import Face, Swapper

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class SwapError(FaceswapError, RuntimeError):
    """An input that cannot be converted (missing, corrupt, not a video) or a model that cannot be loaded."""


# --- the model ---------------------------------------------------------------------------------------


def load_swapper(params: Params, model: str | None = None) -> Swapper:
    """A :class:`Swapper` from a checkpoint (``.pt``) or an MLflow model URI (default ``serve.model``)."""
    from faceswap.checkpoint import CheckpointError
    from faceswap.serving.swapper import Swapper

    model = model or params.serve.model
    if model.endswith(".pt") or Path(model).is_file():
        if not Path(model).is_file():
            raise SwapError(f"checkpoint not found: {model}")
        try:
            return Swapper.from_checkpoint(model, params.serve, params.align)
        except CheckpointError as err:
            raise SwapError(str(err)) from None
    import mlflow
    from mlflow.exceptions import MlflowException

    from faceswap.aliases import alias_problem
    from faceswap.tracking import connect, tracking_uri

    uri = tracking_uri(params)
    problem = alias_problem(model, uri)
    if problem:
        raise SwapError(f"cannot load model {model}: {problem}")
    connect(uri)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model))
    except (MlflowException, OSError) as err:
        raise SwapError(f"cannot load model {model} from {uri}: {err}. Register one first (`dvc repro register` or "
                        "`faceswap register`), or pass --model with another URI or a checkpoint .pt") from None
    found = sorted(local.rglob("*.pt"))
    if not found:
        raise SwapError(f"model {model} holds no checkpoint (*.pt) under {local}")
    return Swapper.from_checkpoint(found[0], params.serve, params.align)


# --- stills ------------------------------------------------------------------------------------------


def swap_image(swapper: Swapper, src: str | Path, out: str | Path, direction: str, aligned: bool = False) -> dict:
    """Swap the face in one image (or one aligned crop) and write ``out``; returns what was done."""
    import cv2

    from faceswap.imageio import ImageReadError, read_rgb, write_rgb

    try:
        image = read_rgb(src)
    except ImageReadError as err:
        raise SwapError(str(err)) from None
    if aligned:
        h, w = image.shape[:2]
        if h != w:
            raise SwapError(f"--aligned expects a square crop, {src} is {w}×{h}")
        crop = cv2.resize(image, (swapper.size, swapper.size), interpolation=cv2.INTER_AREA) if h != swapper.size \
            else image
        write_rgb(out, swapper.swap_crops(crop[None], direction)[0])
        return {"input": str(src), "output": str(out), "aligned": True, "face_found": True, "score": None,
                "box": None}
    (result,), (face,) = swapper.swap_frames([image], direction)
    write_rgb(out, result)
    return {"input": str(src), "output": str(out), "aligned": False, "face_found": face is not None,
            "score": None if face is None else round(face.score, 4),
            "box": None if face is None else [round(float(v), 1) for v in face.box]}


# --- video -------------------------------------------------------------------------------------------


@dataclass
class VideoSwapResult:
    input: str
    output: str
    direction: str
    frames: int
    faces: int
    fps: float
    width: int
    height: int
    seconds: float
    frames_per_second: float
    detect_seconds: float
    swap_seconds: float
    smoothing_sigma: float
    audio: str
    warnings: list[str]


def _open(path: Path):
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    if not path.is_file():
        raise SwapError(f"input not found: {path}")
    if path.stat().st_size == 0:
        raise SwapError(f"cannot read {path}: empty file (0 bytes)")
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        raise SwapError(f"cannot open {path}: not a video FFmpeg can decode (corrupt, truncated or not a video)")
    return cap


def _frames(cap, batch: int):
    """Batches of RGB frames until the decoder stops."""
    import cv2

    chunk: list[np.ndarray] = []
    while True:
        try:
            ok, bgr = cap.read()
        except cv2.error:
            ok, bgr = False, None
        if not ok or bgr is None:
            break
        chunk.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if len(chunk) == batch:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _bar(total: int | None, desc: str, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", file=sys.stderr, disable=not progress, dynamic_ncols=True)


def track_faces(swapper: Swapper, cap, total: int | None, progress: bool) -> list[Face | None]:
    """Pass 1: the tracked face of every frame (None where there is none), smoothed over time."""
    from faceswap.data.geometry import smooth_landmarks
    from faceswap.serving.swapper import Face

    p = swapper.serve
    faces: list[Face | None] = []
    segments: list[int] = []
    prev_box, last_seen, segment = None, -(10**9), -1
    with _bar(total, "detect", progress) as bar:
        for chunk in _frames(cap, p.batch_size):
            for det in swapper.detect(chunk):
                i = len(faces)
                if i - last_seen > p.max_gap_frames:
                    prev_box = None
                face, continued = swapper.pick(det, prev_box, "track")
                if face is not None:
                    if not continued:
                        segment += 1
                    prev_box, last_seen = face.box, i
                faces.append(face)
                segments.append(segment if face is not None else -1)
            bar.update(len(chunk))
    idx = [i for i, f in enumerate(faces) if f is not None]
    if idx and p.smoothing_sigma > 0:
        seg = np.array([segments[i] for i in idx])
        lms = smooth_landmarks(np.stack([faces[i].landmarks for i in idx]), seg, p.smoothing_sigma)
        boxes = smooth_landmarks(np.stack([faces[i].box.reshape(2, 2) for i in idx]), seg, p.smoothing_sigma)
        for k, i in enumerate(idx):
            faces[i] = Face(boxes[k].reshape(4), faces[i].score, lms[k])
    return faces


def find_ffmpeg() -> tuple[str | None, str]:
    """(ffmpeg binary, which one): the system's on ``PATH`` first, else the static build the pinned PyPI package
    ``imageio-ffmpeg`` ships (no download at run time: the binary is in its wheel)."""
    found = shutil.which("ffmpeg")
    if found:
        return found, f"system ffmpeg ({found})"
    try:
        import imageio_ffmpeg
    except ImportError:
        return None, "no ffmpeg (none on PATH and imageio-ffmpeg not installed)"
    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as err:
        return None, f"no ffmpeg (imageio-ffmpeg: {err})"
    return exe, f"imageio-ffmpeg {imageio_ffmpeg.__version__}'s ffmpeg"


def audio_streams(ffmpeg: str, path: Path) -> list[str]:
    """The audio streams ffmpeg reports for ``path`` (its ``Stream #0:1…: Audio: aac …`` lines); no ffprobe needed."""
    r = subprocess.run([ffmpeg, "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    return [ln.strip() for ln in r.stderr.splitlines() if ln.strip().startswith("Stream #") and ": Audio:" in ln]


def _copy_audio(video_only: Path, source: Path, out: Path) -> tuple[bool, str]:
    """Mux the source's audio (if any) into the converted video; (written to ``out``?, what happened).

    The streams are copied as they are; a codec the output container cannot hold is re-encoded to AAC."""
    ffmpeg, which = find_ffmpeg()
    if ffmpeg is None:
        return False, f"not copied: {which} (OpenCV writes video only; install ffmpeg to keep the soundtrack)"
    streams = audio_streams(ffmpeg, source)
    if not streams:
        return False, f"none in the input (checked with {which})"
    base = [ffmpeg, "-y", "-v", "error", "-i", str(video_only), "-i", str(source), "-map", "0:v:0", "-map", "1:a",
            "-c:v", "copy"]
    for audio_codec in (["-c:a", "copy"], ["-c:a", "aac", "-b:a", "160k"]):
        # no -shortest: it cuts the video at the audio's end, and an AAC track often ends a frame early
        r = subprocess.run([*base, *audio_codec, str(out)], capture_output=True, text=True)
        if r.returncode == 0:
            how = "copied" if audio_codec[1] == "copy" else "re-encoded to AAC"
            n = len(streams)
            return True, f"{how} ({n} stream{'s' if n != 1 else ''}) with {which}"
    last = r.stderr.strip().splitlines()[-1:] or [str(r.returncode)]
    return False, f"not copied: ffmpeg failed ({last[0]}; {which})"


def swap_video(
    swapper: Swapper, src: str | Path, out: str | Path, direction: str, progress: bool = True
) -> VideoSwapResult:
    """Convert a whole video; see the module docstring. A corrupt or unreadable input raises SwapError."""
    import cv2

    src, out = Path(src), Path(out)
    swapper.target(direction)  # an unknown direction fails before any work
    cap = _open(src)
    fps = cap.get(cv2.CAP_PROP_FPS)
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) or None
    warnings: list[str] = []
    if not (fps and math.isfinite(fps) and fps > 0):
        fps = 25.0
        warnings.append("no frame rate in the container; wrote 25 fps")
    t0 = time.perf_counter()
    try:
        faces = track_faces(swapper, cap, total, progress)
    finally:
        cap.release()
    t_detect = time.perf_counter() - t0
    if not faces:
        raise SwapError(f"cannot read {src}: no frame could be decoded (corrupt or truncated video)")
    if total and len(faces) < total:
        warnings.append(f"decoding stopped at frame {len(faces)} of {total}; converted what could be read")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.video-only{out.suffix or '.mp4'}")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), float(fps), (width, height))
    if not writer.isOpened():
        raise SwapError(f"OpenCV cannot write mp4v video to {out}")
    t1 = time.perf_counter()
    written = 0
    cap = _open(src)
    try:
        with _bar(len(faces), f"swap {direction}", progress) as bar:
            for chunk in _frames(cap, swapper.serve.batch_size):
                chunk = chunk[: max(0, len(faces) - written)]
                if not chunk:
                    break
                done, _ = swapper.swap_frames(chunk, direction, faces[written : written + len(chunk)])
                for f in done:
                    writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
                written += len(chunk)
                bar.update(len(chunk))
    finally:
        cap.release()
        writer.release()
    t_swap = time.perf_counter() - t1
    if written != len(faces):
        warnings.append(f"second decode gave {written} frames, the first {len(faces)}")
    copied, audio = _copy_audio(tmp, src, out)
    if copied:
        tmp.unlink(missing_ok=True)
    else:
        tmp.replace(out)
    seconds = time.perf_counter() - t0
    return VideoSwapResult(
        input=str(src), output=str(out), direction=direction, frames=written,
        faces=sum(f is not None for f in faces), fps=round(float(fps), 3), width=width, height=height,
        seconds=round(seconds, 3), frames_per_second=round(written / seconds, 3) if seconds > 0 else 0.0,
        detect_seconds=round(t_detect, 3), swap_seconds=round(t_swap, 3),
        smoothing_sigma=swapper.serve.smoothing_sigma, audio=audio, warnings=warnings,
    )


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def format_video_result(r: VideoSwapResult) -> str:
    lines = [
        f"swap {r.direction}: {r.input} → {r.output}",
        f"  {r.frames} frames at {r.fps:g} fps, {r.width}×{r.height}; face swapped in {r.faces} "
        f"({r.frames - r.faces} passed through unchanged)",
        f"  {r.seconds:.1f} s ({r.frames_per_second:.1f} frames/s): detect {r.detect_seconds:.1f} s, "
        f"swap + blend + write {r.swap_seconds:.1f} s; smoothing sigma {r.smoothing_sigma:g} frames",
        f"  audio: {r.audio}",
    ]
    lines += [f"  warning: {w}" for w in r.warnings]
    return "\n".join(lines)

