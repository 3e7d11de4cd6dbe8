"""The selection rule on planted metric tables, the champion comparison, and the new params sections."""

from __future__ import annotations

import pytest

from faceswap.config import ConfigError, RegisterParams, parse_params
from faceswap.metrics.catalog import EVAL_METRICS, RANKABLE, direction
from faceswap.registry import Candidate, beats, select, summary_table


def cand(name: str, lpips: float, cycle: float = 0.3, swap_excess: float = 0.0, **extra) -> Candidate:
    return Candidate(name, {"recon_lpips": lpips, "cycle_lpips": cycle, "swap_checkerboard_excess": swap_excess,
                            **extra})


RULE = RegisterParams()  # gate swap_checkerboard_excess ≤ 0.05, lowest recon_lpips, tie 0.002 → cycle_lpips


def test_lowest_lpips_among_qualifying_wins():
    cs = [cand("convtranspose", 0.10, swap_excess=0.30), cand("resize_nearest", 0.20), cand("pixelshuffle", 0.15)]
    win, reason = select(cs, RULE)
    assert win.variant == "pixelshuffle"
    assert "lowest recon_lpips" in reason and "2 qualifying of 3" in reason
    by = {c.variant: c for c in cs}
    assert not by["convtranspose"].qualifies and by["convtranspose"].rank is None
    assert "swap_checkerboard_excess 0.3000 > 0.05" in by["convtranspose"].note
    assert (by["pixelshuffle"].rank, by["resize_nearest"].rank) == (1, 2)


def test_tie_within_tolerance_is_broken_by_cycle_consistency():
    cs = [cand("resize_nearest", 0.2000, cycle=0.40), cand("resize_bilinear", 0.2015, cycle=0.30),
          cand("pixelshuffle_icnr", 0.2100, cycle=0.10)]
    win, reason = select(cs, RULE)
    assert win.variant == "resize_bilinear"  # tied on LPIPS (Δ 0.0015 ≤ 0.002), better cycle; icnr is not tied
    assert "tied within 0.002 with resize_nearest" in reason
    exact = [cand("b_variant", 0.2, cycle=0.3), cand("a_variant", 0.2, cycle=0.3)]
    assert select(exact, RULE)[0].variant == "a_variant"  # full tie: deterministic by name


def test_no_variant_qualifies_registers_nothing_unless_fallback():
    cs = [cand("convtranspose", 0.1, swap_excess=0.5), cand("pixelshuffle", 0.2, swap_excess=0.2)]
    win, reason = select(cs, RULE)
    assert win is None
    assert "no variant qualifies" in reason and "nothing registered" in reason and "fallback" in reason
    win, reason = select(cs, RegisterParams(fallback=True))
    assert win.variant == "convtranspose" and "FALLBACK" in reason


def test_missing_metric_ranks_last_and_higher_is_better_metrics_rank_the_other_way():
    cs = [cand("a", 0.1, cycle=0.2), Candidate("b", {"swap_checkerboard_excess": 0.0, "cycle_lpips": 0.1})]
    assert select(cs, RULE)[0].variant == "a"
    psnr_rule = RegisterParams(primary="recon_psnr")
    cs = [cand("lo", 0.1, recon_psnr=20.0), cand("hi", 0.2, recon_psnr=25.0)]
    assert select(cs, psnr_rule)[0].variant == "hi"


def test_beats_champion_only_when_better_by_the_same_rule():
    champ = {"recon_lpips": 0.20, "cycle_lpips": 0.30, "swap_checkerboard_excess": 0.01}
    worse = {**champ, "recon_lpips": 0.25}
    better = {**champ, "recon_lpips": 0.15}
    tied_better_cycle = {**champ, "recon_lpips": 0.201, "cycle_lpips": 0.2}
    equal = dict(champ)
    gridded = {**champ, "recon_lpips": 0.05, "swap_checkerboard_excess": 0.3}
    assert beats(worse, champ, RULE)[0] is False
    assert beats(better, champ, RULE)[0] is True
    assert beats(tied_better_cycle, champ, RULE)[0] is True
    ok, why = beats(equal, champ, RULE)
    assert ok is False and "champion stays" in why
    ok, why = beats(gridded, champ, RULE)
    assert ok is False and "only the champion passes" in why


def test_summary_table_lists_every_variant_with_directions():
    cs = [cand("convtranspose", 0.1, swap_excess=0.3), cand("resize_nearest", 0.2)]
    select(cs, RULE)
    table = summary_table(cs, "resize_nearest")
    assert "**resize_nearest**" in table and "convtranspose" in table and "recon LPIPS ↓" in table
    assert table.count("\n") == 3


def test_catalogue_directions():
    assert direction("recon_lpips") == "lower" and direction("recon_ssim") == "higher"
    assert "faces_a" not in RANKABLE and set(RANKABLE) < set(EVAL_METRICS)
    with pytest.raises(KeyError, match="unknown metric"):
        direction("accuracy")


def test_params_sections_validate_with_clear_errors():
    p = parse_params({})
    assert p.evaluate.lpips_net == "alex" and p.registry.model_name == "faceswap"
    with pytest.raises(ConfigError) as err:
        parse_params({"evaluate": {"device": "tpu", "max_faces": 1, "colour": 1},
                      "register": {"primary": "accuracy", "gate_metric": "recon_psnr", "model_name": "a b"}})
    msg = str(err.value)
    for needle in ("evaluate.device", "evaluate.max_faces", "evaluate.colour: unknown key", "register.primary",
                   "register.gate_metric", "lower-is-better", "register.model_name"):
        assert needle in msg, needle


def test_repository_params_load():
    from faceswap.config import load_params

    from .conftest import REPO

    p = load_params(REPO / "params.yaml")
    assert p.registry.gate_metric == "swap_checkerboard_excess" and p.evaluate.lpips_net == "alex"
