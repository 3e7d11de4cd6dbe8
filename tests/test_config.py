"""params.yaml is loaded through one validated schema; bad values name key, value and what is allowed."""

from __future__ import annotations

import pytest
import yaml

from faceswap.config import ConfigError, load_params, parse_params
from tests.conftest import REPO


def test_repository_params_load():
    p = load_params(REPO / "params.yaml")
    assert p.base.image_size in (64, 128, 256, 512, 1024)
    assert set(p.model.variants) <= {"convtranspose", "resize_nearest", "resize_bilinear", "pixelshuffle",
                                     "pixelshuffle_icnr"}


@pytest.mark.parametrize(
    ("raw", "needles"),
    [
        ({"base": {"image_size": 100}}, ["base.image_size", "100", "power of two"]),
        ({"model": {"variants": ["convtranspose", "bicubic"]}}, ["model.variants", "bicubic", "resize_nearest"]),
        ({"model": {"width": -1}}, ["model.width", "-1", "greater than or equal to 4"]),
        ({"model": {"widht": 8}}, ["model.widht", "unknown key"]),
        ({"metrics": {"checkerboard": {"periods": [3]}}}, ["metrics.checkerboard.periods", "powers of two"]),
    ],
)
def test_bad_values_are_named(raw, needles):
    with pytest.raises(ConfigError) as err:
        parse_params(raw, "params.yaml")
    for needle in needles:
        assert needle in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_overrides_round_trip(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["model"]["encoder_stages"] = 4
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(raw))
    assert load_params(f).model.encoder_stages == 4
