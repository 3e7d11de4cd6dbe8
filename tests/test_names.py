"""Every name list is defined once: decoder variants by their registry, detectors and swap directions by one tuple.

The CLI choices, the train stage's check of params and the code that builds the thing all read the same list, and
adding a decoder variant is one registered class (plus its name in params.yaml ``model.variants``).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from faceswap.cli import app
from faceswap.config import DETECTORS, ConfigError, parse_params
from faceswap.model import UPSAMPLERS, FaceSwapAutoencoder, ModelConfig, upsampler
from faceswap.stages.train import check_variants
from tests.conftest import REPO

PARAMS = str(REPO / "params.yaml")


def test_decoder_variants_are_the_registry_everywhere():
    names = tuple(UPSAMPLERS)
    assert {"convtranspose", "resize_nearest", "pixelshuffle_icnr"} <= set(names)
    for name in names:
        check_variants(parse_params({"model": {"variants": [name]}}))
    # loading params does not know the names (the data stages must not depend on the registry) ...
    p = parse_params({"model": {"variants": ["resize_nearest", "bicubic"]}})
    # ... the train stage does, and says which are valid
    with pytest.raises(ConfigError, match=f"model.variants: unknown variant 'bicubic'; valid: {', '.join(names)}"):
        check_variants(p)
    for command in ("train", "evaluate"):
        r = CliRunner().invoke(app, [command, "--variant", "bicubic", "--params", PARAMS])
        assert r.exit_code == 2 and f"unknown variant 'bicubic'; valid: {', '.join(names)}" in r.stderr
    r = CliRunner().invoke(app, ["model-info", "--decoder", "bicubic", "--params", PARAMS])
    assert r.exit_code == 2 and f"valid: {', '.join(names)}" in r.stderr


def test_detector_names_and_swap_directions_are_one_tuple_each():
    from faceswap.data import detect
    from faceswap.serving import pyfunc, swapper

    assert detect.DETECTORS is DETECTORS
    assert pyfunc.DIRECTIONS is swapper.DIRECTIONS
    for name in DETECTORS:
        assert parse_params({"align": {"detector": name}}).align.detector == name
    with pytest.raises(detect.DetectorError, match=", ".join(DETECTORS)):
        detect.create_detector("dlib")
    r = CliRunner().invoke(app, ["align", "frames", "--detector", "dlib", "--params", PARAMS])
    assert r.exit_code == 2 and f"must be one of {', '.join(DETECTORS)}" in r.stderr
    r = CliRunner().invoke(app, ["swap", "in.png", "-o", "out.png", "--direction", "a2c", "--params", PARAMS])
    assert r.exit_code == 2 and "'a2c' is not one of" in r.stderr
    assert all(f"'{d}'" in r.stderr for d in swapper.DIRECTIONS)


@pytest.fixture
def registry_snapshot():
    before = dict(UPSAMPLERS)
    yield
    UPSAMPLERS.clear()
    UPSAMPLERS.update(before)


def test_a_new_variant_is_one_registered_class(registry_snapshot):
    p = parse_params({"model": {"variants": ["resize_nearest", "nearest_depthwise"]}})
    with pytest.raises(ConfigError, match="unknown variant 'nearest_depthwise'"):
        check_variants(p)

    @upsampler("nearest_depthwise")
    class NearestDepthwiseUp(nn.Sequential):
        """Nearest ×2, then a depthwise 3×3 and a pointwise conv: a variant written only in this test."""

        def __init__(self, in_channels: int, out_channels: int, *, first: bool = False) -> None:
            super().__init__(
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(in_channels, in_channels, 3, padding=2 if first else 1, groups=in_channels),
                nn.Conv2d(in_channels, out_channels, 1),
                nn.BatchNorm2d(out_channels),
                nn.LeakyReLU(0.1),
            )

    check_variants(p)  # registered: nothing else to list it in
    assert p.model.variants == ("resize_nearest", "nearest_depthwise")
    model = FaceSwapAutoencoder(ModelConfig(image_size=64, width=4, bottleneck_channels=16,
                                            decoder="nearest_depthwise")).eval()
    assert all(isinstance(m, NearestDepthwiseUp) for m in model.decoders["b"].ups)
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 64), "b").shape == (2, 3, 64, 64)
    r = CliRunner().invoke(app, ["model-info", "--decoder", "nearest_depthwise", "--params", PARAMS])
    assert r.exit_code == 0 and "decoder=nearest_depthwise" in r.stdout
    with pytest.raises(ValueError, match="already registered"):
        upsampler("nearest_depthwise")(nn.Identity)
