"""Test-set evaluation of one variant over its training seeds (``faceswap evaluate --variant V``, stage
``evaluate@V``).

On the ``test`` faces of both identities (never seen in training, and not the ``val`` faces that chose the
checkpoint) it measures every seed's model: reconstruction quality (LPIPS-alex, PSNR, SSIM), the checkerboard
score of reconstructions and swaps (a swap's against the target identity's test truth), identity transfer of
the swaps, swap quality (cycle consistency, landmark preservation with a failure rate), and draws the pictures
people look at (preview grid, zoomed flat region, mean error spectrum) for the seed that validation ranks best.
Every number is the mean over seeds with a 95% CI (:mod:`faceswap.stats`). Definitions: docs/metrics.md; names
and directions: :mod:`faceswap.metrics.catalog`.

Outputs: ``metrics/<variant>.json`` (flat numbers with ``_ci_lo``/``_ci_hi``, for DVC), ``reports/<variant>/``
(pictures), ``reports/evaluations/<variant>.json`` (everything the registry needs, per seed and per face), each
seed's numbers in its training run and the variant's summary in an MLflow run named after the variant, the
parent of its seed runs.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceswap.devices import resolve_device
from faceswap.evaluation import EvaluateError
from faceswap.evaluation.faces import EvalFaces, load_eval_faces
from faceswap.evaluation.metrics import (
    Evaluation,
    SeedRun,
    aggregate,
    detect_landmarks,
    evaluate_model,
    identity_metrics,
    landmark_errors,
    run_model,
)
from faceswap.evaluation.pictures import PICTURES, write_pictures
from faceswap.evaluation.runs import log_record, log_to_mlflow
from faceswap.files import file_sha256
from faceswap.layout import run_dir
from faceswap.tracking import DEFAULT_TRACKING_URI, ensure_experiment, git_commit

if TYPE_CHECKING:
    from faceswap.config import EvaluateParams, Params

EVALUATIONS = "evaluations"  # reports/evaluations/<variant>.json: the full record (register reads it)

__all__ = [  # the pieces, re-exported: callers keep importing them from faceswap.evaluate
    "DEFAULT_TRACKING_URI", "EVALUATIONS", "PICTURES", "EvalFaces", "EvaluateError", "Evaluation", "SeedRun",
    "VariantEvaluation", "aggregate", "detect_landmarks", "ensure_experiment", "eval_fingerprint", "evaluate_model",
    "evaluate_variant", "evaluation_record_path", "format_evaluation", "identity_metrics", "landmark_errors",
    "load_eval_faces", "log_to_mlflow", "run_model", "write_pictures",
]


def eval_fingerprint(faces: EvalFaces, cfg: EvaluateParams, periods: tuple[int, ...]) -> str:
    """The same faces measured the same way: what two evaluations must share to be compared."""
    keys = ("max_faces", "lpips_net", "landmarks", "landmark_faces", "landmark_upscale", "landmark_min_score")
    how = {k: getattr(cfg, k) for k in keys} | {"periods": list(periods)}
    return hashlib.sha256((faces.fingerprint + json.dumps(how, sort_keys=True)).encode()).hexdigest()


# --- the stage ----------------------------------------------------------------------------------------


@dataclass
class VariantEvaluation:
    variant: str
    metrics: dict[str, float | None]
    metrics_path: Path
    report_dir: Path
    mlflow: dict[str, str] | None
    estimates: dict[str, dict[str, Any]] = field(default_factory=dict)


def evaluation_record_path(reports_dir: str | Path, variant: str) -> Path:
    """``reports/evaluations/<variant>.json``: one folder for every variant's record, so the register stage
    can depend on the folder (DVC has no per-item deps) without overlapping its own outputs."""
    return Path(reports_dir) / EVALUATIONS / f"{variant}.json"


def _load_run(variant: str, seed: int, models_dir: str | Path, device: str) -> tuple[Any, dict, dict, Path]:
    from faceswap.checkpoint import CheckpointError, load_model

    folder = run_dir(models_dir, variant, seed)
    ckpt = folder / "model.pt"
    try:
        model, state = load_model(ckpt, device)
    except CheckpointError as err:
        raise EvaluateError(f"{err} (train it first: dvc repro train@{variant}-{seed})") from None
    run_info: dict[str, Any] = {}
    run_json = folder / "run.json"
    if run_json.is_file():
        try:
            run_info = json.loads(run_json.read_text())
        except ValueError as err:
            raise EvaluateError(f"{run_json} is not valid JSON: {err}") from None
    if len(model.config.identities) != 2:
        raise EvaluateError(f"{ckpt} has {len(model.config.identities)} decoders; evaluation needs exactly two")
    return model, state, run_info, ckpt


def evaluate_variant(
    variant: str,
    params: Params,
    models_dir: str | Path = "models",
    metrics_dir: str | Path = "metrics",
    reports_dir: str | Path = "reports",
    detector: Any = None,
) -> VariantEvaluation:
    """The ``evaluate@<variant>`` stage: every training seed of the variant on the test faces; the mean over
    seeds with a 95% CI for every metric; pictures of the seed that validation ranks best."""
    cfg = params.evaluate
    periods = params.metrics.checkerboard.periods
    device = resolve_device(cfg.device, "evaluate.device")
    runs: list[SeedRun] = []
    faces: EvalFaces | None = None
    identity = None
    for seed in params.train.seeds:
        model, state, run_info, ckpt = _load_run(variant, seed, models_dir, device)
        if cfg.identity and identity is None:  # after the first checkpoint: a missing model is the first error
            from faceswap.identity_reference import IdentityReference

            identity = IdentityReference.load(cfg.identity_reference)
        if faces is None:
            faces = load_eval_faces(cfg.data, tuple(model.config.identities), model.config.image_size,
                                    cfg.faces_dir, cfg.max_faces)
        elif tuple(model.config.identities) != faces.identities:
            raise EvaluateError(f"{ckpt} decodes {model.config.identities}, seed {runs[0].seed} {faces.identities}")
        ev = evaluate_model(model, faces, cfg, periods, device, detector, identity)
        ev.metrics["step"] = float(int(state.get("step", 0) or 0))
        runs.append(SeedRun(seed, ckpt, state, run_info, ev))
    if faces is None:
        raise EvaluateError("train.seeds is empty: no model to evaluate")
    identities = faces.identities
    metrics, estimates = aggregate(runs)
    metrics["seeds"] = float(len(runs))
    best = min(runs, key=lambda r: (math.inf if r.state.get("val_loss") is None else r.state["val_loss"], r.seed))

    report_dir = Path(reports_dir) / variant
    report_dir.mkdir(parents=True, exist_ok=True)
    step = int(best.state.get("step", 0) or 0)
    write_pictures(best.evaluation, identities, cfg, report_dir, f"{variant} (seed {best.seed}, step {step})")
    fingerprint = eval_fingerprint(faces, cfg, periods)
    provenance = {
        "variant": variant,
        "seeds": [r.seed for r in runs],
        "representative_seed": best.seed,
        "checkpoint": str(best.checkpoint),
        "checkpoint_sha256": file_sha256(best.checkpoint),
        "step": step,
        "val_loss": best.state.get("val_loss"),
        "data_version": best.run_info.get("data_version"),
        "git_commit": best.run_info.get("git_commit") or git_commit(),
        "eval_fingerprint": fingerprint,
        "eval_data": faces.fingerprint,
        "manifest": str(cfg.data),
        "faces_dir": cfg.faces_dir,
        "identities": list(identities),
        "face_ids": faces.face_ids,
        "device": device,
    }
    where = None
    if cfg.mlflow:
        tags = {"fingerprint": fingerprint}
        if provenance["data_version"]:
            tags["data_version"] = str(provenance["data_version"])
        for r in runs:  # each seed's own numbers into its training run
            log_to_mlflow(r.run_info, variant, r.evaluation.metrics, None,
                          tags | {"checkpoint_sha256": file_sha256(r.checkpoint), "seed": str(r.seed)}, r.seed,
                          r.evaluation.metrics.get("step"), params=params)
        where = log_to_mlflow(best.run_info, variant, metrics, report_dir,
                              tags | {"checkpoint_sha256": provenance["checkpoint_sha256"]}, best.seed, step,
                              estimates=estimates, params=params)
    detail = {**provenance, "metrics": metrics, "estimates": estimates,
              "per_seed": {str(r.seed): r.evaluation.metrics for r in runs},
              "landmarks": best.evaluation.details,
              "per_image": {str(r.seed): r.evaluation.per_image for r in runs}, "mlflow": where}
    record = evaluation_record_path(reports_dir, variant)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(detail, indent=2) + "\n")
    if where:
        log_record(where, record, params)

    metrics_path = Path(metrics_dir) / f"{variant}.json"
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    ci = {f"{k}_ci_{end}": e[f"ci_{end}"] for k, e in estimates.items() for end in ("lo", "hi")}
    metrics_path.write_text(json.dumps({"variant": variant, **metrics, **ci}, indent=2) + "\n")
    return VariantEvaluation(variant, metrics, metrics_path, report_dir, where, estimates)


def format_evaluation(r: VariantEvaluation) -> str:
    m = r.metrics

    def f(k: str, spec: str = ".4f") -> str:
        v = m.get(k)
        if v is None:
            return "n/a"
        e = r.estimates.get(k)
        return f"{format(v, spec)} [{format(e['ci_lo'], spec)}, {format(e['ci_hi'], spec)}]" if e else format(v, spec)

    lines = [
        f"evaluate {r.variant}: {f('faces_a', '.0f')} + {f('faces_b', '.0f')} test faces, {f('seeds', '.0f')} "
        "training seed(s); mean [95% CI]",
        f"  reconstruction  LPIPS {f('recon_lpips')}  PSNR {f('recon_psnr', '.2f')} dB  SSIM {f('recon_ssim')}",
        f"  checkerboard    recon excess {f('recon_checkerboard_excess')}  error {f('recon_error_checkerboard')}"
        f"  swap excess {f('swap_checkerboard_excess')}",
        f"  identity        swaps nearer the target a→b {f('swap_identity_success_a2b', '.2f')}  "
        f"b→a {f('swap_identity_success_b2a', '.2f')}  (real test faces {f('truth_identity_success', '.2f')})",
        f"  swap            cycle LPIPS {f('cycle_lpips')}  landmark NME {f('landmark_nme')}"
        f"  detection failures {f('landmark_failure_rate', '.1%')}",
        f"  → {r.metrics_path}, {r.report_dir}/ ({', '.join(PICTURES)})",
    ]
    if r.mlflow:
        lines.append(f"  → MLflow run {r.mlflow['run_id']} ({r.mlflow['tracking_uri']})")
    return "\n".join(lines)
