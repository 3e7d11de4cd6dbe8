"""Your own short footage through extract and align with the default params: phone clips of 1.6–3 s keep at least
80 % of the faces the detector finds in them, with train, val and test faces for each person (issue #33). Clips are
filmed on the fly from the public-domain portraits (tests/_clips.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from faceswap.config import Params, load_params, with_overrides
from faceswap.stages import align, extract
from tests._clips import face_clip
from tests.conftest import REPO, repo_paths


@pytest.fixture(scope="module")
def short_raw(tmp_path_factory):
    """a: one 3-s clip at 24 fps (72 frames); b: two clips of 1.6 s and 2.4 s at 25 fps (40 + 60 frames)."""
    root = tmp_path_factory.mktemp("short")
    face_clip(root / "raw" / "a" / "phone.mp4", "a", seconds=3.0, fps=24, seed=3)
    face_clip(root / "raw" / "b" / "one.mp4", "b", seconds=1.6, fps=25, seed=4)
    face_clip(root / "raw" / "b" / "two.mp4", "b", seconds=2.4, fps=25, seed=5)
    return root


def _params(root, **overrides) -> Params:
    """params.yaml as it is (every, split: auto), its paths below ``root`` and MTCNN (weights in its wheel)."""
    paths = {f"paths.{k}": v for k, v in repo_paths(root).items()} | {"paths.raw": str(root / "raw")}
    return with_overrides(load_params(REPO / "params.yaml"), {
        **paths, "align.detector": "mtcnn", "align.device": "cpu", "base.image_size": 64, **overrides}, "test")


@pytest.fixture(scope="module")
def extracted(short_raw):
    p = _params(short_raw)
    return p, extract.run(p)


def test_every_auto_keeps_every_frame_of_short_clips(extracted):
    _, record = extracted
    assert {i: (s.every, s.footage_frames, s.frames) for i, s in record.identities.items()} == {
        "a": (1, 72, 72), "b": (1, 100, 100)}
    assert "every 1 of 72" in extract.format_record(record)


@pytest.mark.slow
def test_short_clips_keep_four_fifths_of_their_faces_in_three_splits(extracted, tmp_path):
    """The defaults keep ≥ 80 % of the faces found with no split gap at all, and give each person train, val and test
    faces; the old defaults (four blocks, 0.5-s gaps) lose most of them, and the stage says which setting did it."""
    p, _ = extracted
    every_face = align.run(with_overrides(p, {"split.gap_s": 0.0, "paths.faces": str(tmp_path / "all"),
                                              "paths.align_metrics": str(tmp_path / "all.json")}, "test"))
    assert every_face.rejected["split_gap"] == 0
    found = {i: d.faces for i, d in every_face.identities.items()}
    assert found["a"] >= 60 and found["b"] >= 80  # the detector finds the face in most frames

    record = align.run(p)
    for ident, d in record.identities.items():
        assert d.faces >= 0.8 * found[ident], (ident, d.faces, found[ident])
        assert min(d.train, d.val, d.test) > 0, (ident, d)
    assert record.warnings == ()
    text = align.format_record(record)
    assert "b/one.mp4:" in text and "1 block, gap 0.078 s over 1.6 s" in text
    man = pd.read_parquet(f"{p.paths.faces}/manifest.parquet")
    assert set(man.split) == {"train", "val", "test"}

    old = align.run(with_overrides(p, {"split.blocks": 4, "split.mode": "tail", "paths.faces": str(tmp_path / "old"),
                                       "paths.align_metrics": str(tmp_path / "old.json")}, "test"))
    assert sum(d.faces for d in old.identities.values()) < 0.5 * sum(found.values())
    dropped = [w for w in old.warnings if "the split dropped" in w]
    assert len(dropped) == 3  # each clip: the split dropped more than it kept, and the setting is named
    assert all("split.blocks 4 with split.gap_s 0.5 s" in w and "split.blocks: auto" in w for w in dropped)
    too_short = [w for w in old.warnings if "too short for the split" in w]
    assert any(w.startswith("clip b/one.mp4 (40 sampled frames") and "no train" in w for w in too_short)
    assert "warning: b/one.mp4: the split dropped" in align.format_record(old)
