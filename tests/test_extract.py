"""Frame extraction: sampling, timestamps, and bad inputs reported instead of crashing the stage."""

from __future__ import annotations

import json

import cv2
import pandas as pd
import pytest
from typer.testing import CliRunner

from faceswap.cli import app
from faceswap.config import load_params, with_overrides
from faceswap.data.video import FRAME_COLUMNS, ExtractError, extract_frames, iter_sampled_frames
from faceswap.stages import extract
from tests._clips import face_clip
from tests.conftest import REPO


def _params(raw, frames, **extract_params):
    """The repository's params with the stage's folders (and any ``extract.*``) overridden."""
    overrides = {"paths.raw": str(raw), "paths.frames": str(frames)}
    overrides |= {f"extract.{k}": v for k, v in extract_params.items()}
    return with_overrides(load_params(REPO / "params.yaml"), overrides, "test", unset=object())


@pytest.fixture(scope="module")
def good_clip(tmp_path_factory):
    return face_clip(tmp_path_factory.mktemp("clip") / "good.mp4", seconds=2.0, fps=10)  # 20 frames


def _half_written_avi(src, dst):
    """An AVI whose second half is missing: it opens, then decoding stops midway."""
    cap = cv2.VideoCapture(str(src))
    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter.fourcc(*"MJPG"), 10, (320, 240))
    while True:
        ok, f = cap.read()
        if not ok:
            break
        writer.write(f)
    writer.release()
    data = dst.read_bytes()
    dst.write_bytes(data[: len(data) // 2])


def test_sampling_indices_and_timestamps(good_clip):
    got = [(i, t) for i, t, _ in iter_sampled_frames(good_clip, every=3)]
    assert [i for i, _ in got] == [0, 3, 6, 9, 12, 15, 18]
    assert [t for _, t in got] == pytest.approx([i / 10 for i, _ in got])
    assert len(list(iter_sampled_frames(good_clip, every=2, max_frames=4))) == 4


def test_bad_files_are_reported_and_skipped(tmp_path, good_clip):
    raw = tmp_path / "raw"
    (raw / "a").mkdir(parents=True)
    (raw / "b").mkdir()
    (raw / "a" / "good.mp4").write_bytes(good_clip.read_bytes())
    (raw / "a" / "empty.mp4").write_bytes(b"")
    (raw / "a" / "fake.mov").write_text("this is not a video\n")
    data = good_clip.read_bytes()
    (raw / "a" / "truncated.mp4").write_bytes(data[: len(data) // 2])
    _half_written_avi(good_clip, raw / "b" / "half.avi")
    (raw / "b" / "notes.txt").write_text("not a video extension: ignored\n")

    s = extract.run(_params(raw, tmp_path / "frames", every=2, max_frames=None))
    by_name = {v.video: v for v in s.videos}
    assert by_name["good.mp4"].status == "ok" and by_name["good.mp4"].frames_kept == 10
    assert by_name["empty.mp4"].status == "failed" and "empty" in by_name["empty.mp4"].message
    assert by_name["fake.mov"].status == "failed" and "cannot open" in by_name["fake.mov"].message
    assert by_name["truncated.mp4"].status == "failed"
    half = by_name["half.avi"]
    assert half.status == "partial" and "stopped at frame" in half.message
    assert 0 < half.frames_kept < 10
    assert s.ignored_files == (str(raw / "b" / "notes.txt"),)
    assert s.identities["a"].videos_failed == 3 and s.identities["b"].videos_partial == 1
    assert "partial" in extract.format_record(s) and "notes.txt" in extract.format_record(s)

    report = json.loads((tmp_path / "frames" / "report.json").read_text())
    assert report == json.loads(json.dumps(s.to_json()))
    assert report["identities"]["a"]["frames"] == 10 and report["identities"]["a"]["videos_failed"] == 3
    assert report["videos"][0].keys() == {"identity", "video", "path", "status", "message", "fps",
                                          "frames_expected", "frames_decoded", "frames_kept"}
    df = pd.read_parquet(tmp_path / "frames" / "frames.parquet")
    assert list(df.columns) == list(FRAME_COLUMNS)
    assert len(df) == s.frames and all((tmp_path / "frames" / p).is_file() for p in df["path"])
    assert df["frame_index"].dtype == "int64" and df["timestamp_s"].dtype == "float64"


def test_identity_without_frames_fails_clearly(tmp_path, good_clip):
    raw = tmp_path / "raw"
    (raw / "a").mkdir(parents=True)
    (raw / "a" / "good.mp4").write_bytes(good_clip.read_bytes())
    (raw / "b").mkdir()
    (raw / "b" / "broken.mp4").write_text("nope")
    with pytest.raises(ExtractError, match=r"no frames for identity b .*1 video file\(s\), none decodable"):
        extract.run(_params(raw, tmp_path / "frames"))
    assert (tmp_path / "frames" / "report.json").is_file()  # the report is written before the error
    assert not (extract_frames(raw, tmp_path / "lib", ("a", "b"), every=1).videos[-1].frames_kept)  # not the library's
    assert not (tmp_path / "lib" / "report.json").exists()

    res = CliRunner().invoke(
        app, ["extract", str(raw), "--out", str(tmp_path / "f2"), "--params", str(REPO / "params.yaml")]
    )
    assert res.exit_code == 1
    assert "no frames for identity b" in res.output
    assert (tmp_path / "f2" / "report.json").is_file()
    res = CliRunner().invoke(  # 0 is a value, not "not given": params say what is allowed
        app, ["extract", str(raw), "--out", str(tmp_path / "f3"), "--every", "0", "--params", str(REPO / "params.yaml")]
    )
    assert res.exit_code == 2 and "extract.every = 0" in res.output and not (tmp_path / "f3").exists()


def test_refuses_to_wipe_a_foreign_folder(tmp_path, good_clip):
    raw = tmp_path / "raw"
    (raw / "a").mkdir(parents=True)
    (raw / "a" / "good.mp4").write_bytes(good_clip.read_bytes())
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("keep me")
    with pytest.raises(ExtractError, match="refusing to wipe"):
        extract_frames(raw, out, ("a",))
    assert (out / "thesis.tex").read_text() == "keep me"


def test_every_auto_and_a_number_on_the_command_line(tmp_path, good_clip):
    """`--every auto` keeps all 20 frames of a 2-s clip (footage under extract.target_frames); `--every 4` keeps
    every 4th; the report says which step each identity got and of how many frames."""
    from faceswap.data.video import count_frames

    raw = tmp_path / "raw"
    for ident in ("a", "b"):
        (raw / ident).mkdir(parents=True)
        (raw / ident / "good.mp4").write_bytes(good_clip.read_bytes())
    assert count_frames(raw / "a" / "good.mp4") == 20 and count_frames(tmp_path / "nothing.mp4") == 0
    for every, kept in (("auto", 20), ("4", 5)):
        out = tmp_path / f"f-{every}"
        res = CliRunner().invoke(app, ["extract", str(raw), "--out", str(out), "--every", every,
                                       "--params", str(REPO / "params.yaml")])
        assert res.exit_code == 0, res.output
        assert f"a: {kept} frames (every {1 if every == 'auto' else 4} of 20)" in res.output
        report = json.loads((out / "report.json").read_text())
        assert report["identities"]["b"]["frames"] == kept
