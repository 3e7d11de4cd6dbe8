"""The register rule on the grid experiment's own evaluations (issue #22; docs/results.md §3b).

The records under docs/bench/grid128/<cell>/ are the evaluation records of the 128² cells (bench/grid_experiment.sh,
read back by bench/grid_report.py, per-image arrays dropped): real models trained by the pipeline, evaluated by
its evaluate stage. Where a regime grows a grid, the project's rule (params.yaml ``register``) must fail the
gridded variants there, and not the grid-free ones; where none grows, the grid cannot be what decides.
"""

from __future__ import annotations

import json

import pytest

from faceswap.config import load_params
from faceswap.evaluation.record import EvaluationRecord
from faceswap.registry import GRID_SCORE as GATE
from faceswap.registry import Candidate, RegisterRecord, caveats, gate_failures, select
from tests.conftest import REPO

GRID = REPO / "docs" / "bench" / "grid128"
RULE = load_params(REPO / "params.yaml").registry


def candidates(cell: str) -> dict[str, Candidate]:
    files = sorted((GRID / cell).glob("*.json"))
    assert files, f"no evaluation records under {GRID / cell}: run bench/grid_report.py"
    return {f.stem: Candidate.of(EvaluationRecord.from_json(json.loads(f.read_text()), str(f))) for f in files}


def grid_fails(c: Candidate) -> bool:
    return any(f"{GATE} " in f for f in gate_failures(c.metrics, RULE))


def test_the_rule_gates_on_the_grid_score_this_experiment_validated():
    assert GATE in RULE.gates and RULE.gates[GATE] == pytest.approx(0.03)


def test_where_the_loss_grows_a_grid_the_gate_fails_the_gridded_decoder_and_only_it():
    by = candidates("grid-positive")
    ct, rn = by["convtranspose"], by["resize_nearest"]
    # the regime shows a grid in convtranspose's swaps, and the flat-field probe (no face texture) agrees
    assert ct.metrics[GATE] > RULE.gates[GATE] and ct.view.interval(GATE)[0] > RULE.gates[GATE]
    assert ct.metrics["flat_grid_score"] > 0.1 > rn.metrics["flat_grid_score"]
    assert grid_fails(ct)
    assert not grid_fails(rn)
    win, reason = select(list(by.values()), RULE)
    assert win is None or win.variant != "convtranspose", reason
    assert "swap_checkerboard_excess" in ct.note and "fails" in ct.note


def test_without_a_perceptual_term_no_swap_grid_reaches_the_gate():
    """The null of the pixel-only cell: every decoder's swaps stay under the gate, so the grid cannot decide
    there, while the flat-field probe still sees the lattice convtranspose and pixelshuffle carry."""
    by = candidates("grid-pixel")
    assert len(by) == 5
    assert not any(grid_fails(c) for c in by.values())
    for v in ("convtranspose", "pixelshuffle"):
        assert by[v].metrics["flat_grid_score"] > 0.05, v
    for v in ("resize_nearest", "resize_bilinear"):
        assert by[v].metrics["flat_grid_score"] < 0.01, v


def test_the_register_says_what_its_choice_does_not_show():
    """No swap of this experiment is verified as its target, so every champion carries that caveat; the grid
    caveat appears where no variant reaches the gate (pixel cell) and not where the gate decided (positive)."""
    for cell, grid_caveat in (("grid-pixel", True), ("grid-positive", False)):
        cands = list(candidates(cell).values())
        win, _ = select(cands, RULE)
        said = caveats(cands, win, RULE)
        assert any("not verified as their target" in s and win.variant in s for s in said), (cell, said)
        assert any("did not separate the variants" in s for s in said) is grid_caveat, (cell, said)


def test_caveats_survive_the_register_record_round_trip():
    rec = RegisterRecord(model_name="faceswap", rule="r", reason="x", candidates=(), caveats=("a", "b"))
    assert RegisterRecord.from_json(json.loads(json.dumps(rec.to_json()))).caveats == ("a", "b")
    assert RegisterRecord.from_json({"model_name": "m", "rule": "r", "reason": "x"}).caveats == ()
