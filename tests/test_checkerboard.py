"""The checkerboard score on real photos: clean is low, planted grids score by amplitude, invariances."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from faceswap.metrics.checkerboard import checkerboard_report, checkerboard_score, checkerboard_score_set
from tests.conftest import REPO


def _resize(img: np.ndarray, n: int) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((n, n), Image.LANCZOS))


def _grid(shape: tuple[int, ...], period: int, kind: str) -> np.ndarray:
    h, w = shape[:2]
    yy, xx = np.mgrid[:h, :w]
    half = period // 2
    if kind == "checker":
        pat = np.where((yy % period < half) ^ (xx % period < half), 1.0, -1.0)
    else:  # a "window screen": bright lines every `period` pixels, as the seed describes
        pat = ((yy % period == 0) | (xx % period == 0)).astype(float)
        pat -= pat.mean()
    return pat[..., None] if len(shape) == 3 else pat


def _plant(img: np.ndarray, amplitude: float, period: int, kind: str = "checker") -> np.ndarray:
    return np.clip(img.astype(float) + amplitude * _grid(img.shape, period, kind), 0, 255)


@pytest.mark.parametrize("size", [64, 128, 256, 512])
def test_clean_photos_score_low(astronaut, grace_hopper, size):
    assert checkerboard_score(_resize(astronaut, size)).score < 0.03
    # Grace Hopper is a JPEG: its 16-pixel chroma blocks are a real (faint) lattice after resizing
    assert checkerboard_score(_resize(grace_hopper, size)).score < 0.1


def test_smooth_and_flat_images_score_zero():
    ramp = np.tile(np.linspace(0, 255, 256), (256, 1))
    assert checkerboard_score(ramp).score < 0.005
    assert checkerboard_score(np.full((128, 128, 3), 77.0)).score == 0.0


@pytest.mark.parametrize("period", [2, 4, 8])
@pytest.mark.parametrize("kind", ["checker", "screen"])
def test_score_grows_with_planted_grid_amplitude(astronaut, period, kind):
    img = _resize(astronaut, 256)
    scores = [checkerboard_score(_plant(img, a, period, kind)).score for a in (0, 2, 4, 8, 16, 32)]
    assert all(b > a for a, b in itertools.pairwise(scores[1:])), scores
    assert scores[-1] > 5 * max(scores[0], 0.01)
    assert scores[-1] > 0.2


def test_grid_is_attributed_to_its_period(astronaut):
    img = _resize(astronaut, 256)
    s2 = checkerboard_score(_plant(img, 16, 2)).per_period
    assert s2[2] > 0.1 and s2[8] < 0.05
    s8 = checkerboard_score(_plant(img, 16, 8)).per_period
    assert s8[8] > 0.1 and s8[2] < 0.05


def test_insensitive_to_brightness_and_contrast(astronaut):
    img = _plant(_resize(astronaut, 256), 8, 4)
    base = checkerboard_score(img).score
    for gain, offset in [(0.5, 0.0), (0.5, 60.0), (1.0, -30.0), (0.25, 100.0)]:
        assert checkerboard_score(img * gain + offset).score == pytest.approx(base, rel=1e-6)


def test_reference_excess_and_error_score(grace_hopper):
    ref = _resize(grace_hopper, 256)
    out = _plant(ref, 8, 8)
    rep = checkerboard_report(out, reference=ref)
    assert rep["excess"] == pytest.approx(rep["score"] - rep["reference_score"])
    assert rep["excess"] > 0.05
    # the error image is nothing but the grid: almost all of it is lattice
    assert rep["error_score"] > 0.9
    clean = checkerboard_report(ref, reference=ref)
    assert clean["excess"] == 0.0


def test_set_score_reveals_a_grid_too_faint_for_one_small_image(astronaut):
    """A model's grid is the same in every output; averaging spectra over a set exposes it."""
    rng = np.random.default_rng(0)
    faces = []
    for _ in range(48):
        y, x = rng.integers(0, astronaut.shape[0] - 300, size=2)
        faces.append(_resize(astronaut[y : y + 300, x : x + 300], 64))
    clean = checkerboard_score_set(faces).score
    faint = checkerboard_score_set([_plant(f, 3, 4) for f in faces]).score
    assert clean < 0.03
    assert faint > clean + 0.02
    assert np.mean([checkerboard_score(_plant(f, 3, 4)).score for f in faces[:8]]) < faint


def test_too_small_or_malformed_images_are_rejected():
    with pytest.raises(ValueError, match="too small"):
        checkerboard_score(np.zeros((16, 16)), periods=(2, 4, 8))
    with pytest.raises(ValueError, match="expected an"):
        checkerboard_score(np.zeros((4, 64, 64, 3)))


def test_cli_scores_files(tmp_path, astronaut):
    clean = tmp_path / "clean.png"
    gridded = tmp_path / "grid.png"
    Image.fromarray(_resize(astronaut, 256)).save(clean)
    Image.fromarray(_plant(_resize(astronaut, 256), 16, 4).astype(np.uint8)).save(gridded)
    res = subprocess.run(
        [sys.executable, "-m", "faceswap.cli", "checkerboard", str(clean), str(gridded), "--reference", str(clean),
         "--json"],
        capture_output=True, text=True, check=True, cwd=REPO,
    )
    rows = json.loads(res.stdout)
    assert rows[0]["excess"] == 0.0
    assert rows[1]["score"] > rows[0]["score"] + 0.1
    assert rows[1]["excess"] > 0.1
    bad = subprocess.run(
        [sys.executable, "-m", "faceswap.cli", "checkerboard", str(tmp_path / "missing.png")],
        capture_output=True, text=True, cwd=REPO,
    )
    assert bad.returncode == 2 and "missing.png" in bad.stderr
