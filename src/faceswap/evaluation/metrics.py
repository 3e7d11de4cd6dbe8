"""Every number of docs/metrics.md for one model on the held-out faces, and their mean over training seeds.

Reconstruction quality (LPIPS, PSNR, SSIM), the checkerboard score of reconstructions and swaps, identity
transfer of the swaps, cycle consistency and landmark preservation (with a failure rate). Names and directions:
:mod:`faceswap.names`; intervals: :mod:`faceswap.stats`. One module because every number is computed on the same
forward passes (reconstructions, swaps, cycles) of the same faces; the measurements themselves live in
:mod:`faceswap.metrics`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faceswap.evaluation import EvaluateError
from faceswap.names import EVAL_METRICS, INFO
from faceswap.pictures import evenly_spaced, to_uint8

if TYPE_CHECKING:
    import torch

    from faceswap.compute import ComputePlan
    from faceswap.config import EvaluateParams
    from faceswap.detections import Detector
    from faceswap.evaluation.faces import EvalFaces
    from faceswap.identity_reference import IdentityReference
    from faceswap.model import FaceSwapAutoencoder


# --- running the model --------------------------------------------------------------------------------


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def run_model(
    model: FaceSwapAutoencoder, faces: EvalFaces, batch_size: int, device: str | torch.device,
    plan: ComputePlan | None = None,
) -> dict[str, torch.Tensor]:
    """Reconstructions, swaps and round trips of every face, as CPU float tensors (N, 3, H, W) in [0, 1].

    Keys: ``truth_<i>``, ``recon_<i>``, ``swap_<i>`` (face of i rendered as the other identity) and
    ``cycle_<i>`` (the swap brought back to i), for i in the two identities; a masked-input model's outputs pasted
    into their source crops (:meth:`~faceswap.model.FaceSwapAutoencoder.composite`). ``plan`` (default: this device's
    auto plan) sets the forward pass's autocast and memory format; the outputs are fp32 either way.
    """
    import torch

    from faceswap.compute import plan_compute, to_layout

    plan = plan or plan_compute(device)
    a, b = faces.identities
    other = {a: b, b: a}
    out: dict[str, list[torch.Tensor]] = {}
    model = model.to(device).eval()
    if plan.channels_last:
        model = model.to(memory_format=torch.channels_last)
    with torch.inference_mode(), plan.autocast():
        for ident in (a, b):
            x_all = _to_tensor(faces.images[ident])
            for start in range(0, len(x_all), batch_size):
                x = to_layout(x_all[start : start + batch_size].to(device), plan)
                z = model.encode(x)
                # a masked-input model draws the face on grey: its outputs are judged pasted into their source's
                # crop by the same ellipse, as conversion shows them (the identity otherwise); the decoder's own
                # drawings are kept too (``drawn_*``), for the instruments that must not see the source's pixels
                raw_rec, raw_swap = model.decode(z, ident).float(), model.decode(z, other[ident]).float()
                rec, swap = model.composite(raw_rec, x), model.composite(raw_swap, x)
                cyc = model.composite(model.decode(model.encode(to_layout(swap, plan)), ident).float(), x)
                kept = [("truth", x), ("recon", rec), ("swap", swap), ("cycle", cyc)]
                if model.masks_input:
                    kept += [("drawn_recon", raw_rec), ("drawn_swap", raw_swap)]
                for key, t in kept:
                    out.setdefault(f"{key}_{ident}", []).append(t.float().cpu().contiguous())
    return {k: torch.cat(v) for k, v in out.items()}


def _batched_lpips(x: torch.Tensor, y: torch.Tensor, net: str, device: str, batch: int) -> np.ndarray:
    import torch

    from faceswap.metrics.lpips import load_lpips, lpips_tensor

    # Build the process-wide cached LPIPS module *outside* inference mode, and use no_grad rather than
    # inference_mode here: its tensors must stay usable by later autograd users (the training loss).
    load_lpips(net, device)
    vals = []
    with torch.no_grad():
        for s in range(0, len(x), batch):
            vals.append(lpips_tensor(x[s : s + batch].to(device), y[s : s + batch].to(device), net=net).cpu())
    return torch.cat(vals).numpy().astype(float)


# --- landmark preservation ----------------------------------------------------------------------------


def _central_face(det: Any, side: int, min_score: float) -> np.ndarray | None:
    """Landmarks (5, 2) of the confident face closest to the image centre, or None."""
    if det is None or len(det) == 0:
        return None
    ok = det.scores >= min_score
    if not ok.any():
        return None
    centres = (det.boxes[:, :2] + det.boxes[:, 2:]) / 2
    dist = np.linalg.norm(centres - side / 2, axis=1)
    dist[~ok] = np.inf
    return det.landmarks[int(np.argmin(dist))]


def detect_landmarks(detector: Any, images: np.ndarray, upscale: int, min_score: float) -> list[np.ndarray | None]:
    """5 landmarks per crop (crop pixels), or None where no confident face is found."""
    import cv2

    side = images.shape[1]
    big = [cv2.resize(im, (upscale, upscale), interpolation=cv2.INTER_CUBIC) for im in images]
    out: list[np.ndarray | None] = []
    for s in range(0, len(big), 16):
        for det in detector.detect(big[s : s + 16]):
            lm = _central_face(det, upscale, min_score)
            out.append(None if lm is None else lm * (side / upscale))
    return out


def landmark_errors(src: list[np.ndarray | None], swp: list[np.ndarray | None]) -> dict[str, Any]:
    """Normalised mean error (÷ inter-ocular distance of the source) per pair; swap misses are failures."""
    nme, failures, source_misses = [], 0, 0
    for s, w in zip(src, swp, strict=True):
        if s is None:
            source_misses += 1
            continue
        if w is None:
            failures += 1
            continue
        iod = float(np.linalg.norm(s[1] - s[0]))
        nme.append(float(np.linalg.norm(w - s, axis=1).mean() / max(iod, 1e-6)))
    checked = len(src) - source_misses
    return {
        "nme": float(np.mean(nme)) if nme else None,
        "failure_rate": failures / checked if checked else None,
        "failures": failures,
        "source_misses": source_misses,
        "checked": checked,
        "per_image": nme,
    }


# --- metrics ------------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """What :func:`evaluate_model` measured."""

    metrics: dict[str, float | None]
    per_image: dict[str, list[float]] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)  # tensors from run_model
    details: dict[str, Any] = field(default_factory=dict)


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).numpy().astype(np.float64)


def _mean(*vals: float | None) -> float | None:
    v = [x for x in vals if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else None


def evaluate_model(
    model: FaceSwapAutoencoder,
    faces: EvalFaces,
    cfg: EvaluateParams,
    periods: tuple[int, ...] = (2, 4, 8),
    device: str = "cpu",
    detector: Detector | None = None,
    identity: IdentityReference | None = None,
) -> Evaluation:
    """Every metric of docs/metrics.md for one model on one set of held-out faces (no files written).

    ``detector`` finds the 5 landmarks of the landmark metrics (``evaluate.landmarks``); the caller builds it
    (:func:`faceswap.stages.evaluate.landmark_detector`), so this code never loads a detector itself."""
    from faceswap.metrics.checkerboard import checkerboard_score, checkerboard_score_set, decoder_grid_score
    from faceswap.metrics.flatfield import flat_field_probe
    from faceswap.metrics.image import psnr, ssim

    a, b = faces.identities
    from faceswap.compute import plan_compute

    outs = run_model(model, faces, cfg.batch_size, device,
                     plan_compute(device, cfg.precision, cfg.channels_last, setting="evaluate"))
    m: dict[str, float | None] = {}
    per: dict[str, list[float]] = {}
    grid = {"recon": [], "error": [], "swap": []}  # set scores per identity / direction, averaged below
    # A swap into identity t is drawn by t's decoder: its grid reference is t's held-out ground truth (clean
    # real crops of what that decoder learned to draw; they score ≈ 0), never the source face.
    truth_sets = {i: list(_hwc(outs[f"truth_{i}"])) for i in (a, b)}
    truth_pi = {i: [checkerboard_score(im, periods).score for im in _hwc(outs[f"truth_{i}"])] for i in (a, b)}
    for tag, ident in (("a", a), ("b", b)):
        x, rec = outs[f"truth_{ident}"], outs[f"recon_{ident}"]
        lp = _batched_lpips(x, rec, cfg.lpips_net, device, cfg.batch_size)
        per[f"recon_lpips_{tag}"] = lp.tolist()
        m[f"recon_lpips_{tag}"] = float(lp.mean())
        per[f"recon_psnr_{tag}"] = psnr(rec, x).double().tolist()
        per[f"recon_ssim_{tag}"] = ssim(rec, x).double().tolist()
        m[f"recon_psnr_{tag}"] = float(np.mean(per[f"recon_psnr_{tag}"]))
        m[f"recon_ssim_{tag}"] = float(np.mean(per[f"recon_ssim_{tag}"]))
        cyc = _batched_lpips(x, outs[f"cycle_{ident}"], cfg.lpips_net, device, cfg.batch_size)
        per[f"cycle_lpips_{tag}"] = cyc.tolist()
        m[f"cycle_lpips_{tag}"] = float(cyc.mean())

        truth_np, rec_np, swap_np = _hwc(x), _hwc(rec), _hwc(outs[f"swap_{ident}"])
        err_np = rec_np - truth_np
        target = b if ident == a else a
        g_rec = decoder_grid_score(list(rec_np), truth_sets[ident], periods)
        g_swap = decoder_grid_score(list(swap_np), truth_sets[target], periods)
        s_rec, s_swap = g_rec["score"], g_swap["score"]
        m[f"truth_checkerboard_{tag}"] = g_rec["reference_score"]
        grid["recon"].append(s_rec)
        m[f"recon_checkerboard_excess_{tag}"] = g_rec["excess"]
        grid["error"].append(checkerboard_score_set(list(err_np), periods).score)
        direction = f"{tag}2{'b' if tag == 'a' else 'a'}"
        grid["swap"].append(s_swap)
        m[f"swap_checkerboard_excess_{direction}"] = g_swap["excess"]
        pi_truth = truth_pi[ident]
        pi_rec = [checkerboard_score(im, periods).score for im in rec_np]
        pi_swap = [checkerboard_score(im, periods).score for im in swap_np]
        per[f"recon_checkerboard_{tag}"] = pi_rec
        per[f"recon_checkerboard_excess_{tag}"] = [r - t for r, t in zip(pi_rec, pi_truth, strict=True)]
        per[f"recon_error_checkerboard_{tag}"] = [checkerboard_score(e, periods).score for e in err_np]
        per[f"swap_checkerboard_excess_{direction}"] = [s - float(np.mean(truth_pi[target])) for s in pi_swap]

    m["recon_lpips"] = _mean(m["recon_lpips_a"], m["recon_lpips_b"])
    m["recon_psnr"] = _mean(m["recon_psnr_a"], m["recon_psnr_b"])
    m["recon_ssim"] = _mean(m["recon_ssim_a"], m["recon_ssim_b"])
    m["recon_checkerboard"] = _mean(*grid["recon"])
    m["recon_checkerboard_excess"] = _mean(m["recon_checkerboard_excess_a"], m["recon_checkerboard_excess_b"])
    m["recon_error_checkerboard"] = _mean(*grid["error"])
    m["recon_checkerboard_image"] = float(np.mean(per["recon_checkerboard_a"] + per["recon_checkerboard_b"]))
    m["recon_checkerboard_excess_image"] = float(
        np.mean(per["recon_checkerboard_excess_a"] + per["recon_checkerboard_excess_b"])
    )
    m["recon_error_checkerboard_image"] = float(
        np.mean(per["recon_error_checkerboard_a"] + per["recon_error_checkerboard_b"])
    )
    m["swap_checkerboard"] = _mean(*grid["swap"])
    m["swap_checkerboard_excess"] = max(m["swap_checkerboard_excess_a2b"], m["swap_checkerboard_excess_b2a"])
    m["swap_checkerboard_excess_image"] = float(
        np.mean(per["swap_checkerboard_excess_a2b"] + per["swap_checkerboard_excess_b2a"])
    )
    m["cycle_lpips"] = _mean(m["cycle_lpips_a"], m["cycle_lpips_b"])
    probe = flat_field_probe(model, {i: outs[f"truth_{i}"] for i in (a, b)}, periods)
    m.update({k: v for k, v in probe.metrics.items() if k in EVAL_METRICS})
    if identity is not None:
        m.update(identity_metrics(outs, faces.identities, identity, per, cfg.identity_faces, cfg.identity_margin))
        if cfg.expression:
            m.update(expression_metrics(outs, faces, identity.coverage, cfg.expression_faces, per))
    m.update(collapse_metrics(outs, faces.identities, model.config.mask_coverage, per))

    details: dict[str, Any] = {}
    if cfg.landmarks:
        if detector is None:
            raise EvaluateError("evaluate.landmarks is on but no landmark detector was given (build it with "
                                "faceswap.stages.evaluate.landmark_detector, or set evaluate.landmarks: false)")
        fails = checked = 0
        for tag, ident in (("a2b", a), ("b2a", b)):
            idx = evenly_spaced(len(faces.images[ident]), cfg.landmark_faces)
            src = detect_landmarks(detector, faces.images[ident][idx], cfg.landmark_upscale, cfg.landmark_min_score)
            swp_imgs = to_uint8(outs[f"swap_{ident}"][idx])
            swp = detect_landmarks(detector, swp_imgs, cfg.landmark_upscale, cfg.landmark_min_score)
            le = landmark_errors(src, swp)
            m[f"landmark_nme_{tag}"] = le["nme"]
            m[f"landmark_failure_rate_{tag}"] = le["failure_rate"]
            per[f"landmark_nme_{tag}"] = le["per_image"]
            details[f"landmarks_{tag}"] = {k: v for k, v in le.items() if k != "per_image"}
            fails += le["failures"]
            checked += le["checked"]
        m["landmark_nme"] = _mean(m["landmark_nme_a2b"], m["landmark_nme_b2a"])
        m["landmark_failure_rate"] = fails / checked if checked else None
        m["landmark_source_misses"] = float(
            details["landmarks_a2b"]["source_misses"] + details["landmarks_b2a"]["source_misses"]
        )
    m["faces_a"] = float(len(faces.images[a]))
    m["faces_b"] = float(len(faces.images[b]))
    if unknown := set(m) - set(EVAL_METRICS):
        raise EvaluateError(f"metrics missing from the catalogue (faceswap/names.py): {sorted(unknown)}")
    ordered = {k: m[k] for k in EVAL_METRICS if k in m}
    return Evaluation(ordered, per, outs, details)


_truth_descriptors: dict[tuple[str, float], np.ndarray] = {}  # real faces are the same for every seed


def _describe(images: np.ndarray, coverage: float, cache: bool = False) -> np.ndarray:
    import hashlib

    from faceswap.metrics.identity import shared_encoder

    if not cache:
        return shared_encoder().describe(images, coverage)
    key = (hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest(), coverage)
    if key not in _truth_descriptors:
        if len(_truth_descriptors) >= 4:
            _truth_descriptors.pop(next(iter(_truth_descriptors)))
        _truth_descriptors[key] = shared_encoder().describe(images, coverage)
    return _truth_descriptors[key]


def expression_metrics(outs: dict[str, torch.Tensor], faces: EvalFaces, coverage: float,
                       max_faces: int | None, per: dict[str, list[float]] | None = None) -> dict[str, float | None]:
    """Expression and pose preservation (:func:`faceswap.metrics.expression.preservation`) of the swaps in both
    directions, on ``max_faces`` evenly spaced test faces, and of the reconstructions as the ceiling.

    Twice: on the swaps whose landmarks fit a face (``swap_expression_*``, the absolute reading), and on every swap
    (``swap_follow_*``: the 68 points fitted in the template's face box whatever the swap looks like, so none is
    left out and a swap that draws the same face for every source reads ≈ 0). The every-swap per-face products
    (whose mean is r) go into ``per`` for the bootstrap over faces and seeds."""
    from faceswap.metrics.expression import MEASURES, measure_expressions, preservation

    m: dict[str, float | None] = {}
    per_dir: dict[str, dict[str, Any]] = {}
    recon: list[float] = []
    unfitted = no_face = unmeasured = 0.0
    for tag, ident in (("a2b", faces.identities[0]), ("b2a", faces.identities[1])):
        idx = evenly_spaced(len(faces.images[ident]), max_faces)
        src = measure_expressions(faces.images[ident][idx], coverage)
        swap_images = to_uint8(outs[f"swap_{ident}"][idx])
        swp = measure_expressions(swap_images, coverage)
        rec = measure_expressions(to_uint8(outs[f"recon_{ident}"][idx]), coverage)
        per_dir[tag] = p = preservation(src, swp, coverage=coverage)
        recon.append(preservation(src, rec, coverage=coverage)["corr_mean"])
        m[f"swap_expression_corr_{tag}"] = p["corr_mean"]
        unfitted += (p["unfitted"] or 0.0) * len(idx)
        no_face += (p["no_face"] or 0.0) * len(idx)
        every = measure_expressions(swap_images, coverage, face_check=False, require_fit=False)
        f = preservation(src, every, coverage=coverage)
        m[f"swap_follow_expression_{tag}"] = f["corr_mean"]
        m[f"swap_follow_mouth_{tag}"] = f["mouth_corr"]
        unmeasured += float((~every.fitted).sum())
        if per is not None:
            per[f"swap_follow_mouth_{tag}"] = list(f["per_face"]["mouth"])
            per[f"swap_follow_expression_{tag}"] = np.mean([f["per_face"][k] for k in MEASURES], axis=0).tolist()
    n = sum(len(evenly_spaced(len(faces.images[i]), max_faces)) for i in faces.identities)
    m["swap_follow_expression"] = _mean(m["swap_follow_expression_a2b"], m["swap_follow_expression_b2a"])
    m["swap_follow_mouth"] = _mean(m["swap_follow_mouth_a2b"], m["swap_follow_mouth_b2a"])
    m["swap_follow_unmeasured"] = unmeasured / n if n else None
    m["swap_expression_corr"] = _mean(m["swap_expression_corr_a2b"], m["swap_expression_corr_b2a"])
    for name in MEASURES:
        m[f"swap_{name}_corr"] = _mean(*(d[f"{name}_corr"] for d in per_dir.values()))
    m["swap_expression_unfitted"] = unfitted / n if n else None
    m["swap_expression_no_face"] = no_face / n if n else None
    m["recon_expression_corr"] = _mean(*recon)
    return m


def collapse_metrics(outs: dict[str, torch.Tensor], identities: tuple[str, str], coverage: float,
                     per: dict[str, list[float]]) -> dict[str, float | None]:
    """The collapse measure and structure r (:mod:`faceswap.metrics.collapse`) of each direction: swaps a→b against
    the reconstructions a→a of the same faces, over every evaluated face, in the face region of crops cut with
    ``coverage``. On what the decoders drew (``drawn_*``
    where the model masks its input): a pasted output's feather holds the source's own pixels, which would make
    any two outputs of one source look alike (a collapsed decoder read 1.00 on its composites)."""
    from faceswap.data.template import face_region
    from faceswap.metrics.collapse import following

    m: dict[str, float | None] = {}
    for tag, ident in (("a2b", identities[0]), ("b2a", identities[1])):
        kind = "drawn_" if f"drawn_swap_{ident}" in outs else ""
        swaps, recons = _hwc(outs[f"{kind}swap_{ident}"]), _hwc(outs[f"{kind}recon_{ident}"])
        c, m[f"swap_follow_structure_{tag}"] = following(swaps, recons, face_region(swaps.shape[1], coverage))
        m[f"swap_collapse_{tag}"] = c["ratio"]
        if c["ratio"] is not None:
            per[f"swap_collapse_{tag}"] = c["per_face"]
    m["swap_collapse"] = _mean(m["swap_collapse_a2b"], m["swap_collapse_b2a"])
    m["swap_follow_structure"] = _mean(m["swap_follow_structure_a2b"], m["swap_follow_structure_b2a"])
    return m


def identity_metrics(outs: dict[str, torch.Tensor], identities: tuple[str, str], ref: IdentityReference,
                     per: dict[str, list[float]], max_faces: int | None = None,
                     margin: float = 0.0) -> dict[str, float | None]:
    """Identity transfer of the swaps in both directions (docs/metrics.md): does a→b look like b to a
    face-recognition network, relative to a (``success``) and absolutely (``verified``: also within the
    reference's calibrated threshold of b's centroid)? Beside the swaps' distance to the target's centroid, the
    real test faces' (``truth``) and the reconstructions' (``recon``) distances to their own identity's centroid,
    on the same faces, where ``outs`` has them (:func:`run_model` always does; a bench that returns only swaps
    gets the swap metrics), and the swaps retrieved as their target against galleries of the model's own
    reconstructions (:func:`faceswap.metrics.identity.gallery_retrieval`, by ``margin``). Per-face values go into
    ``per`` for the bootstrap. ``max_faces`` evenly spaced faces per
    identity (None: all): the descriptor is most of evaluation's time (~90 ms a face on one core)."""
    from faceswap.metrics.identity import gallery_retrieval, transfer_scores

    if tuple(ref.identities) != tuple(identities):
        raise EvaluateError(f"the identity reference is for {list(ref.identities)}, the model decodes "
                            f"{list(identities)}; rerun `dvc repro identity`")
    a, b = identities
    outs = {f"{kind}_{i}": outs[f"{kind}_{i}"][evenly_spaced(len(outs[f"swap_{i}"]), max_faces)]
            for kind in ("truth", "recon", "swap") for i in identities if f"{kind}_{i}" in outs}
    m: dict[str, float | None] = {}
    kinds = [k for k in ("truth", "recon") if all(f"{k}_{i}" in outs for i in identities)]
    described: dict[str, np.ndarray] = {}
    for tag, ident in (("a", a), ("b", b)):
        for kind in kinds:
            d = described[f"{kind}_{ident}"] = _describe(to_uint8(outs[f"{kind}_{ident}"]), ref.coverage,
                                                         cache=kind == "truth")
            dist = np.linalg.norm(d.astype(np.float64) - np.asarray(ref.centroids[ident], np.float64), axis=1)
            m[f"{kind}_identity_distance_{tag}"] = float(dist.mean()) if len(dist) else None
            per[f"{kind}_identity_distance_{tag}"] = dist.tolist()
    for tag, src, tgt in (("a2b", a, b), ("b2a", b, a)):
        swap_d = _describe(to_uint8(outs[f"swap_{src}"]), ref.coverage)
        s = transfer_scores(swap_d, src, tgt, ref.centroids, ref.threshold)
        for name in ("success", "verified", "distance", "margin"):
            m[f"swap_identity_{name}_{tag}"] = s[name]
            per[f"swap_identity_{name}_{tag}"] = np.asarray(s[f"{name}_per_face"], dtype=float).tolist()
        if "recon" in kinds:  # identity at the swap's own sharpness: the model's reconstructions as galleries
            r = gallery_retrieval(swap_d, described[f"recon_{src}"], described[f"recon_{tgt}"], margin)
            m[f"swap_identity_retrieved_{tag}"] = r["retrieved"]
            m[f"swap_identity_gallery_score_{tag}"] = r["score"]
            per[f"swap_identity_retrieved_{tag}"] = r["retrieved_per_face"]
            per[f"swap_identity_gallery_score_{tag}"] = r["score_per_face"]
    if "recon" in kinds:
        for name in ("retrieved", "gallery_score"):
            m[f"swap_identity_{name}"] = _mean(m[f"swap_identity_{name}_a2b"], m[f"swap_identity_{name}_b2a"])
        m["identity_margin"] = margin
    for name in ("success", "verified", "distance", "margin"):
        m[f"swap_identity_{name}"] = _mean(m[f"swap_identity_{name}_a2b"], m[f"swap_identity_{name}_b2a"])
    for kind in kinds:
        m[f"{kind}_identity_distance"] = _mean(m[f"{kind}_identity_distance_a"], m[f"{kind}_identity_distance_b"])
    m["truth_identity_success"] = float(np.mean([ref.truth_success[i].mean() for i in identities]))
    m["identity_threshold"] = ref.threshold
    return m


#: per-face series whose mean is a Pearson r (standardised products): a resample's mean can pass ±1, r cannot
CORRELATIONS = ("swap_follow_mouth", "swap_follow_expression")


def _bounded(name: str, est: dict[str, Any]) -> dict[str, Any]:
    if name in CORRELATIONS:
        est["ci_lo"], est["ci_hi"] = max(-1.0, est["ci_lo"]), min(1.0, est["ci_hi"])
    return est


@dataclass
class SeedRun:
    """One training seed's checkpoint, its training state and run record, and what it measured."""

    seed: int
    checkpoint: Path
    state: dict[str, Any]
    run_info: dict[str, Any]
    evaluation: Evaluation


def aggregate(runs: list[SeedRun]) -> tuple[dict[str, float | None], dict[str, dict[str, Any]]]:
    """Every metric as the mean over seeds, and an estimate (mean, 95% CI) for each.

    Per-face metrics (catalog.PER_FACE) get the hierarchical bootstrap over seeds and test faces; the others
    (set scores, rates) the seeds' range, labelled as such.
    """
    from faceswap.names import PER_FACE
    from faceswap.stats import hierarchical_bootstrap

    keys = list(runs[0].evaluation.metrics)
    metrics: dict[str, float | None] = {}
    for k in keys:
        vals = [r.evaluation.metrics.get(k) for r in runs]
        metrics[k] = None if any(v is None for v in vals) else float(np.mean(vals))
    estimates: dict[str, dict[str, Any]] = {}
    for name, series in PER_FACE.items():
        if not all(s in runs[0].evaluation.per_image for s in series):
            continue
        groups = [np.array([r.evaluation.per_image[s] for r in runs], dtype=float) for s in series]
        for s, g in zip(series, groups, strict=True):
            estimates[s] = _bounded(name, {**hierarchical_bootstrap([g]).as_dict(), "kind": "bootstrap"})
        estimates[name] = _bounded(name, {**hierarchical_bootstrap(groups).as_dict(), "kind": "bootstrap"})
    for k, v in metrics.items():
        if k in estimates or v is None or EVAL_METRICS[k][0] == INFO:
            continue
        vals = [float(r.evaluation.metrics[k]) for r in runs]
        estimates[k] = {"mean": v, "ci_lo": min(vals), "ci_hi": max(vals), "seeds": len(runs), "kind": "seed-range"}
    return metrics, estimates
