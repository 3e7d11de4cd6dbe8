"""The swap instruments on real crops of the two men made by our own extract and align stages (``talking``):
known-clean inputs read clean, known-bad ones read bad, before the register gates on them (docs/metrics.md).

Planted cases: a face against itself (follows perfectly), the same man 0.8 s later (varied, not following),
the target's mean face for every source (a collapsed decoder), that mean face plus per-source noise (a smear), and
identity at matched sharpness (blurred faces against galleries of the same blur).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from faceswap.data.template import face_region
from faceswap.metrics.collapse import collapse, follow_structure
from faceswap.metrics.expression import measure_expressions, preservation
from faceswap.metrics.identity import gallery_retrieval, shared_encoder

N, LATE = 40, 5  # faces per man; 5 sampled frames = 0.8 s


def _blur(images: np.ndarray, sigma: float) -> np.ndarray:
    return np.stack([cv2.GaussianBlur(im, (0, 0), sigma) for im in images]) if sigma else images


@pytest.fixture(scope="module")
def cases(talking) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    now = {i: talking[i][0][:N] for i in ("a", "b")}
    late = {i: talking[i][0][LATE:N + LATE] for i in ("a", "b")}
    other = {"a": "b", "b": "a"}
    mean = {i: np.repeat(now[other[i]].mean(0, keepdims=True).round().astype(np.uint8), N, 0) for i in now}
    smear = {i: np.clip(mean[i] + rng.normal(0, 25, mean[i].shape), 0, 255).astype(np.uint8) for i in now}
    return {"now": now, "late": late, "mean": mean, "smear": smear}


@pytest.mark.slow
def test_collapse_reads_one_image_for_all_as_zero_and_the_faces_themselves_as_one(cases):
    region = face_region(64, 0.8)
    for i in ("a", "b"):
        now = cases["now"][i].astype(np.float32) / 255
        assert collapse(now, now, region)["ratio"] == pytest.approx(1.0)
        assert collapse(cases["mean"][i] / 255.0, now, region)["ratio"] == pytest.approx(0.0, abs=1e-9)
        assert collapse(cases["late"][i] / 255.0, now, region)["ratio"] > 0.6  # varied (not following: see below)
        # the low-pass reads a noise smear as far less varied than a per-pixel spread would (not as collapsed:
        # spread alone cannot tell noise from following, which is why structure r gates beside it)
        smear = collapse(cases["smear"][i] / 255.0, now, region)
        per_pixel = collapse(cases["smear"][i] / 255.0, now, region, lowpass=64)["ratio"]
        assert smear["ratio"] < per_pixel / 4 and len(smear["per_face"]) == N
    flat = np.full((N, 64, 64, 3), 0.5)
    assert collapse(cases["now"]["a"] / 255.0, flat, region)["ratio"] is None  # nothing to compare with


@pytest.mark.slow
def test_structure_separates_following_from_varying(cases):
    """Only swaps that differ where their sources differ read high: the face itself 1; the same man 0.8 s late,
    noise and the mean face below the gate (0.6)."""
    region = face_region(64, 0.8)
    for i in ("a", "b"):
        now = cases["now"][i] / 255.0
        assert follow_structure(now, now, region) == pytest.approx(1.0)
        # the same man 0.8 s later shares some structure with himself when he moves slowly (0.49 on this stretch,
        # 0.15-0.22 on the test split's four moments): below the gate either way
        assert follow_structure(cases["late"][i] / 255.0, now, region) < 0.6
        assert follow_structure(cases["smear"][i] / 255.0, now, region) < 0.3
        assert follow_structure(cases["mean"][i] / 255.0, now, region) == 0.0


@pytest.mark.slow
def test_every_swap_is_measured_and_a_constant_swap_does_not_follow_the_mouth(cases):
    for i in ("a", "b"):
        src = measure_expressions(cases["now"][i], 0.8)
        for name, want in (("now", (0.99, 1.0)), ("mean", (0.0, 0.0)), ("smear", (-0.5, 0.5))):
            every = measure_expressions(cases[name][i], 0.8, face_check=False, require_fit=False)
            assert every.fitted.all()  # nothing left out, whatever the swap looks like
            r = preservation(src, every, coverage=0.8)["mouth_corr"]
            assert want[0] - 1e-9 <= r <= want[1] + 1e-9, (name, r)


@pytest.mark.slow
def test_identity_at_matched_sharpness_retrieves_the_man_and_not_the_other(cases):
    """Blurred faces against galleries of the same blur: b's faces are retrieved as b, a's are not, at σ 0 and 1.5 px
    (the strict verification reads a 1-px blur as nobody); the target's mean face is retrieved too, which is why
    identity never gates alone."""
    enc = shared_encoder()
    for sigma in (0.0, 1.5):
        da, db = (enc.describe(_blur(cases["now"][i], sigma), 0.8) for i in ("a", "b"))
        as_b = gallery_retrieval(db, db, da, leave_out=True)  # b's faces: source gallery b, target gallery a
        assert as_b["retrieved"] == 0.0  # a face of b is never retrieved as a ...
        as_a_from_b = gallery_retrieval(da, da, db, leave_out=True)
        assert as_a_from_b["retrieved"] == 0.0  # ... nor a face of a as b
        # genuine: b's faces judged as "b" against a's gallery, leave-one-out in b's: nearer b every time
        assert np.mean(-np.asarray(as_b["score_per_face"]) > 0) >= 0.95
    mean_b = enc.describe(cases["mean"]["a"][:1], 0.8)  # the target b's mean face, "swapped" from a
    da, db = (enc.describe(cases["now"][i], 0.8) for i in ("a", "b"))
    assert gallery_retrieval(mean_b, da, db)["retrieved"] == 1.0
    with pytest.raises(ValueError):
        gallery_retrieval(da[:3], da[:2], db, leave_out=True)
