"""Stage ``evaluate@<variant>``: every training seed of one variant on the held-out ``test`` faces.

On faces never seen in training (and not the ``val`` faces that chose the checkpoint) it measures every seed's
model: reconstruction quality (LPIPS-alex, PSNR, SSIM), the checkerboard score of reconstructions and swaps (a
swap's against the target identity's test truth), identity transfer, cycle consistency and landmark
preservation, and draws the pictures people look at for the seed that validation ranks best. Every number is
the mean over seeds with a 95% CI (:mod:`faceswap.stats`); definitions in docs/metrics.md, names and directions
in :mod:`faceswap.names`.

Writes the :class:`~faceswap.evaluation.record.EvaluationRecord` (``paths.evaluation_record``, what register
reads), the flat DVC metrics file (``paths.variant_metrics_file``: means with ``_ci_lo``/``_ci_hi``), the
pictures (``paths.pictures_dir``), each seed's numbers into its training run and the variant's summary into an
MLflow run named after the variant.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceswap.devices import resolve_device
from faceswap.evaluation import EvaluateError
from faceswap.evaluation.faces import EvalFaces, load_eval_faces
from faceswap.evaluation.metrics import SeedRun, aggregate, evaluate_model
from faceswap.evaluation.pictures import PICTURES, write_pictures
from faceswap.evaluation.record import EvaluationRecord, MlflowRef
from faceswap.evaluation.runs import log_record, log_to_mlflow
from faceswap.files import file_sha256, write_json
from faceswap.tracking import git_commit

if TYPE_CHECKING:
    from faceswap.config import EvaluateParams, Params
    from faceswap.detections import Detector


def eval_fingerprint(faces: EvalFaces, cfg: EvaluateParams, periods: tuple[int, ...]) -> str:
    """The same faces measured the same way: what two evaluations must share to be compared."""
    keys = ("max_faces", "lpips_net", "landmarks", "landmark_faces", "landmark_upscale", "landmark_min_score")
    how = {k: getattr(cfg, k) for k in keys} | {"periods": list(periods)}
    return hashlib.sha256((faces.fingerprint + json.dumps(how, sort_keys=True)).encode()).hexdigest()


def _load_run(run_folder: Path, variant: str, seed: int, device: str) -> tuple[Any, dict, dict, Path]:
    from faceswap.checkpoint import CheckpointError, load_model

    ckpt = run_folder / "model.pt"
    try:
        model, state = load_model(ckpt, device)
    except CheckpointError as err:
        raise EvaluateError(f"{err} (train it first: dvc repro train@{variant}-{seed})") from None
    run_info: dict[str, Any] = {}
    run_json = run_folder / "run.json"
    if run_json.is_file():
        try:
            run_info = json.loads(run_json.read_text())
        except ValueError as err:
            raise EvaluateError(f"{run_json} is not valid JSON: {err}") from None
    if len(model.config.identities) != 2:
        raise EvaluateError(f"{ckpt} has {len(model.config.identities)} decoders; evaluation needs exactly two")
    return model, state, run_info, ckpt


def landmark_detector(cfg: EvaluateParams, device: str) -> Detector | None:
    """The detector of the landmark metrics (MTCNN: its weights ship in its wheel), or None when they are off."""
    if not cfg.landmarks:
        return None
    from faceswap.data.mtcnn import MtcnnDetector

    return MtcnnDetector(str(device), min_face_size=max(20, cfg.landmark_upscale // 5))


def run(params: Params, variant: str, detector: Detector | None = None) -> EvaluationRecord:
    """Evaluate every seed of ``variant``; write its record, DVC metrics, pictures; log to MLflow."""
    cfg, paths = params.evaluate, params.paths
    periods = params.metrics.checkerboard.periods
    device = resolve_device(cfg.device, "evaluate.device")
    detector = detector if detector is not None else landmark_detector(cfg, device)
    runs: list[SeedRun] = []
    faces: EvalFaces | None = None
    identity = None
    for seed in params.train.seeds:
        model, state, run_info, ckpt = _load_run(paths.run_dir(variant, seed), variant, seed, device)
        if cfg.identity and identity is None:  # after the first checkpoint: a missing model is the first error
            from faceswap.identity_reference import IdentityReference, reference_path

            identity = IdentityReference.load(reference_path(params))
        if faces is None:
            faces = load_eval_faces(paths.accepted, tuple(model.config.identities), model.config.image_size,
                                    paths.faces, cfg.max_faces)
        elif tuple(model.config.identities) != faces.identities:
            raise EvaluateError(f"{ckpt} decodes {model.config.identities}, seed {runs[0].seed} {faces.identities}")
        ev = evaluate_model(model, faces, cfg, periods, device, detector, identity)
        ev.metrics["step"] = float(int(state.get("step", 0) or 0))
        runs.append(SeedRun(seed, ckpt, state, run_info, ev))
    if faces is None:
        raise EvaluateError("train.seeds is empty: no model to evaluate")
    metrics, estimates = aggregate(runs)
    metrics["seeds"] = float(len(runs))
    best = min(runs, key=lambda r: (math.inf if r.state.get("val_loss") is None else r.state["val_loss"], r.seed))

    pictures = paths.pictures_dir(variant)
    pictures.mkdir(parents=True, exist_ok=True)
    step = int(best.state.get("step", 0) or 0)
    write_pictures(best.evaluation, faces.identities, cfg, pictures, f"{variant} (seed {best.seed}, step {step})")
    record = EvaluationRecord(
        variant=variant, seeds=[r.seed for r in runs], representative_seed=best.seed,
        checkpoint=str(best.checkpoint), checkpoint_sha256=file_sha256(best.checkpoint), step=step,
        val_loss=best.state.get("val_loss"), data_version=best.run_info.get("data_version"),
        git_commit=best.run_info.get("git_commit") or git_commit(),
        eval_fingerprint=eval_fingerprint(faces, cfg, periods), eval_data=faces.fingerprint,
        manifest=str(paths.accepted), faces_dir=paths.faces, identities=list(faces.identities),
        face_ids=faces.face_ids, device=device, metrics=metrics, estimates=estimates,
        per_seed={str(r.seed): r.evaluation.metrics for r in runs}, landmarks=best.evaluation.details,
        per_image={str(r.seed): r.evaluation.per_image for r in runs})
    if cfg.mlflow:
        record = _log(record, runs, pictures, params)
    where = record.save(paths.evaluation_record(variant))
    if record.mlflow:  # the record itself and the data it was measured on, in the variant's summary run
        from faceswap.tracking import EVALUATION, log_manifest_input, open_run

        run = open_run(params, "", record.mlflow.run_id)
        log_record(run, where)
        log_manifest_input(run, paths.accepted, EVALUATION, commit=record.git_commit)
        run.end()
    ci = {f"{k}_ci_{end}": e[f"ci_{end}"] for k, e in estimates.items() for end in ("lo", "hi")}
    write_json(paths.variant_metrics_file(variant), {"variant": variant, **metrics, **ci})
    return record


def _log(record: EvaluationRecord, runs: list[SeedRun], pictures: Path, params: Params) -> EvaluationRecord:
    """Each seed's numbers into its training run, the variant's mean ± CI and pictures into its summary run."""
    from dataclasses import replace

    tags = {"fingerprint": record.eval_fingerprint}
    if record.data_version:
        tags["data_version"] = str(record.data_version)
    for r in runs:
        log_to_mlflow(r.run_info, record.variant, r.evaluation.metrics, None,
                      tags | {"checkpoint_sha256": file_sha256(r.checkpoint), "seed": str(r.seed)}, r.seed,
                      r.evaluation.metrics.get("step"), params=params)
    best = next(r for r in runs if r.seed == record.representative_seed)
    where = log_to_mlflow(best.run_info, record.variant, record.metrics, pictures,
                          tags | {"checkpoint_sha256": record.checkpoint_sha256}, best.seed, record.step,
                          estimates=record.estimates, params=params)
    return replace(record, mlflow=MlflowRef(**where))


def format_record(r: EvaluationRecord, params: Params) -> str:
    v = r.view
    m = r.metrics

    def f(k: str, spec: str = ".4f") -> str:
        return v.format(k, spec, "n/a") if k in v.metrics else ("n/a" if m.get(k) is None else format(m[k], spec))

    lines = [
        f"evaluate {r.variant}: {f('faces_a', '.0f')} + {f('faces_b', '.0f')} test faces, {f('seeds', '.0f')} "
        "training seed(s); mean [95% CI]",
        f"  reconstruction  LPIPS {f('recon_lpips')}  PSNR {f('recon_psnr', '.2f')} dB  SSIM {f('recon_ssim')}",
        f"  checkerboard    recon excess {f('recon_checkerboard_excess')}  error {f('recon_error_checkerboard')}"
        f"  swap excess {f('swap_checkerboard_excess')}",
        f"  flat field      grid {f('flat_grid_score')} (skin {f('flat_grid_score_skin')}, grey "
        f"{f('flat_grid_score_grey')}, mean code {f('flat_grid_score_mean_code')})  lattice share "
        f"{f('flat_lattice_share', '.5f')}",
        f"  identity        distance to the centroid: truth {f('truth_identity_distance', '.3f')}  recon "
        f"{f('recon_identity_distance', '.3f')}  swap {f('swap_identity_distance', '.3f')};  swaps verified as the "
        f"target (within {f('identity_threshold', '.3f')}) a→b {f('swap_identity_verified_a2b', '.2f')}  "
        f"b→a {f('swap_identity_verified_b2a', '.2f')}",
        f"                  swaps nearer the target than the source a→b {f('swap_identity_success_a2b', '.2f')}  "
        f"b→a {f('swap_identity_success_b2a', '.2f')}  (real test faces {f('truth_identity_success', '.2f')})",
        f"  swap            cycle LPIPS {f('cycle_lpips')}  landmark NME {f('landmark_nme')}"
        f"  detection failures {f('landmark_failure_rate', '.1%')}",
        f"  expression      source ↔ swap r {f('swap_expression_corr', '.2f')} (mouth {f('swap_mouth_corr', '.2f')}, "
        f"eyes {f('swap_eyes_corr', '.2f')}, yaw {f('swap_yaw_corr', '.2f')}, pitch {f('swap_pitch_corr', '.2f')}); "
        f"reconstructions {f('recon_expression_corr', '.2f')}; swaps without usable landmarks "
        f"{f('swap_expression_unfitted', '.0%')}",
        f"  swap follows    retrieved as the target at its own sharpness a→b {f('swap_identity_retrieved_a2b', '.2f')}"
        f"  b→a {f('swap_identity_retrieved_b2a', '.2f')};  collapse a→b {f('swap_collapse_a2b', '.2f')}  b→a "
        f"{f('swap_collapse_b2a', '.2f')};  structure r a→b {f('swap_follow_structure_a2b', '.2f')}  b→a "
        f"{f('swap_follow_structure_b2a', '.2f')}",
        f"                  every swap: mouth r a→b {f('swap_follow_mouth_a2b', '.2f')}  b→a "
        f"{f('swap_follow_mouth_b2a', '.2f')};  expression r a→b {f('swap_follow_expression_a2b', '.2f')}  b→a "
        f"{f('swap_follow_expression_b2a', '.2f')};  unmeasured {f('swap_follow_unmeasured', '.0%')}",
        f"  → {params.paths.variant_metrics_file(r.variant)}, {params.paths.pictures_dir(r.variant)}/ "
        f"({', '.join(PICTURES)})",
    ]
    if r.mlflow:
        lines.append(f"  → MLflow run {r.mlflow.run_id} ({r.mlflow.tracking_uri})")
    return "\n".join(lines)
