"""Which rolls the roll retry finds, per face size and angle set, and what a faceless frame costs.

    python bench/roll_coverage.py [--sizes 40 44 48 64 96] [--out bench/results]

Each of the two public-domain faces of the demo (the astronaut and Grace Hopper) is scaled so that its face box
is about ``size`` px wide, turned about the face by every roll from −180° to 170° in 10° steps plus ±45° and
±135°, and pasted into a 640×480 frame of ``skimage.data.coffee()`` (a textured background, not a flat one).
For each angle set the detector with :class:`~faceswap.data.roll_retry.RollRetry` (``every=1``) looks at each frame;
a roll counts as found when a face the align stage would use (score, size and landmark fit, its ``_usable``) and
at least 0.6 × ``size`` wide comes out, and as tilted when its aligned eye line is more than 5° off level. The
cost column is the detector work of the turned looks at one faceless frame in upright-frame equivalents (pixels
of every turned canvas / pixels of the frame). Prints a table and writes ``roll_coverage.json``: the evidence
for ``ROLL_ANGLES`` and ``ROLL_ANGLES_LARGE`` (docs/data.md).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ANGLE_SETS = {
    "±45 ±90 ±135 180": (45, -45, 90, -90, 135, -135, 180),  # ROLL_ANGLES
    "±45 ±90 180": (45, -45, 90, -90, 180),
    "±90 180": (90, -90, 180),  # ROLL_ANGLES_LARGE
}
ROLLS = sorted({*range(-180, 180, 10), 45, -45, 135, -135})
BOX_PER_EYE_DISTANCE = 95 / 41.8  # the astronaut's RetinaFace box (issue #13's reference) / her eye distance
FRAME = (640, 480)


def _eye_angle(landmarks: np.ndarray) -> float:
    from faceswap.data.geometry import apply_affine, face_template, umeyama

    tpl = face_template(64, 0.8)
    e = np.diff(apply_affine(umeyama(landmarks, tpl), landmarks)[:2], axis=0)[0]
    return math.degrees(math.atan2(e[1], e[0]))


def rolled_face_frame(face, size: int, roll: float) -> np.ndarray:
    """``face`` (a :class:`~faceswap.data.demo.FaceStill`), its box about ``size`` px wide, turned by ``roll``
    degrees about its landmarks' centre, on coffee."""
    import cv2
    import skimage.data

    scale = size / (BOX_PER_EYE_DISTANCE * face.eye_distance)
    still = cv2.resize(face.image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    centre = face.centre * scale
    m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), roll, 1.0)
    m[:, 2] += np.array([400.0, 250.0]) - centre
    frame = cv2.resize(skimage.data.coffee(), FRAME)
    inside = cv2.warpAffine(np.full(still.shape[:2], 255, np.uint8), m, FRAME) > 0
    frame[inside] = cv2.warpAffine(still, m, FRAME)[inside]
    return frame


def canvas_cost(angles: tuple[int, ...]) -> float:
    from faceswap.data.roll_retry import _rotation

    w, h = FRAME
    return sum(math.prod(_rotation(a, h, w)[1]) for a in angles) / (w * h)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[40, 44, 48, 64, 96])
    ap.add_argument("--rolls", type=float, nargs="+", default=ROLLS, help="degrees (default: the 40 listed above)")
    ap.add_argument("--out", type=Path, default=REPO / "bench/results")
    args = ap.parse_args(argv)

    import torch

    from faceswap.config import load_params
    from faceswap.data.align import _usable
    from faceswap.data.demo import astronaut, grace_hopper
    from faceswap.data.detect import create_detector
    from faceswap.data.roll_retry import RollRetry

    det = create_detector("retinaface", device="cpu").detector
    align = load_params(REPO / "params.yaml").align.model_copy(update={"min_face_size": 20})
    usable = _usable(align, 64)  # what the stage counts as found (score, size, landmark fit); faces ≥ 20 px
    rows = []
    for face, size in itertools.product((astronaut(), grace_hopper()), args.sizes):
        frames = [rolled_face_frame(face, size, r) for r in args.rolls]
        for name, angles in ANGLE_SETS.items():
            retry = RollRetry(det, usable=usable, angles=angles, every=1)
            t0 = time.perf_counter()
            found = retry.detect(frames)
            seconds = time.perf_counter() - t0
            missed, tilted = [], []
            for roll, d in zip(args.rolls, found, strict=True):
                ok = usable(d) & (d.boxes[:, 2] - d.boxes[:, 0] >= 0.6 * size) if len(d) else []
                if not np.any(ok):
                    missed.append(roll)
                    continue
                j = int(np.flatnonzero(ok)[np.argmax(d.scores[ok])])
                if abs(tilt := _eye_angle(d.landmarks[j])) > 5.0:
                    tilted.append([roll, round(tilt, 1)])
            rows.append({"face": face.name, "face_px": size, "angles": name, "rolls": len(args.rolls), "missed": missed,
                         "tilted": tilted, "faceless_frame_cost_upright_looks": round(canvas_cost(angles), 2),
                         "seconds": round(seconds, 2)})
            print(f"{face.name:<12} {size:>4} px  {name:<18} missed {len(missed):>2}/{len(args.rolls)} {missed}  "
                  f"tilted {tilted}", flush=True)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch_threads": torch.get_num_threads(),
        "command": "python bench/roll_coverage.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "frame": list(FRAME),
        "rows": rows,
    }
    print(f"\n{'face':>5}  {'angles':<18} {'rolls found (both faces)':>25}  {'turned looks at a faceless frame':>33}")
    for size, name in itertools.product(args.sizes, ANGLE_SETS):
        mine = [r for r in rows if r["face_px"] == size and r["angles"] == name]
        n, missed = sum(r["rolls"] for r in mine), sorted({m for r in mine for m in r["missed"]})
        print(f"{size:>4}px  {name:<18} {n - sum(len(r['missed']) for r in mine):>9}/{n:<4} missed {missed!s:<12}"
              f"{mine[0]['faceless_frame_cost_upright_looks']:>18} upright looks")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "roll_coverage.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
