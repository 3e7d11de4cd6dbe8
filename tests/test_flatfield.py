"""The flat-field probe (issue #22): untrained decoders, real constructors, several init seeds.

Measured (64², width 16, bottleneck 128 — the demo model — and the tests' width 4 / bottleneck 16, seeds 0-5, eval
mode): flat_grid_score convtranspose 0.45-0.91, pixelshuffle 0.89-0.97; resize_nearest, resize_bilinear 0.000,
pixelshuffle_icnr ≤ 0.006. lattice_share: convtranspose ≥ 1.1e-6, pixelshuffle ≥ 4.7e-5, the three clean variants
≤ 9e-10. At init a fresh BatchNorm's running statistics are 0 and 1, so in eval mode it is ≈ the identity and the
default-initialised convolutions shrink the signal layer by layer: the code of any flat image is ≈ 0.01 and the
decoder's output is its response to its own biases (std ≈ 0.01 on a mean ≈ 0.5; the three inputs agree to ~1e-4),
faint in absolute terms (the lattice share) but plainly gridded relative to its own variation (the score).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faceswap.data.dataset import load_faces, stack_faces
from faceswap.metrics.checkerboard import checkerboard_score, lattice, plant_lattice
from faceswap.metrics.flatfield import DEFAULT_SKIN, FlatFieldResult, flat_field_probe, flat_measures, mean_colour
from faceswap.model import FaceSwapAutoencoder, ModelConfig
from tests._faces import make_face_set

GRIDDED = ("convtranspose", "pixelshuffle")
CLEAN = ("resize_nearest", "resize_bilinear", "pixelshuffle_icnr")
SEEDS = (0, 1, 2, 3)


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    manifest = make_face_set(tmp_path_factory.mktemp("faces"))
    return {i: stack_faces(f, 8) for i, f in load_faces(manifest, ("a", "b"), "val", 64).items()}


def _model(variant: str, seed: int, width: int = 4, bottleneck: int = 16) -> FaceSwapAutoencoder:
    torch.manual_seed(seed)
    return FaceSwapAutoencoder(ModelConfig(image_size=64, width=width, bottleneck_channels=bottleneck,
                                           decoder=variant))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("variant", GRIDDED + CLEAN)
def test_untrained_gridded_decoders_read_high_and_clean_ones_zero(variant, seed, faces):
    r = flat_field_probe(_model(variant, seed), faces)
    m = r.metrics
    assert {o.input for o in r.outputs} == {"skin", "grey", "mean_code"}
    assert {o.identity for o in r.outputs} == {"a", "b"}
    assert all(np.isfinite(v) and 0.0 <= v <= 1.0 for v in m.values())
    if variant in GRIDDED:  # measured ≥ 0.45 (convtranspose) and ≥ 0.88 (pixelshuffle): every input, both decoders
        assert min(o.grid_score for o in r.outputs) > 0.3
        assert min(o.lattice_share for o in r.outputs) > 1e-7  # measured ≥ 1.1e-6
    else:  # measured 0.000 (icnr ≤ 0.006) and lattice share ≤ 9e-10
        assert m["flat_grid_score"] < 0.02
        assert m["flat_lattice_share"] < 1e-8
    assert m["flat_grid_score"] == max(o.grid_score for o in r.outputs)
    assert m["flat_grid_score_grey"] == max(o.grid_score for o in r.outputs if o.input == "grey")
    skin_b = next(o for o in r.outputs if (o.input, o.identity) == ("skin", "b"))
    assert m["flat_grid_score_skin_b"] == skin_b.grid_score and m["flat_lattice_share_skin_b"] == skin_b.lattice_share


@pytest.mark.parametrize("variant", GRIDDED + CLEAN)
def test_the_demo_sized_model_reads_the_same(variant):
    """The demo profile's model (width 16, bottleneck 128), without faces: skin and grey only."""
    r = flat_field_probe(_model(variant, 0, width=16, bottleneck=128))
    assert {o.input for o in r.outputs} == {"skin", "grey"} and "flat_grid_score_mean_code" not in r.metrics
    if variant in GRIDDED:
        assert r.metrics["flat_grid_score"] > 0.3 and min(o.grid_score for o in r.outputs) > 0.3
    else:
        assert r.metrics["flat_grid_score"] < 0.02


def test_probe_is_deterministic_restores_the_mode_and_draws_no_random_numbers(faces):
    model = _model("convtranspose", 0).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    a = flat_field_probe(model, faces)
    b = flat_field_probe(model, faces)
    assert a.metrics == b.metrics and a.outputs == b.outputs  # bit for bit
    assert model.training  # the probe ran in eval mode and put the model back
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # BatchNorm stats untouched
    assert isinstance(a, FlatFieldResult) and a.as_dict()["metrics"] == a.metrics


def test_inputs_and_skin(faces):
    model = _model("resize_nearest", 1)
    r = flat_field_probe(model, faces, skin=mean_colour(faces), identities=["b"])
    assert {o.identity for o in r.outputs} == {"b"}
    assert r.skin == pytest.approx(mean_colour(faces)) and r.skin != DEFAULT_SKIN
    floats = {i: f.float() / 255 for i, f in faces.items()}  # uint8 and float faces are the same faces
    assert flat_field_probe(model, floats).metrics == pytest.approx(flat_field_probe(model, faces).metrics)
    assert all(0.0 <= c <= 1.0 for c in mean_colour(faces))


def test_measures_of_known_images():
    flat = np.full((64, 64, 3), 0.6)
    assert flat_measures(flat) == pytest.approx((0.0, 0.0, 0.0), abs=1e-12)
    grid = flat + 0.01 * lattice((64, 64, 3), 2)  # a 1 % (of 0.6) checkerboard on a flat field: all of it lattice
    score, share, offdc = flat_measures(grid)
    # (the score's periodic-component step gives a pure checkerboard's edge rows to the smooth part: 0.98, not 1)
    assert score > 0.95 and offdc == pytest.approx(0.01**2 / (0.6**2 + 0.01**2))
    assert share == pytest.approx(score**2 * offdc, rel=1e-9)  # the score's numerator over the total energy
    yy, xx = np.mgrid[:64, :64] / 64.0
    shading = 0.5 + 0.2 * np.stack([np.sin(3 * yy + 1), np.cos(2 * xx), yy * xx], axis=-1)  # smooth content
    face_like = plant_lattice(shading, 0.2, 4)  # + a grid of 20 % of its RMS variation
    s, share, offdc = flat_measures(face_like)
    assert s == pytest.approx(checkerboard_score(face_like).score) and 0 < share < offdc < 1
    assert share == pytest.approx(s**2 * offdc, rel=1e-9)
