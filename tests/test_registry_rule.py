"""The selection rule on planted metric tables, the champion comparison, and the new params sections."""

from __future__ import annotations

import pytest

from faceswap.config import ConfigError, RegisterParams, parse_params
from faceswap.evaluation.record import MetricView
from faceswap.names import EVAL_METRICS, RANKABLE, direction
from faceswap.registry import Candidate, beats, check_rule, select, summary_table


def cand(name: str, lpips: float, cycle: float = 0.3, swap_excess: float = 0.0, ci: float | None = None,
         **extra) -> Candidate:
    """A candidate with planted means; ``ci`` gives recon_lpips a 95% interval of ± ci."""
    metrics = {"recon_lpips": lpips, "cycle_lpips": cycle, "swap_checkerboard_excess": swap_excess, **extra}
    est = {} if ci is None else {"recon_lpips": {"mean": lpips, "ci_lo": lpips - ci, "ci_hi": lpips + ci}}
    return Candidate(name, MetricView(metrics, est))


RULE = RegisterParams(gates={"swap_checkerboard_excess": 0.05}, prefer=("swap_checkerboard_excess", "cycle_lpips"),
                      fallback=False)


def test_best_primary_among_qualifying_wins_and_every_loser_is_explained():
    cs = [cand("convtranspose", 0.10, swap_excess=0.30, ci=0.01), cand("resize_nearest", 0.20, ci=0.01),
          cand("pixelshuffle", 0.15, ci=0.01)]
    win, reason = select(cs, RULE)
    assert win.variant == "pixelshuffle"
    assert "pixelshuffle won: recon_lpips 0.1500 [0.1400, 0.1600]" in reason and "2 of 3 qualify" in reason
    by = {c.variant: c for c in cs}
    assert not by["convtranspose"].qualifies and by["convtranspose"].rank is None
    assert "swap_checkerboard_excess 0.3000 fails ≤ 0.05" in by["convtranspose"].note
    assert (by["pixelshuffle"].rank, by["resize_nearest"].rank) == (1, 2)
    assert "worse than pixelshuffle's" in by["resize_nearest"].note and "beyond the CIs" in by["resize_nearest"].note


def test_overlapping_intervals_are_a_tie_decided_by_the_declared_preference():
    cs = [cand("resize_nearest", 0.200, swap_excess=0.03, ci=0.02), cand("resize_bilinear", 0.210, swap_excess=0.01,
                                                                          ci=0.02),
          cand("pixelshuffle_icnr", 0.300, swap_excess=0.0, ci=0.02)]
    win, reason = select(cs, RULE)
    # nearest has the better mean, but bilinear's CI overlaps it: the lower grid score decides; icnr is out
    assert win.variant == "resize_bilinear"
    assert "overlaps resize_nearest" in reason and "decided by lowest swap_checkerboard_excess" in reason
    by = {c.variant: c for c in cs}
    assert "tied with resize_bilinear" in by["resize_nearest"].note and by["pixelshuffle_icnr"].rank == 3
    # the same means with narrow intervals: no tie, the better mean wins
    narrow = [cand("resize_nearest", 0.200, swap_excess=0.03, ci=0.001),
              cand("resize_bilinear", 0.210, swap_excess=0.01, ci=0.001)]
    assert select(narrow, RULE)[0].variant == "resize_nearest"
    exact = [cand("b_variant", 0.2), cand("a_variant", 0.2)]
    assert select(exact, RULE)[0].variant == "a_variant"  # full tie: deterministic by name


def test_no_variant_qualifies_registers_nothing_unless_fallback():
    cs = [cand("convtranspose", 0.1, swap_excess=0.5), cand("pixelshuffle", 0.2, swap_excess=0.2)]
    win, reason = select(cs, RULE)
    assert win is None
    assert "no variant qualifies" in reason and "nothing registered" in reason and "fallback" in reason
    win, reason = select(cs, RULE.model_copy(update={"fallback": True}))
    assert win.variant == "convtranspose" and "FALLBACK" in reason and "(0 of 2 qualify)" in reason
    assert win.note.startswith("winner, although it fails: the swaps carry a checkerboard grid: "
                               "swap_checkerboard_excess 0.5000")


def test_fallback_picks_among_the_nearest_to_qualifying():
    """Where nothing passes, the fallback is the best primary among the variants that fail the fewest gates: a
    gridded decoder with the best reconstruction does not beat a grid-free one that misses only the verdict."""
    rule = RegisterParams(gates={"swap_checkerboard_excess": 0.05, "swap_identity_verified_a2b": 0.8},
                          prefer=("swap_checkerboard_excess",), fallback=True)
    cs = [cand("convtranspose", 0.1, swap_excess=0.5, swap_identity_verified_a2b=0.0),
          cand("resize_nearest", 0.3, swap_excess=0.0, swap_identity_verified_a2b=0.1),
          cand("resize_bilinear", 0.4, swap_excess=0.0, swap_identity_verified_a2b=0.0)]
    win, reason = select(cs, rule)
    assert win.variant == "resize_nearest" and "fail the fewest, 1 of 2" in reason
    assert cs[0].rank is None and "swap_checkerboard_excess 0.5000 fails" in cs[0].note
    assert cs[2].rank == 2 and cs[2].note.startswith("the swaps are not verified as their target (a→b): "
                                                     "swap_identity_verified_a2b 0.0000 fails")


def test_the_default_rule_gates_on_the_swap_instruments_in_both_directions():
    """The repository's rule: a clean grid; swaps retrieved as their target at their own sharpness, varying with
    their source, changing where it changes and following its mouth, each in both directions; reconstructions at
    the bar (thresholds from the instruments' validation on real crops: params.yaml, docs/metrics.md)."""
    from faceswap.config import load_params
    from tests.conftest import REPO

    gates = load_params(REPO / "params.yaml").registry.gates
    for d in ("a2b", "b2a"):
        assert gates[f"swap_identity_retrieved_{d}"] == pytest.approx(0.8)
        assert gates[f"swap_collapse_{d}"] == pytest.approx(0.5)
        assert gates[f"swap_follow_structure_{d}"] == pytest.approx(0.6)
        assert gates[f"swap_follow_mouth_{d}"] == pytest.approx(0.5)
    assert gates["recon_psnr_a"] == gates["recon_psnr_b"] == pytest.approx(25.0)
    assert gates == RegisterParams().gates


#: the instruments of one direction pair, as measured on the real pair (bench/swap_instruments.py): the demo's
#: recipe (structure 0.80-0.86) and a masked, colour-matched one; a collapsed decoder (the target's mean face)
SWAPS = {
    "follows": dict(swap_identity_retrieved_a2b=0.95, swap_identity_retrieved_b2a=0.9, swap_collapse_a2b=0.64,
                    swap_collapse_b2a=0.83, swap_follow_structure_a2b=0.97, swap_follow_structure_b2a=0.97,
                    swap_follow_mouth_a2b=0.55, swap_follow_mouth_b2a=0.69, recon_psnr_a=26.0, recon_psnr_b=27.0),
    "mean_face": dict(swap_identity_retrieved_a2b=1.0, swap_identity_retrieved_b2a=1.0, swap_collapse_a2b=0.0,
                      swap_collapse_b2a=0.0, swap_follow_structure_a2b=0.0, swap_follow_structure_b2a=0.0,
                      swap_follow_mouth_a2b=0.0, swap_follow_mouth_b2a=0.0, recon_psnr_a=28.0, recon_psnr_b=28.0),
    "smear": dict(swap_identity_retrieved_a2b=0.2, swap_identity_retrieved_b2a=0.6, swap_collapse_a2b=0.49,
                  swap_collapse_b2a=1.17, swap_follow_structure_a2b=0.80, swap_follow_structure_b2a=0.86,
                  swap_follow_mouth_a2b=0.34, swap_follow_mouth_b2a=0.28, recon_psnr_a=26.0, recon_psnr_b=27.5),
}


def test_the_default_gates_pass_a_swap_that_follows_and_say_in_words_why_the_others_fail():
    rule = RegisterParams()
    cs = [cand(name, 0.1 + 0.01 * k, **m) for k, (name, m) in enumerate(SWAPS.items())]
    win, _ = select(cs, rule)
    by = {c.variant: c for c in cs}
    assert win.variant == "follows" and by["follows"].qualifies
    # the target's mean face passes identity and fails collapse, structure and mouth, in both directions
    assert "recognised" not in by["mean_face"].note
    for words in ("collapse towards one image for every source (a→b)", "collapse towards one image for every "
                  "source (b→a)", "do not change where their sources change", "do not follow their source's mouth"):
        assert words in by["mean_face"].note
    assert "the swaps are not recognised as their target, even at their own sharpness (a→b)" in by["smear"].note
    assert "swap_collapse_b2a" not in by["smear"].note  # a smear that varies passes collapse ...
    assert "swap_follow_mouth_b2a 0.2800 fails ≥ 0.5" in by["smear"].note  # ... and fails on following


def test_every_gate_must_hold_in_its_own_direction():
    rule = RegisterParams(gates={"swap_checkerboard_excess": 0.05, "recon_psnr": 24.0},
                          prefer=("swap_checkerboard_excess",))
    cs = [cand("sharp", 0.1, recon_psnr=25.0), cand("blurry", 0.05, recon_psnr=20.0), cand("unknown", 0.01)]
    win, _ = select(cs, rule)
    assert win.variant == "sharp"
    by = {c.variant: c for c in cs}
    assert "recon_psnr 20.0000 fails ≥ 24" in by["blurry"].note
    assert "recon_psnr missing" in by["unknown"].note


def test_missing_metric_ranks_last_and_higher_is_better_metrics_rank_the_other_way():
    cs = [cand("a", 0.1, cycle=0.2), Candidate("b", MetricView({"swap_checkerboard_excess": 0.0, "cycle_lpips": 0.1}))]
    assert select(cs, RULE)[0].variant == "a"
    psnr_rule = RULE.model_copy(update={"primary": "recon_psnr"})
    cs = [cand("lo", 0.1, recon_psnr=20.0), cand("hi", 0.2, recon_psnr=25.0)]
    assert select(cs, psnr_rule)[0].variant == "hi"


def test_beats_champion_only_when_better_by_the_same_rule():
    champ = cand("champ", 0.20, swap_excess=0.02, ci=0.005)
    worse = cand("new", 0.25, swap_excess=0.02, ci=0.005)
    better = cand("new", 0.15, swap_excess=0.02, ci=0.005)
    tied_cleaner = cand("new", 0.203, swap_excess=0.01, ci=0.005)
    equal = cand("new", 0.20, swap_excess=0.02, ci=0.005)
    gridded = cand("new", 0.05, swap_excess=0.3, ci=0.005)
    assert beats(worse, champ, RULE)[0] is False
    assert beats(better, champ, RULE)[0] is True
    ok, why = beats(tied_cleaner, champ, RULE)
    assert ok is True and "overlapping CIs" in why
    ok, why = beats(equal, champ, RULE)
    assert ok is False and "champion stays" in why
    ok, why = beats(gridded, champ, RULE)
    assert ok is False and "only the champion passes" in why


def test_summary_table_lists_every_variant_with_directions():
    cs = [cand("convtranspose", 0.1, swap_excess=0.3), cand("resize_nearest", 0.2, ci=0.01)]
    select(cs, RULE)
    table = summary_table(cs, "resize_nearest")
    assert "**resize_nearest**" in table and "convtranspose" in table and "recon LPIPS ↓" in table
    assert table.count("\n") == 3
    assert "0.200 [0.190, 0.210]" in table  # mean [95% CI] where the evaluation has one


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
                      "register": {"model_name": "a b"}})
    msg = str(err.value)
    for needle in ("evaluate.device", "evaluate.max_faces", "evaluate.colour: unknown key", "register.model_name"):
        assert needle in msg, needle


@pytest.mark.parametrize(("section", "key"), [({"primary": "accuracy"}, "register.primary"),
                                              ({"gates": {"colour": 1.0}}, "register.gates"),
                                              ({"prefer": ["recon_lpips", "faces_a"]}, "register.prefer")])
def test_the_rules_metrics_are_checked_by_the_register_stage(section, key):
    """Loading params does not read the metric catalogue (only evaluate and register depend on it); the register
    stage checks every metric its rule names before it reads a record, and lists the valid ones."""
    p = parse_params({"register": section})
    check_rule(parse_params({}).registry)
    with pytest.raises(ConfigError) as err:
        check_rule(p.registry)
    assert str(err.value).startswith(key) and "lower- or higher-is-better" in str(err.value)
    assert "recon_lpips" in str(err.value)


def test_repository_params_load():
    from faceswap.config import load_params

    from .conftest import REPO

    p = load_params(REPO / "params.yaml")
    assert len(p.registry.gates) >= 1 and len(p.registry.prefer) >= 1
    assert p.evaluate.lpips_net == "alex" and len(p.train.seeds) >= 1


def test_the_quality_table_marks_each_bar_a_variant_reaches():
    from faceswap.registry import quality_table

    good = cand("sharp", 0.1, recon_psnr_a=26.0, recon_psnr_b=24.9, recon_ssim_a=0.81, recon_ssim_b=0.80,
                swap_identity_retrieved_a2b=0.95, swap_identity_retrieved_b2a=0.5, swap_collapse_a2b=0.5,
                swap_collapse_b2a=0.49, swap_follow_mouth_a2b=0.6, swap_follow_mouth_b2a=0.1,
                swap_identity_verified_a2b=0.9, swap_identity_verified_b2a=0.0, recon_expression_corr=0.7)
    table = quality_table([good, cand("bare", 0.2)])
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")]
                                          for line in table.splitlines())}  # cells, whatever the padding
    assert " | ".join(rows["sharp"]) == ("sharp | 26.0 ✓ | 24.9 | 0.810 ✓ | 0.800 ✓ | 0.95 ✓ | 0.50 | 0.50 ✓ | 0.49 | "
                                         "0.60 ✓ | 0.10 | 0.90 ✓ | 0.00 | 0.70")
    assert rows["bare"] == ["bare", *["–"] * 13]
    assert "retrieved a→b (≥ 0.9)" in table and "verified a→b (≥ 0.5)" in table


def test_the_default_gates_on_the_real_pairs_ablation_records_read_as_the_pictures_do():
    """The committed evaluation records of the recipe ablation (docs/results.md §5a, real pair, two seeds): the plain
    recipe fails identity b→a and following; the autoencoder that collapsed (code MMD) fails reconstruction and
    structure although its blobs are "retrieved"; the masked, colour-matched recipe fails the fewest gates."""
    import json

    from faceswap.registry import gate_failures
    from tests.conftest import REPO

    records = json.loads((REPO / "docs" / "bench" / "recipe_ablation" / "records-64.json").read_text())
    fails = {arm: gate_failures(r["metrics"], RegisterParams()) for arm, r in records.items()}
    said = {arm: "; ".join(f) for arm, f in fails.items()}
    assert "swap_identity_retrieved_b2a" in said["baseline"] and "swap_follow_mouth_b2a" in said["baseline"]
    assert "recon_psnr_a" in said["mmd"] and "swap_follow_structure_a2b" in said["mmd"]
    assert records["mmd"]["metrics"]["swap_identity_retrieved_a2b"] == 1.0  # identity alone would have passed it
    assert len(fails["mask+colour"]) == min(len(f) for f in fails.values())
    assert len(fails["mask+colour"]) < len(fails["baseline"]) < len(fails["mmd"])
