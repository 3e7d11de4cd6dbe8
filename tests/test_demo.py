"""Demo clips: real videos of the public-domain faces, deterministic for a seed."""

from __future__ import annotations

import hashlib

import cv2
from typer.testing import CliRunner

from faceswap.cli import app
from faceswap.data.demo import make_demo
from tests.conftest import REPO


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_demo_is_deterministic_and_decodable(tmp_path):
    kw = dict(identities=("a", "b"), clips=2, seconds=1.0, fps=10, width=320, height=240, seed=3)
    first = make_demo(tmp_path / "one", **kw)
    second = make_demo(tmp_path / "two", **kw)
    assert [p.relative_to(tmp_path / "one").as_posix() for p in first] == [
        "a/clip00.mp4",
        "a/clip01.mp4",
        "b/clip00.mp4",
        "b/clip01.mp4",
    ]
    assert [_md5(p) for p in first] == [_md5(p) for p in second]
    other = make_demo(tmp_path / "three", **{**kw, "seed": 4})
    assert _md5(other[0]) != _md5(first[0])
    cap = cv2.VideoCapture(str(first[0]))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 10
    ok, frame = cap.read()
    assert ok and frame.shape == (240, 320, 3)


def test_demo_cli(tmp_path):
    out = tmp_path / "raw"
    res = CliRunner().invoke(
        app, ["demo-data", "--source", "portraits", "--out", str(out), "--clips", "1", "--seconds", "1",
              "--params", str(REPO / "params.yaml")]
    )
    assert res.exit_code == 0, res.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4")) == ["a/clip00.mp4", "b/clip00.mp4"]
