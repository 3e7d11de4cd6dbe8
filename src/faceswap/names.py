"""The project's metric vocabulary: every evaluation metric with its direction.

A torch-free table for the stages that measure and rank: the evaluation writes only metrics named in
``EVAL_METRICS``; the registry ranks by ``direction()`` and checks the register rule's metric names against
``RANKABLE`` when it runs. Loading params.yaml does not read it, so only evaluate and register depend on it.
(Decoder variant names are the registry's in faceswap/model/blocks.py.) ``docs/metrics.md`` defines each metric
in full.
"""

from __future__ import annotations

# Swap directions (serving, `faceswap swap --direction`) and the LPIPS backbones whose weights the project prepares
# (metrics.lpips_weights, `faceswap lpips --net`): here so the command line offers them without importing numpy.
DIRECTIONS: tuple[str, ...] = ("a2b", "b2a")
LPIPS_NETS: tuple[str, ...] = ("alex", "vgg")

LOWER, HIGHER, INFO = "lower", "higher", "info"

# name → (direction, meaning). Suffixes _a/_b: per identity; _a2b/_b2a: per swap direction.
EVAL_METRICS: dict[str, tuple[str, str]] = {
    "recon_lpips": (LOWER, "LPIPS-alex between held-out faces and their reconstructions (mean of a, b)"),
    "recon_lpips_a": (LOWER, "recon_lpips for identity a"),
    "recon_lpips_b": (LOWER, "recon_lpips for identity b"),
    "recon_psnr": (HIGHER, "PSNR (dB, [0, 1] range) of reconstructions (mean of a, b)"),
    "recon_psnr_a": (HIGHER, "recon_psnr for identity a"),
    "recon_psnr_b": (HIGHER, "recon_psnr for identity b"),
    "recon_ssim": (HIGHER, "SSIM (Gaussian 11×11, σ 1.5) of reconstructions (mean of a, b)"),
    "recon_ssim_a": (HIGHER, "recon_ssim for identity a"),
    "recon_ssim_b": (HIGHER, "recon_ssim for identity b"),
    "recon_checkerboard": (LOWER, "set checkerboard score of the reconstructions (mean of a, b)"),
    "recon_checkerboard_excess": (LOWER, "set score of reconstructions above the ground truth (decoder_grid_score)"),
    "recon_checkerboard_excess_a": (LOWER, "recon_checkerboard_excess for identity a"),
    "recon_checkerboard_excess_b": (LOWER, "recon_checkerboard_excess for identity b"),
    "recon_error_checkerboard": (LOWER, "set checkerboard score of the error images (reconstruction − truth)"),
    "recon_checkerboard_image": (LOWER, "per-image checkerboard score of reconstructions, averaged"),
    "recon_checkerboard_excess_image": (LOWER, "per-image excess over the ground truth, averaged"),
    "recon_error_checkerboard_image": (LOWER, "per-image error_score, averaged"),
    "swap_checkerboard": (LOWER, "set checkerboard score of the swaps (mean of a2b, b2a)"),
    "swap_checkerboard_excess": (LOWER, "set score of swaps above the target's ground truth, worse direction"),
    "swap_checkerboard_excess_a2b": (LOWER, "swap_checkerboard_excess for a→b"),
    "swap_checkerboard_excess_b2a": (LOWER, "swap_checkerboard_excess for b→a"),
    "swap_checkerboard_excess_image": (LOWER, "per-image swap score minus the target truth's mean, both directions"),
    "truth_checkerboard_a": (INFO, "set checkerboard score of identity a's held-out ground truth (a reference; ≈ 0)"),
    "truth_checkerboard_b": (INFO, "set checkerboard score of identity b's held-out ground truth (a reference; ≈ 0)"),
    "flat_grid_score": (LOWER, "flat-field probe: checkerboard score of flat skin, flat grey and the test faces' mean "
                        "code decoded by each decoder, the worst (metrics/flatfield.py): a grid no face can hide"),
    "flat_grid_score_skin": (INFO, "flat_grid_score of the flat skin-colour input (worse decoder)"),
    "flat_grid_score_grey": (INFO, "flat_grid_score of the flat grey input (worse decoder)"),
    "flat_grid_score_mean_code": (INFO, "flat_grid_score of the test faces' mean code (worse decoder)"),
    "flat_lattice_share": (LOWER, "flat-field probe: the lattice's energy over the output's total energy, the worst "
                           "(its square root: the grid's RMS relative to the image's brightness; is it visible?)"),
    "flat_offdc_share": (INFO, "flat-field probe: energy off the mean over the total, the worst (how far from "
                         "flat a flat input comes out at all, grid or not)"),
    "cycle_lpips": (LOWER, "LPIPS-alex between a face and its round trip through the other identity (mean)"),
    "cycle_lpips_a": (LOWER, "cycle_lpips for a → b → a"),
    "cycle_lpips_b": (LOWER, "cycle_lpips for b → a → b"),
    "swap_identity_success": (HIGHER, "share of swaps nearer the target identity's centroid than the source's (mean)"),
    "swap_identity_success_a2b": (HIGHER, "swap_identity_success for a→b"),
    "swap_identity_success_b2a": (HIGHER, "swap_identity_success for b→a"),
    "swap_identity_verified": (HIGHER, "share of swaps recognised as the target: nearer its centroid than the "
                               "source's and within the calibrated threshold of it (mean; real faces ≈ 0.95)"),
    "swap_identity_verified_a2b": (HIGHER, "swap_identity_verified for a→b"),
    "swap_identity_verified_b2a": (HIGHER, "swap_identity_verified for b→a"),
    "truth_identity_distance": (INFO, "dlib descriptor distance of real test faces to their own centroid (mean of "
                                "a, b; the floor the recon and swap distances are read against)"),
    "truth_identity_distance_a": (INFO, "truth_identity_distance for identity a"),
    "truth_identity_distance_b": (INFO, "truth_identity_distance for identity b"),
    "recon_identity_distance": (LOWER, "dlib descriptor distance of reconstructions to their own identity's "
                                "centroid (mean of a, b)"),
    "recon_identity_distance_a": (LOWER, "recon_identity_distance for identity a"),
    "recon_identity_distance_b": (LOWER, "recon_identity_distance for identity b"),
    "swap_identity_distance": (LOWER, "dlib descriptor distance of swaps to the target's centroid (mean)"),
    "swap_identity_distance_a2b": (LOWER, "swap_identity_distance for a→b"),
    "swap_identity_distance_b2a": (LOWER, "swap_identity_distance for b→a"),
    "swap_identity_margin": (HIGHER, "distance to the source's centroid minus the target's (> 0: looks like target)"),
    "swap_identity_margin_a2b": (HIGHER, "swap_identity_margin for a→b"),
    "swap_identity_margin_b2a": (HIGHER, "swap_identity_margin for b→a"),
    "truth_identity_success": (INFO, "share of real test faces nearer their own centroid (the metric's ceiling, ≈ 1)"),
    "identity_threshold": (INFO, "the verification threshold the verified shares used (stage identity: 95th "
                           "percentile of real test faces' distances to their own centroid)"),
    "swap_expression_corr": (HIGHER, "expression and pose kept: Pearson r of mouth and eye opening, yaw, pitch and "
                             "roll between source faces and their swaps, mean of the five and of a2b, b2a "
                             "(metrics/expression.py; a swap that ignores its source reads 0)"),
    "swap_expression_corr_a2b": (HIGHER, "swap_expression_corr for a→b"),
    "swap_expression_corr_b2a": (HIGHER, "swap_expression_corr for b→a"),
    "swap_mouth_corr": (HIGHER, "Pearson r of the mouth opening, source vs swap (mean of a2b, b2a)"),
    "swap_eyes_corr": (HIGHER, "Pearson r of the eye opening, source vs swap (mean of a2b, b2a)"),
    "swap_yaw_corr": (HIGHER, "Pearson r of the head's yaw, source vs swap (mean of a2b, b2a)"),
    "swap_pitch_corr": (HIGHER, "Pearson r of the head's pitch, source vs swap (mean of a2b, b2a)"),
    "swap_roll_corr": (HIGHER, "Pearson r of the head's roll left after alignment, source vs swap (mean)"),
    "swap_expression_unfitted": (LOWER, "share of swaps whose 68 landmarks could not be fitted to a face (both "
                                 "directions; the correlations leave them out)"),
    "swap_expression_no_face": (INFO, "share of swaps in which dlib's HOG detector found no face (blurry swaps "
                                "mostly; not a gate: the correlations use fitted landmarks)"),
    "recon_expression_corr": (INFO, "swap_expression_corr of the reconstructions against their own faces: the "
                              "ceiling the swaps are read against"),
    "swap_collapse": (HIGHER, "how much swaps vary with their source: spread of the low-passed face region of the "
                      "swaps across source faces over that of the same faces' reconstructions (0 = one image for "
                      "every source, 1 = as varied as the reconstructions; metrics/collapse.py; mean of a2b, b2a)"),
    "swap_collapse_a2b": (HIGHER, "swap_collapse for a→b"),
    "swap_collapse_b2a": (HIGHER, "swap_collapse for b→a"),
    "swap_follow_structure": (HIGHER, "do swaps differ where their sources differ? Pearson r between the pairwise "
                              "distances of the low-passed swaps and of the same sources' reconstructions (1 = "
                              "exactly, ≈ 0 for a constant swap, noise or faces 0.8 s late; mean of a2b, b2a)"),
    "swap_follow_structure_a2b": (HIGHER, "swap_follow_structure for a→b"),
    "swap_follow_structure_b2a": (HIGHER, "swap_follow_structure for b→a"),
    "swap_follow_expression": (HIGHER, "expression and pose followed, measured on every swap: Pearson r of mouth, "
                               "eyes, yaw, pitch and roll between source and swap, the swap's 68 points fitted in "
                               "the template's face box whatever they look like (mean of the five and of a2b, b2a)"),
    "swap_follow_expression_a2b": (HIGHER, "swap_follow_expression for a→b"),
    "swap_follow_expression_b2a": (HIGHER, "swap_follow_expression for b→a"),
    "swap_follow_mouth": (HIGHER, "Pearson r of the mouth opening, source vs every swap (mean of a2b, b2a)"),
    "swap_follow_mouth_a2b": (HIGHER, "swap_follow_mouth for a→b"),
    "swap_follow_mouth_b2a": (HIGHER, "swap_follow_mouth for b→a"),
    "swap_follow_unmeasured": (LOWER, "share of swaps whose pose could not be solved (the only swaps the every-swap "
                               "measures leave out; both directions)"),
    "swap_identity_retrieved": (HIGHER, "identity at the swap's own sharpness: share of swaps nearer the gallery of "
                                "the target's reconstructions than the source's by more than evaluate.identity_margin "
                                "(galleries from the same model, so as sharp as the swap; mean of a2b, b2a)"),
    "swap_identity_retrieved_a2b": (HIGHER, "swap_identity_retrieved for a→b"),
    "swap_identity_retrieved_b2a": (HIGHER, "swap_identity_retrieved for b→a"),
    "swap_identity_gallery_score": (HIGHER, "distance to the source's reconstruction gallery minus the target's "
                                    "(> identity_margin: retrieved as the target; mean of a2b, b2a)"),
    "swap_identity_gallery_score_a2b": (HIGHER, "swap_identity_gallery_score for a→b"),
    "swap_identity_gallery_score_b2a": (HIGHER, "swap_identity_gallery_score for b→a"),
    "identity_margin": (INFO, "the retrieval margin the retrieved shares used (evaluate.identity_margin)"),
    "landmark_nme": (LOWER, "5-point landmark error of swap vs source / inter-ocular distance (mean of a2b, b2a)"),
    "landmark_nme_a2b": (LOWER, "landmark_nme for a→b"),
    "landmark_nme_b2a": (LOWER, "landmark_nme for b→a"),
    "landmark_failure_rate": (LOWER, "share of swaps with no face detected, of sources with one (both directions)"),
    "landmark_failure_rate_a2b": (LOWER, "landmark_failure_rate for a→b"),
    "landmark_failure_rate_b2a": (LOWER, "landmark_failure_rate for b→a"),
    "landmark_source_misses": (INFO, "held-out source faces on which the detector found no face (excluded)"),
    "faces_a": (INFO, "held-out faces of identity a evaluated"),
    "faces_b": (INFO, "held-out faces of identity b evaluated"),
    "step": (INFO, "training step of the evaluated checkpoint (mean over seeds)"),
    "seeds": (INFO, "training seeds evaluated; every number is their mean, with a 95% CI"),
}

# Metrics with a value per test face: name → the per-face series it averages (one per identity or direction).
# These get a bootstrap CI over faces and training seeds (faceswap.stats); the others a mean over seeds.
PER_FACE: dict[str, tuple[str, ...]] = {
    "recon_lpips": ("recon_lpips_a", "recon_lpips_b"),
    "recon_psnr": ("recon_psnr_a", "recon_psnr_b"),
    "recon_ssim": ("recon_ssim_a", "recon_ssim_b"),
    "cycle_lpips": ("cycle_lpips_a", "cycle_lpips_b"),
    "swap_identity_success": ("swap_identity_success_a2b", "swap_identity_success_b2a"),
    "swap_identity_verified": ("swap_identity_verified_a2b", "swap_identity_verified_b2a"),
    "swap_identity_distance": ("swap_identity_distance_a2b", "swap_identity_distance_b2a"),
    "swap_identity_margin": ("swap_identity_margin_a2b", "swap_identity_margin_b2a"),
    "swap_identity_retrieved": ("swap_identity_retrieved_a2b", "swap_identity_retrieved_b2a"),
    "swap_identity_gallery_score": ("swap_identity_gallery_score_a2b", "swap_identity_gallery_score_b2a"),
    "swap_collapse": ("swap_collapse_a2b", "swap_collapse_b2a"),
    "swap_follow_mouth": ("swap_follow_mouth_a2b", "swap_follow_mouth_b2a"),
    "swap_follow_expression": ("swap_follow_expression_a2b", "swap_follow_expression_b2a"),
    "truth_identity_distance": ("truth_identity_distance_a", "truth_identity_distance_b"),
    "recon_identity_distance": ("recon_identity_distance_a", "recon_identity_distance_b"),
}

RANKABLE = tuple(name for name, (d, _) in EVAL_METRICS.items() if d in (LOWER, HIGHER))


def as_lower(name: str, value: float) -> float:
    """``value`` of metric ``name`` as a lower-is-better number (negated for higher-is-better metrics)."""
    return -value if direction(name) == HIGHER else value


def bound_word(name: str) -> str:
    """How a gate on ``name`` reads: '≥' for higher-is-better metrics, '≤' otherwise."""
    return "≥" if direction(name) == HIGHER else "≤"


def best_word(name: str) -> str:
    return "highest" if direction(name) == HIGHER else "lowest"


def direction(name: str) -> str:
    """'lower' or 'higher' (is better), or 'info'; a clear error for an unknown name."""
    try:
        return EVAL_METRICS[name][0]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(EVAL_METRICS)}") from None
