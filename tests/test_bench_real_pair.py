"""bench/real_pair_scale.py: its runs are the pipeline's own train and evaluate with a few overrides, each in its
own folder; the parsing and the params it writes are checked here (a run itself trains for minutes)."""

from __future__ import annotations

import pytest
import yaml

from faceswap.config import parse_params
from tests.conftest import REPO, bench_module


def _bench():
    return bench_module("real_pair_scale")


def test_a_run_spec_becomes_valid_params_in_its_own_folder():
    bench = _bench()
    run = bench.parse_run("steps=4000,width=32,lpips=0.1")
    assert run == {"steps": 4000, "width": 32, "lpips": 0.1}
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    folder = REPO / "bench" / "results" / "real_pair_scale" / "x"
    p = parse_params(bench.run_params(base, run, "resize_nearest", folder, 64))
    assert (p.train.steps, p.model.width, p.train.loss.lpips_weight) == (4000, 32, 0.1)
    assert p.model.variants == ("resize_nearest",) and p.train.seeds == (0,) and p.evaluate.max_faces == 64
    assert not p.train.mlflow and not p.evaluate.mlflow
    for key in ("models", "train_metrics", "train_curves", "evaluations", "pictures", "variant_metrics"):
        assert str(getattr(p.paths, key)).startswith("bench/results/real_pair_scale/x"), key
    assert p.paths.accepted == base["paths"]["accepted"] and p.paths.identity == base["paths"]["identity"]
    assert base["train"]["steps"] == 1000  # the repository's params are not touched


@pytest.mark.parametrize("spec", ["steps=many", "depth=3", "steps"])
def test_a_bad_run_spec_is_refused_with_the_keys(spec):
    with pytest.raises(SystemExit, match="expected key=number"):
        _bench().parse_run(spec)
