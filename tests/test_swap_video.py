"""`faceswap swap` on a synthesised clip (a real face filmed from a public-domain still, with frames that hold no
face), on stills, and on corrupt inputs; the model is a tiny registered one loaded by its alias."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from faceswap.cli import app

from ._clips import face_clip
from ._serving import register_tiny, write_params

BLANK_AT, BLANKS = 10, 4


def _read(path) -> tuple[list[np.ndarray], float, tuple[int, int]]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames, fps, size


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from faceswap.data.demo import write_video

    root = tmp_path_factory.mktemp("swap")
    reg = register_tiny(root)
    params = write_params(root / "params.yaml", reg)
    faces, fps, _ = _read(face_clip(root / "face.mp4", "a", seconds=2.0, fps=10))
    import cv2

    rgb = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in faces]
    blank = [np.full_like(rgb[0], 128) for _ in range(BLANKS)]  # no face in these
    clip = write_video(root / "clip.mp4", rgb[:BLANK_AT] + blank + rgb[BLANK_AT:], fps)
    return {**reg, "params": params, "clip": clip}


def _swap(world, *args: str):
    return CliRunner().invoke(app, ["swap", *args, "--params", str(world["params"])])


@pytest.mark.slow
def test_video_keeps_fps_size_and_frames_and_passes_faceless_frames_through(world):
    out = world["root"] / "out" / "swapped.mp4"
    r = _swap(world, str(world["clip"]), "-o", str(out), "--direction", "a2b", "--json", "--no-progress")
    assert r.exit_code == 0, r.output
    res = json.loads(r.output.strip().splitlines()[-1])
    src, fps_in, size_in = _read(world["clip"])
    dst, fps_out, size_out = _read(out)
    assert (len(dst), fps_out, size_out) == (len(src), fps_in, size_in) == (res["frames"], res["fps"], size_in)
    assert len(src) == 20 + BLANKS
    assert len(src) - BLANKS - 3 <= res["faces"] <= len(src) - BLANKS  # MTCNN finds (nearly) every real face
    # mp4v itself shifts colours by a few levels per encode (128 grey → 123/126/124 → 119/124/122), so the
    # reference is the input's frames re-encoded untouched with the same writer: faceless frames must match it.
    import cv2

    from faceswap.data.demo import write_video

    control, _, _ = _read(write_video(world["root"] / "control.mp4",
                                      [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in src], fps_in))
    diff = [np.abs(a.astype(int) - b).mean() for a, b in zip(control, dst, strict=True)]
    blank = diff[BLANK_AT : BLANK_AT + BLANKS]
    faces = diff[:BLANK_AT] + diff[BLANK_AT + BLANKS :]
    assert max(blank) < 0.5, diff  # passed through unchanged
    assert np.median(faces) > max(0.3, 3 * max(blank)), diff  # the face frames were swapped
    assert res["audio"].startswith("none in the input")  # the synthesised clip is silent, and the result says so


@pytest.mark.slow
def test_video_keeps_the_source_soundtrack(world):
    """Issue #21: the swapped video keeps the input's audio, with the system ffmpeg or imageio-ffmpeg's."""
    import subprocess

    from faceswap.swap import audio_streams, find_ffmpeg

    ffmpeg, which = find_ffmpeg()
    assert ffmpeg, which  # imageio-ffmpeg is pinned in requirements/lock.txt: there is always one
    with_sound = world["root"] / "talking.mp4"  # the clip plus a 440 Hz tone as its AAC soundtrack
    subprocess.run([ffmpeg, "-y", "-v", "error", "-i", str(world["clip"]), "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=3", "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac",
                    "-shortest", str(with_sound)], check=True)
    assert len(audio_streams(ffmpeg, with_sound)) == 1
    out = world["root"] / "out" / "talking_a2b.mp4"
    r = _swap(world, str(with_sound), "-o", str(out), "--direction", "a2b", "--json", "--no-progress")
    assert r.exit_code == 0, r.output
    res = json.loads(r.output.strip().splitlines()[-1])
    assert res["audio"] == f"copied (1 stream) with {which}"
    streams = audio_streams(ffmpeg, out)
    assert len(streams) == 1 and "aac" in streams[0]
    dst, _, _ = _read(out)
    assert len(dst) == res["frames"] == 20 + BLANKS  # the video itself is untouched by the mux
    assert not list(out.parent.glob(".*video-only*"))  # the silent intermediate is gone


@pytest.mark.slow
def test_still_image_and_aligned_crop(world, grace_hopper):
    from faceswap.imageio import read_rgb, write_rgb

    src = world["root"] / "hopper.png"
    write_rgb(src, grace_hopper)
    out = world["root"] / "hopper_b2a.png"
    r = _swap(world, str(src), "-o", str(out), "--direction", "b2a")
    assert r.exit_code == 0, r.output
    assert "face score" in r.output
    got = read_rgb(out)
    assert got.shape == grace_hopper.shape and np.abs(got.astype(int) - grace_hopper).mean() > 0.5
    assert np.array_equal(got[-60:, :60], grace_hopper[-60:, :60])
    crop = world["root"] / "faces" / "a" / "0000.png"
    r = _swap(world, str(crop), "-o", str(world["root"] / "crop_a2b.png"), "--aligned")
    assert r.exit_code == 0, r.output
    assert read_rgb(world["root"] / "crop_a2b.png").shape == (64, 64, 3)


@pytest.mark.slow
def test_corrupt_inputs_fail_clearly(world):
    root = world["root"]
    junk = root / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 255, 20_000, dtype=np.uint8).tobytes())
    empty = root / "empty.mp4"
    empty.write_bytes(b"")
    bad_png = root / "bad.png"
    bad_png.write_bytes(b"\x89PNG but not really")
    for src, words in ((junk, "not a video FFmpeg can decode"), (empty, "empty file"), (bad_png, "cannot decode image"),
                       (root / "missing.mp4", "input not found")):
        r = _swap(world, str(src), "-o", str(root / "x.mp4"))
        assert r.exit_code != 0, (src, r.output)
        assert words in r.output, (src, r.output)
    r = _swap(world, str(world["clip"]), "-o", str(root / "x.mp4"), "--direction", "a2c")
    assert r.exit_code == 2 and "'a2c' is not one of" in r.output and "'a2b'" in r.output and "'b2a'" in r.output
    r = _swap(world, str(world["clip"]), "-o", str(root / "x.mp4"), "--model", "models:/nope@champion")
    assert r.exit_code == 1 and "cannot load model" in r.output


def test_smoothing_removes_landmark_jitter():
    from faceswap.data.geometry import smooth_landmarks

    rng = np.random.default_rng(0)
    t = np.arange(40)
    truth = np.stack([np.stack([t * 0.5 + k, t * 0.2 + k], 1) for k in range(5)], 1)  # (T, 5, 2) steady motion
    noisy = truth + rng.normal(0, 1.5, truth.shape)
    smooth = smooth_landmarks(noisy, np.zeros(len(t), int), 1.5)
    jitter = lambda x: np.linalg.norm(np.diff(x - truth, axis=0), axis=2).mean()  # noqa: E731
    assert jitter(smooth) < 0.5 * jitter(noisy)
