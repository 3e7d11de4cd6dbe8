"""params.yaml is loaded through one validated schema; bad values name key, value and what is allowed."""

from __future__ import annotations

import re

import pytest
import yaml

from faceswap.config import ConfigError, load_params, parse_params
from tests.conftest import REPO


def test_repository_params_load():
    p = load_params(REPO / "params.yaml")
    assert p.base.image_size in (64, 128, 256, 512, 1024)
    from faceswap.model import UPSAMPLERS

    assert set(p.model.variants) <= set(UPSAMPLERS)  # the registry is the only list of names


@pytest.mark.parametrize(
    ("raw", "needles"),
    [
        ({"base": {"image_size": 100}}, ["base.image_size", "100", "power of two"]),
        ({"model": {"variants": ["convtranspose", "convtranspose"]}}, ["model.variants", "distinct"]),
        ({"model": {"variants": []}}, ["model.variants", "at least 1"]),
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


def _leaves(node: object, prefix: str = "") -> dict[str, object]:
    if not isinstance(node, dict):
        return {prefix.rstrip("."): node}
    return {k: v for key, sub in node.items() for k, v in _leaves(sub, f"{prefix}{key}.").items()}


def test_params_yaml_and_the_code_defaults_are_one_contract():
    """Every key of params.yaml exists in the schema with the same default, and the schema has no key it lacks."""
    from faceswap.config import Params

    # the paths have no default in code (next test); which registered variants to train is params.yaml's choice
    # alone (the code's default trains one), so adding a variant is its class and one line of params.yaml
    own = ("paths.", "model.variants")
    in_file = {k: v for k, v in _leaves(yaml.safe_load((REPO / "params.yaml").read_text())).items()
               if not k.startswith(own)}
    in_code = {k: v for k, v in _leaves(Params().model_dump(by_alias=True, mode="json", exclude={"where"})).items()
               if not k.startswith(own)}
    drift = [f"{k}: params.yaml {in_file.get(k, '<absent>')!r}, config.py default {in_code.get(k, '<absent>')!r}"
             for k in sorted(in_file.keys() | in_code.keys())
             if k not in in_file or k not in in_code or in_file[k] != in_code[k]]
    assert not drift, "params.yaml and the defaults in src/faceswap/config.py differ:\n" + "\n".join(drift)


def test_every_path_is_stated_in_params_yaml_only():
    """The code holds no default path: each ``paths`` key is required, params.yaml states all of them, a file
    without the section says so when a stage asks for it, and a missing key is named."""
    from faceswap.config import Params, PathsParams

    stated = yaml.safe_load((REPO / "params.yaml").read_text())["paths"]
    assert set(stated) == set(PathsParams.model_fields)
    assert all(f.is_required() for f in PathsParams.model_fields.values())
    assert load_params(REPO / "params.yaml").paths.model_dump() == stated
    with pytest.raises(ConfigError, match="no `paths:` section"):
        Params().paths  # noqa: B018 — the access is the test
    partial = {k: v for k, v in stated.items() if k != "accepted"}
    with pytest.raises(ConfigError, match=r"paths\.accepted: missing"):
        parse_params({"paths": partial})


def test_a_cross_key_rule_is_one_line_naming_the_key():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["warmup_steps"], raw["train"]["steps"] = 20, 20
    with pytest.raises(ConfigError) as err:
        parse_params(raw, "params.yaml")
    assert str(err.value) == "params.yaml: train.warmup_steps (20) must be smaller than steps (20)"
    with pytest.raises(ConfigError) as err:
        parse_params({"base": {"image_size": 100}, "validate": {"min_brightness": 200, "max_brightness": 100}},
                     "params.yaml")
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("params.yaml: base.image_size = 100: must be a power of two")
    assert "; validate.min_brightness (200) must be below max_brightness (100)" in str(err.value)


def test_the_default_is_the_real_pair_and_the_portraits_profile_is_a_valid_override(monkeypatch):
    """params.yaml runs the real pair (sampled over whole clips, held out at four moments: the auto rules resolve to
    every 4th frame and four blocks on it, tests/test_split.py); `dvc exp run $(faceswap profile portraits)` goes
    back to the offline synthetic demo, and the merged params validate."""
    from typer.testing import CliRunner

    from faceswap.cli import app

    p = load_params(REPO / "params.yaml")
    assert (p.data.demo.source, p.extract.every, p.extract.max_frames, p.split.blocks) == (
        "talking-heads", "auto", None, "auto")
    monkeypatch.chdir(REPO)
    res = CliRunner().invoke(app, ["profile", "portraits"])
    assert res.exit_code == 0, res.output
    assert res.output.split() == ["-S", "data.demo.source=portraits", "-S", "extract.every=2",
                                  "-S", "extract.max_frames=500", "-S", "split.blocks=1"]


@pytest.mark.parametrize(("cron", "why"), [("every night", "wrong number of fields"), ("0 3 * * * *", "wrong number"),
                                           ("61 3 * * *", "bad minute"), ("0 25 * * *", "bad hour")])
def test_a_cron_expression_is_parsed_not_just_counted(cron, why):
    with pytest.raises(ConfigError, match=rf"flow\.schedule\.cron = '{re.escape(cron)}': must be a five-field .*{why}"):
        parse_params({"flow": {"schedule": {"cron": cron}}})
    assert parse_params({"flow": {"schedule": {"cron": " 0  3 * * MON-FRI"}}}).flow.schedule.cron == "0 3 * * MON-FRI"
