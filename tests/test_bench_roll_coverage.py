"""bench/roll_coverage.py, the evidence for the roll retry's angle sets, runs (on a few rolls) in the suite."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(autouse=True)
def bench_on_path():
    sys.path.insert(0, str(BENCH))
    yield
    sys.path.remove(str(BENCH))


def test_roll_coverage_finds_a_large_face_upright_and_sideways_with_every_angle_set(tmp_path):
    import roll_coverage

    result = roll_coverage.main(["--sizes", "96", "--rolls", "0", "90", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "roll_coverage.json").read_text())["rows"]
    assert rows == json.loads(json.dumps(result["rows"]))
    assert {(r["face"], r["angles"]) for r in rows} == {
        (f, a) for f in ("astronaut", "grace_hopper") for a in roll_coverage.ANGLE_SETS
    }
    for r in rows:
        assert r["missed"] == [] and r["tilted"] == [], r
    costs = {r["angles"]: r["faceless_frame_cost_upright_looks"] for r in rows}
    assert costs["±90 180"] == 3.0 and 10.5 < costs["±45 ±90 ±135 180"] < 11.5  # 45° canvases: ~2× the frame


def test_rolled_face_frames_hold_the_face_where_the_detector_finds_it():
    import roll_coverage
    from faceswap.data.demo import astronaut
    from faceswap.data.detect import create_detector

    det = create_detector("retinaface", device="cpu").detector.detect([roll_coverage.rolled_face_frame(
        astronaut(), 96, 0.0)])[0]
    best = int(det.scores.argmax())
    x0, y0, x1, y1 = det.boxes[best]
    assert det.scores[best] > 0.95 and 80 < x1 - x0 < 115  # the size asked for
    assert abs((x0 + x1) / 2 - 400) < 20 and abs((y0 + y1) / 2 - 250) < 30  # where it was pasted
