"""Detection, selection and 5-point alignment on real faces; the manifest's schema; RetinaFace's error path."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from faceswap.cli import app
from faceswap.config import AlignParams, SplitParams
from faceswap.data.align import align_faces
from faceswap.data.detect import (
    DetectorError,
    MtcnnDetector,
    RetinaFaceDetector,
    RetinaFaceWeightsError,
    create_detector,
    find_retinaface_weights,
)
from faceswap.data.geometry import apply_affine, face_template, rms_residual, smooth_landmarks, umeyama, warp_face
from faceswap.data.manifest import MANIFEST_COLUMNS, check_manifest, column_array, manifest_schema, write_manifest
from faceswap.data.split import assign_split
from faceswap.data.video import extract_frames
from faceswap.stages import align
from tests._clips import face_clip, no_face_clip, two_face_clip
from tests.conftest import REPO

SIZE = 64


@pytest.fixture(scope="module")
def mtcnn():
    return MtcnnDetector("cpu", min_face_size=20)


# --- geometry ----------------------------------------------------------------------------------------


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    a = 1.7 * np.array([[math.cos(0.4), -math.sin(0.4)], [math.sin(0.4), math.cos(0.4)]])
    dst = src @ a.T + [12.0, -3.0]
    m = umeyama(src, dst)
    np.testing.assert_allclose(m[:, :2], a, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], [12.0, -3.0], atol=1e-9)
    assert rms_residual(m, src, dst) < 1e-9
    mirrored = dst * [-1, 1]  # a reflection is not a similarity: it must not be fitted exactly
    assert rms_residual(umeyama(src, mirrored), src, mirrored) > 1.0


def test_template_is_centred_and_scales_with_coverage():
    t = face_template(64, 0.8)
    assert t.shape == (5, 2) and abs(t[:, 0].mean() - 32) < 1.0
    assert t[1, 0] - t[0, 0] == pytest.approx(0.8 * 64 * (73.5318 - 38.2946) / 112)
    assert np.all((face_template(64, 1.0) > 0) & (face_template(64, 1.0) < 64))


def test_smoothing_stays_within_segments():
    lm = np.zeros((6, 5, 2))
    lm[3:] = 10.0
    out = smooth_landmarks(lm, np.array([0, 0, 0, 1, 1, 1]), sigma=2.0)
    np.testing.assert_allclose(out[:3], 0.0)
    np.testing.assert_allclose(out[3:], 10.0)
    noisy = np.random.default_rng(0).normal(0, 1, (50, 5, 2))
    assert smooth_landmarks(noisy, np.zeros(50, int), 1.5).std() < 0.6 * noisy.std()


def test_split_tail_with_guard_gap_and_whole_clips():
    frames = pd.DataFrame(
        {
            "identity": ["a"] * 20 + ["b"] * 20,
            "video": (["v0"] * 10 + ["v1"] * 10) * 2,
            "timestamp_s": list(np.arange(10) * 0.5) * 4,
        }
    )
    tail = assign_split(frames, SplitParams(mode="tail", val_fraction=0.1, test_fraction=0.2, gap_s=0.5, blocks=1))
    # t = 0..4.5 s: test from 3.6 s, gap 3.1..3.6, val 2.65..3.1, gap 2.15..2.65, train before
    assert list(tail[:10]) == ["train"] * 5 + ["gap"] + ["val"] + ["gap"] + ["test"] * 2
    clips = assign_split(frames, SplitParams(mode="clips", val_fraction=0.1, test_fraction=0.2, gap_s=0.5, blocks=1))
    assert list(clips) == list(tail)  # two clips are too few to hold out whole clips twice: cut in time
    three = frames.assign(video=(["v0"] * 7 + ["v1"] * 7 + ["v2"] * 6) * 2)
    clips = assign_split(three, SplitParams(mode="clips", val_fraction=0.2, test_fraction=0.2, gap_s=1.0, blocks=1))
    assert list(clips[:20]) == ["train"] * 7 + ["val"] * 7 + ["test"] * 6


def test_split_blocks_hold_a_long_clip_out_at_several_moments():
    """One 200-s clip (Franck's length) at 6 frames/s, four blocks: four val and four test segments spread over the
    clip, each block's shares as one block's, and no training frame within gap_s of a held-out one (a gap also
    follows each test segment)."""
    t = np.arange(0, 200, 1 / 6)
    frames = pd.DataFrame({"identity": "a", "video": "v", "timestamp_s": t})
    split = SplitParams(mode="tail", val_fraction=0.15, test_fraction=0.25, gap_s=0.5, blocks=4)
    labels = assign_split(frames, split)
    held = {s: t[labels == s] for s in ("val", "test")}
    for name, times in held.items():
        runs = np.split(times, np.where(np.diff(times) > 1)[0] + 1)
        assert len(runs) == 4, (name, len(runs))
        assert [int(r[0] // 50) for r in runs] == [0, 1, 2, 3]  # one segment in each quarter of the clip
    shares = {s: float(np.mean(labels == s)) for s in ("train", "val", "test")}
    assert abs(shares["test"] - 0.25) < 0.01 and abs(shares["val"] - 0.15) < 0.01 and shares["train"] > 0.55
    train = t[labels == "train"]
    nearest = np.min(np.abs(train[:, None] - np.concatenate(list(held.values()))[None, :]), axis=1)
    assert nearest.min() >= 0.5 - 1e-9
    one = assign_split(frames, split.model_copy(update={"blocks": 1}))
    tail = assign_split(frames, SplitParams(mode="tail", val_fraction=0.15, test_fraction=0.25, gap_s=0.5,
                                            blocks=1))
    assert list(one) == list(tail)
    assert t[np.asarray(one) == "test"].min() > 0.7 * t.max()  # blocks: 1 holds out only the clip's tail


# --- detection and alignment on real faces -----------------------------------------------------------


def _frame_with(still: np.ndarray, angle: float) -> np.ndarray:
    """The still rotated by ``angle`` degrees on a 480×480 grey frame."""
    frame = np.full((480, 480, 3), 120, np.uint8)
    img = cv2.resize(still, (320, 320), interpolation=cv2.INTER_AREA)
    frame[80:400, 80:400] = img
    rot = cv2.getRotationMatrix2D((240, 240), angle, 1.0)
    return cv2.warpAffine(frame, rot, (480, 480), borderValue=(120, 120, 120))


@pytest.mark.parametrize("angle", [0, 25, -30])
def test_landmarks_land_on_the_template_and_rotated_faces_come_out_upright(mtcnn, astronaut, angle):
    frame = _frame_with(astronaut, angle)
    det = mtcnn.detect([frame])[0]
    assert len(det) >= 1 and det.scores.max() > 0.95
    lm = det.landmarks[int(np.argmax(det.scores))]
    tpl = face_template(SIZE, 0.8)
    m = umeyama(lm, tpl)
    aligned = apply_affine(m, lm)
    assert np.linalg.norm(aligned - tpl, axis=1).max() < 4.0  # within a few pixels of the template
    assert rms_residual(m, lm, tpl) < 3.0
    eyes = aligned[1] - aligned[0]
    assert abs(math.degrees(math.atan2(eyes[1], eyes[0]))) < 5.0  # upright
    rotation = math.degrees(math.atan2(m[1, 0], m[0, 0]))
    assert rotation == pytest.approx(angle, abs=6.0)  # the transform undid the roll (image y points down)


def test_rotated_crop_matches_upright_crop(mtcnn, astronaut):
    crops = []
    for angle in (0, 30):
        frame = _frame_with(astronaut, angle)
        det = mtcnn.detect([frame])[0]
        lm = det.landmarks[int(np.argmax(det.scores))]
        crops.append(warp_face(frame, umeyama(lm, face_template(SIZE, 0.8)), SIZE).astype(float))
    a, b = (c.mean(2).ravel() for c in crops)
    assert np.corrcoef(a, b)[0, 1] > 0.9


def test_batched_detection_equals_one_at_a_time(mtcnn, astronaut):
    frames = [_frame_with(astronaut, a) for a in (0, 10, -10)]
    batched = mtcnn.detect(frames)
    single = [mtcnn.detect([f])[0] for f in frames]
    for b, s in zip(batched, single, strict=True):
        np.testing.assert_allclose(b.landmarks[0], s.landmarks[0], atol=0.5)


# --- the stage end to end ------------------------------------------------------------------------------


def _params(**kw) -> AlignParams:
    return AlignParams(**{"min_face_size": 20, **kw})


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage")
    raw = root / "raw"
    face_clip(raw / "a" / "walk.mp4", "a", seconds=2.0, fps=10, seed=1)
    no_face_clip(raw / "a" / "empty_room.mp4")
    face_clip(raw / "b" / "walk.mp4", "b", seconds=2.0, fps=10, seed=2)
    two_face_clip(raw / "c" / "pair.mp4")
    extract_frames(raw, root / "frames", ("a", "b", "c"), every=1)
    return root / "frames"


def _stage(frames_dir, faces, detector, align_params: AlignParams, split: SplitParams):
    """Stage ``align`` with this detector and these params, its folders under ``faces``'s parent."""
    from faceswap.config import load_params, with_overrides

    p = with_overrides(load_params(REPO / "params.yaml"), {
        "paths.frames": str(frames_dir), "paths.faces": str(faces), "paths.align_metrics": str(faces.parent / "m.json"),
        "align": align_params.model_dump(), "split": split.model_dump(), "base.image_size": SIZE}, "test")
    return align.run(p, detector)


@pytest.mark.slow
def test_stage_manifest_report_and_rerun(frames_dir, mtcnn, tmp_path):
    split = SplitParams(mode="tail", val_fraction=0.15, test_fraction=0.15, gap_s=0.2, blocks=1)
    s = _stage(frames_dir, tmp_path / "faces", mtcnn, _params(), split)
    df = pd.read_parquet(tmp_path / "faces" / "manifest.parquet")

    # every column, with the right types
    assert list(df.columns) == MANIFEST_COLUMNS and check_manifest(df) == []
    import pyarrow.parquet as pq

    assert pq.read_schema(tmp_path / "faces" / "manifest.parquet").equals(manifest_schema(), check_metadata=False)
    assert column_array(df, "landmarks_src").shape == (len(df), 5, 2)
    assert column_array(df, "matrix").shape == (len(df), 2, 3)
    assert column_array(df, "box").shape == (len(df), 4)
    assert set(df["split"]) == {"train", "val", "test"} and set(df["detector"]) == {"mtcnn"}
    assert (df["width"] == SIZE).all() and (df["height"] == SIZE).all()
    assert df["face_id"].is_unique
    for p in df["path"].head(5):
        assert cv2.imread(str(tmp_path / "faces" / p)).shape == (SIZE, SIZE, 3)

    # the forward matrix maps the detected landmarks to landmarks_aligned
    m, src = column_array(df, "matrix"), column_array(df, "landmarks_src")
    np.testing.assert_allclose(
        np.einsum("nij,nkj->nki", m[:, :, :2], src) + m[:, None, :, 2], column_array(df, "landmarks_aligned"), atol=1e-6
    )
    assert df["alignment_residual_px"].mean() < 3.5

    # the clip with no face yields no rows and a clear report
    assert not (df["video"] == "empty_room.mp4").any()
    empty = next(c for c in s.clips if c.video == "empty_room.mp4")
    assert empty.faces == 0 and empty.rejected.get("no_face", 0) + empty.rejected.get("low_score", 0) > 0
    report = json.loads((tmp_path / "faces" / "report.json").read_text())
    assert report == json.loads(json.dumps(s.to_json()))
    assert report["faces"] == len(df) and report["identities"]["a"]["faces"] > 0
    assert report["rejected"]["split_gap"] > 0 and report["jitter_px"] is not None
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert list(metrics) == [*align.METRICS, "rejected", "identities"] and metrics["faces"] == len(df)
    assert "empty_room.mp4: 0/" in align.format_record(s)

    # val frames come after train frames of the same clip, test frames after val frames, each past the gap
    for _, clip in df.groupby(["identity", "video"]):
        for before, after in (("train", "val"), ("val", "test")):
            if (clip["split"] == before).any() and (clip["split"] == after).any():
                assert (
                    clip.loc[clip["split"] == before, "timestamp_s"].max()
                    < clip.loc[clip["split"] == after, "timestamp_s"].min() - 0.2 + 1e-9
                )

    # a frame with two faces keeps the tracked face (the astronaut on the left), not the larger newcomer
    pair = df[df["video"] == "pair.mp4"]
    assert len(pair) >= 6
    assert (column_array(pair, "box")[:, 2] < 240).all()

    # re-running on the same input gives the same manifest; the library writes the crops, not the manifest
    again = align_faces(frames_dir, tmp_path / "again", mtcnn, _params(), split, size=SIZE, progress=False)
    assert not (tmp_path / "again" / "manifest.parquet").exists() and not (tmp_path / "again" / "report.json").exists()
    write_manifest(again.rows, tmp_path / "again" / "manifest.parquet")
    pd.testing.assert_frame_equal(df, pd.read_parquet(tmp_path / "again" / "manifest.parquet"))


@pytest.mark.slow
def test_largest_policy_switches_to_the_larger_face(frames_dir, mtcnn, tmp_path):
    split = SplitParams(mode="tail", val_fraction=0.1, test_fraction=0.1, gap_s=0.0, blocks=1)
    rows = align_faces(frames_dir, tmp_path / "f", mtcnn, _params(select="largest"), split, size=SIZE,
                       progress=False).rows
    write_manifest(rows, tmp_path / "f" / "manifest.parquet")
    pair = pd.read_parquet(tmp_path / "f" / "manifest.parquet").query("video == 'pair.mp4'")
    right = column_array(pair, "box")[:, 0] > 240
    assert right[pair["frame_index"].to_numpy() >= 4].all() and not right[pair["frame_index"].to_numpy() < 4].any()


def test_an_identity_without_a_face_stops_the_stage_after_its_records(mtcnn, tmp_path):
    face_clip(tmp_path / "raw" / "a" / "walk.mp4", "a", seconds=0.5, fps=8, seed=1)
    no_face_clip(tmp_path / "raw" / "b" / "empty_room.mp4", n=4)
    extract_frames(tmp_path / "raw", tmp_path / "frames", ("a", "b"), every=1)
    split = SplitParams(mode="tail", val_fraction=0.2, test_fraction=0.2, gap_s=0.0, blocks=1)
    with pytest.raises(align.NoFaceError, match=r"^no face found for identity b; see .*faces/report\.json$"):
        _stage(tmp_path / "frames", tmp_path / "faces", mtcnn, _params(roll_retry=False), split)
    report = json.loads((tmp_path / "faces" / "report.json").read_text())  # what was written is kept
    assert report["identities"]["b"]["faces"] == 0 and report["identities"]["a"]["faces"] > 0
    assert json.loads((tmp_path / "m.json").read_text())["identities"] == report["identities"]
    assert len(pd.read_parquet(tmp_path / "faces" / "manifest.parquet")) == report["faces"]


def test_align_cli_without_frames_fails_clearly(tmp_path):
    res = CliRunner().invoke(
        app,
        [
            "align",
            str(tmp_path),
            "--out",
            str(tmp_path / "faces"),
            "--detector",
            "mtcnn",
            "--params",
            str(REPO / "params.yaml"),
        ],
    )
    assert res.exit_code == 1 and "run `faceswap extract` first" in res.output


# --- RetinaFace ResNet-50 (its weights are not downloadable here: the error path and the plumbing) -----


def test_retinaface_r50_without_weights_says_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(RetinaFaceWeightsError) as err:
        find_retinaface_weights()
    msg = str(err.value)
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in msg and "align.retinaface_weights" in msg
    with pytest.raises(RetinaFaceWeightsError, match=r"not found at .*nowhere\.pth"):
        find_retinaface_weights(tmp_path / "nowhere.pth")
    with pytest.raises(RetinaFaceWeightsError):
        create_detector("retinaface_r50", device="cpu")
    with pytest.raises(RetinaFaceWeightsError, match=r"nowhere\.pth"):  # auto takes the named file at its word
        create_detector("auto", device="cpu", retinaface_weights=tmp_path / "nowhere.pth")
    res = CliRunner().invoke(
        app,
        ["align", str(tmp_path), "--detector", "retinaface_r50", "--device", "cpu",
         "--params", str(REPO / "params.yaml")],
    )
    assert res.exit_code == 1 and "checkpoints" in res.output


def test_auto_ignores_the_host_and_a_warm_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "retinaface_resnet50_2020-07-20.pth").write_bytes(b"placeholder")
    assert find_retinaface_weights() == hub / "retinaface_resnet50_2020-07-20.pth"
    choice = create_detector("auto", device="cpu")
    assert choice.detector.name == "retinaface" and "mobilenet" in choice.reason


@pytest.mark.slow
def test_retinaface_plumbing_with_random_weights(tmp_path, astronaut):
    """Real inference needs the real weights (not available offline); this checks loading and shapes only."""
    import torch

    from faceswap.data.detect import build_retinaface_network

    net = build_retinaface_network()
    path = tmp_path / "rf.pth"
    torch.save(net.state_dict(), path)
    det = RetinaFaceDetector(path, device="cpu", max_size=320, confidence=0.0)
    out = det.detect([_frame_with(astronaut, 0)] * 2)
    assert len(out) == 2
    for d in out:
        assert d.boxes.shape[1:] == (4,) and d.landmarks.shape[1:] == (5, 2) and len(d.scores) == len(d.boxes)
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    torch.save({"foo": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(DetectorError, match="does not hold RetinaFace"):
        RetinaFaceDetector(tmp_path / "wrong.pth")


def test_prefetched_batches_keep_their_order_and_raise_the_producers_error():
    """The GPU path decodes ahead on a thread (align._prefetched); what it yields and raises is the producer's."""
    from faceswap.data.align import _prefetched

    assert list(_prefetched(iter(range(10)), depth=2)) == list(range(10))

    def broken():
        yield 1
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for x in _prefetched(broken()):
            got.append(x)
    assert got == [1]


def test_crops_past_the_frame_edge_repeat_the_edge_and_say_how_much_is_outside():
    """Issue #21: a face near the top of a close-up. Reflection mirrored the chin and mouth into the crop's top;
    replication smears the frame's edge row instead, and the share out of frame is measured from the matrix."""
    from faceswap.data.geometry import out_of_frame_share

    h, w, size = 120, 160, 64
    frame = np.zeros((h, w, 3), np.uint8)
    frame[:, :, 1] = np.arange(h, dtype=np.uint8)[:, None]  # green = row index: where a pixel came from
    m = np.array([[1.0, 0.0, -48.0], [0.0, 1.0, 16.0]])  # frame → crop: the crop's top 16 rows lie above the frame
    crop = warp_face(frame, m, size)
    assert (crop[:16, :, 1] == 0).all()  # rows above the frame repeat row 0 (reflection would count up 15..0)
    assert np.array_equal(crop[16:, 0, 1], np.arange(size - 16, dtype=np.uint8))
    assert out_of_frame_share(m, w, h, size) == pytest.approx(16 / 64)
    assert out_of_frame_share(np.array([[1.0, 0, -40], [0, 1.0, -20]]), w, h, size) == 0.0
    # a 2× down-scale (warped at k× and area-averaged) maps the same share
    half = np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 16.0]])
    assert out_of_frame_share(half, w, h, size) == pytest.approx(16 / 64)
