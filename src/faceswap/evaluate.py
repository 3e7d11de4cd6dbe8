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
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faceswap.devices import resolve_device
from faceswap.errors import FaceswapError
from faceswap.files import file_sha256
from faceswap.layout import run_dir
from faceswap.metrics.catalog import EVAL_METRICS, INFO
from faceswap.pictures import (
    evenly_spaced,
    mean_error_spectrum,
    preview_grid,
    save_spectrum_figure,
    to_uint8,
    zoom_panel,
)
from faceswap.tracking import git_commit

if TYPE_CHECKING:
    import torch

    from faceswap.config import EvaluateParams, Params
    from faceswap.identity_reference import IdentityReference
    from faceswap.model import FaceSwapAutoencoder

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "faceswap"
EVALUATIONS = "evaluations"  # reports/evaluations/<variant>.json: the full record (register reads it)
PICTURES = ("preview.png", "zoom.png", "spectrum.png")


class EvaluateError(FaceswapError, RuntimeError):
    """Evaluation inputs that are missing or inconsistent (no val faces, wrong crop size, …)."""


# --- held-out faces ---------------------------------------------------------------------------------


@dataclass
class EvalFaces:
    """The held-out faces of the two identities, in a fixed order, and a fingerprint of exactly them."""

    identities: tuple[str, str]
    face_ids: dict[str, list[str]]
    images: dict[str, np.ndarray]  # identity → (N, H, W, 3) uint8
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if not self.fingerprint:
            h = hashlib.sha256()
            for ident in self.identities:
                h.update(ident.encode())
                for fid in self.face_ids[ident]:
                    h.update(fid.encode())
                h.update(np.ascontiguousarray(self.images[ident]).tobytes())
            self.fingerprint = h.hexdigest()


def load_eval_faces(
    manifest: str | Path,
    identities: tuple[str, str],
    image_size: int,
    faces_dir: str | Path | None = None,
    max_faces: int | None = None,
) -> EvalFaces:
    """The ``split == 'test'`` crops of each identity, sorted by face id, at most ``max_faces`` evenly spaced.

    Test, not val: val chose the checkpoint, so a number measured on it would flatter the model.
    """
    from faceswap.data.dataset import resolve_crop
    from faceswap.data.manifest import read_manifest
    from faceswap.imageio import ImageReadError, read_rgb

    manifest = Path(manifest)
    if not manifest.is_file():
        raise EvaluateError(f"face manifest not found: {manifest} (run the validate stage, or set evaluate.data)")
    df = read_manifest(manifest)
    missing = [c for c in ("face_id", "identity", "split", "path") if c not in df.columns]
    if missing:
        raise EvaluateError(f"{manifest} lacks columns {missing}")
    fdir = Path(faces_dir) if faces_dir else None
    ids: dict[str, list[str]] = {}
    images: dict[str, np.ndarray] = {}
    for ident in identities:
        rows = df[(df["identity"] == ident) & (df["split"] == "test")].sort_values("face_id")
        if len(rows) < 2:
            raise EvaluateError(
                f"identity {ident!r} has {len(rows)} test faces (split == 'test') in {manifest}; need at least 2 "
                "(set split.test_fraction and rerun the align stage)"
            )
        rows = rows.iloc[evenly_spaced(len(rows), max_faces)]
        crops = []
        for fid, rel in zip(rows["face_id"], rows["path"], strict=True):
            try:
                im = read_rgb(resolve_crop(rel, manifest, fdir))
            except ImageReadError as err:
                raise EvaluateError(f"face {fid}: {err}") from None
            if im.shape[:2] != (image_size, image_size):
                raise EvaluateError(
                    f"face {fid} is {im.shape[1]}×{im.shape[0]}, but the model takes {image_size}×{image_size}"
                )
            crops.append(im)
        ids[ident] = list(rows["face_id"])
        images[ident] = np.stack(crops)
    return EvalFaces(identities, ids, images)


# --- running the model --------------------------------------------------------------------------------


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def run_model(
    model: FaceSwapAutoencoder, faces: EvalFaces, batch_size: int, device: str | torch.device
) -> dict[str, torch.Tensor]:
    """Reconstructions, swaps and round trips of every face, as CPU float tensors (N, 3, H, W) in [0, 1].

    Keys: ``truth_<i>``, ``recon_<i>``, ``swap_<i>`` (face of i rendered as the other identity) and
    ``cycle_<i>`` (the swap brought back to i), for i in the two identities.
    """
    import torch

    a, b = faces.identities
    other = {a: b, b: a}
    out: dict[str, list[torch.Tensor]] = {}
    model = model.to(device).eval()
    with torch.inference_mode():
        for ident in (a, b):
            x_all = _to_tensor(faces.images[ident])
            for start in range(0, len(x_all), batch_size):
                x = x_all[start : start + batch_size].to(device)
                z = model.encode(x)
                rec = model.decode(z, ident)
                swap = model.decode(z, other[ident])
                cyc = model.decode(model.encode(swap), ident)
                for key, t in (("truth", x), ("recon", rec), ("swap", swap), ("cycle", cyc)):
                    out.setdefault(f"{key}_{ident}", []).append(t.float().cpu())
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
    detector: Any = None,
    identity: IdentityReference | None = None,
) -> Evaluation:
    """Every metric of docs/metrics.md for one model on one set of held-out faces (no files written)."""
    from faceswap.metrics.checkerboard import checkerboard_score, checkerboard_score_set, decoder_grid_score
    from faceswap.metrics.image import psnr, ssim

    a, b = faces.identities
    outs = run_model(model, faces, cfg.batch_size, device)
    m: dict[str, float | None] = {}
    per: dict[str, list[float]] = {}
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
        m[f"_recon_cb_{tag}"] = s_rec
        m[f"recon_checkerboard_excess_{tag}"] = g_rec["excess"]
        m[f"_recon_err_cb_{tag}"] = checkerboard_score_set(list(err_np), periods).score
        direction = f"{tag}2{'b' if tag == 'a' else 'a'}"
        m[f"_swap_cb_{direction}"] = s_swap
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
    m["recon_checkerboard"] = _mean(m.pop("_recon_cb_a"), m.pop("_recon_cb_b"))
    m["recon_checkerboard_excess"] = _mean(m["recon_checkerboard_excess_a"], m["recon_checkerboard_excess_b"])
    m["recon_error_checkerboard"] = _mean(m.pop("_recon_err_cb_a"), m.pop("_recon_err_cb_b"))
    m["recon_checkerboard_image"] = float(np.mean(per["recon_checkerboard_a"] + per["recon_checkerboard_b"]))
    m["recon_checkerboard_excess_image"] = float(
        np.mean(per["recon_checkerboard_excess_a"] + per["recon_checkerboard_excess_b"])
    )
    m["recon_error_checkerboard_image"] = float(
        np.mean(per["recon_error_checkerboard_a"] + per["recon_error_checkerboard_b"])
    )
    m["swap_checkerboard"] = _mean(m.pop("_swap_cb_a2b"), m.pop("_swap_cb_b2a"))
    m["swap_checkerboard_excess"] = max(m["swap_checkerboard_excess_a2b"], m["swap_checkerboard_excess_b2a"])
    m["swap_checkerboard_excess_image"] = float(
        np.mean(per["swap_checkerboard_excess_a2b"] + per["swap_checkerboard_excess_b2a"])
    )
    m["cycle_lpips"] = _mean(m["cycle_lpips_a"], m["cycle_lpips_b"])
    if identity is not None:
        m.update(identity_metrics(outs, faces.identities, identity, per))

    details: dict[str, Any] = {}
    if cfg.landmarks:
        if detector is None:
            from faceswap.data.detect import MtcnnDetector

            detector = MtcnnDetector(str(device), min_face_size=max(20, cfg.landmark_upscale // 5))
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
        raise EvaluateError(f"metrics missing from the catalogue (faceswap/metrics/catalog.py): {sorted(unknown)}")
    ordered = {k: m[k] for k in EVAL_METRICS if k in m}
    return Evaluation(ordered, per, outs, details)


def identity_metrics(outs: dict[str, torch.Tensor], identities: tuple[str, str], ref: IdentityReference,
                     per: dict[str, list[float]]) -> dict[str, float | None]:
    """Identity transfer of the swaps in both directions (docs/metrics.md): does a→b look like b to a
    face-recognition network? Per-face values go into ``per`` for the bootstrap."""
    from faceswap.metrics.identity import shared_encoder, transfer_scores

    if tuple(ref.identities) != tuple(identities):
        raise EvaluateError(f"the identity reference is for {list(ref.identities)}, the model decodes "
                            f"{list(identities)}; rerun `dvc repro identity`")
    a, b = identities
    m: dict[str, float | None] = {}
    for tag, src, tgt in (("a2b", a, b), ("b2a", b, a)):
        s = transfer_scores(shared_encoder().describe(to_uint8(outs[f"swap_{src}"]), ref.coverage), src, tgt,
                            ref.centroids)
        for key, name in (("success", "success"), ("distance", "distance"), ("margin", "margin")):
            m[f"swap_identity_{name}_{tag}"] = s[key]
            per[f"swap_identity_{name}_{tag}"] = np.asarray(s[f"{key}_per_face"], dtype=float).tolist()
    for name in ("success", "distance", "margin"):
        m[f"swap_identity_{name}"] = _mean(m[f"swap_identity_{name}_a2b"], m[f"swap_identity_{name}_b2a"])
    m["truth_identity_success"] = float(np.mean([ref.truth_success[i].mean() for i in identities]))
    return m


# --- pictures -----------------------------------------------------------------------------------------


def write_pictures(ev: Evaluation, identities: tuple[str, str], cfg: EvaluateParams, out_dir: Path, title: str) -> None:
    from faceswap.imageio import write_rgb

    outs = ev.outputs
    write_rgb(out_dir / "preview.png", preview_grid(outs, identities, cfg.preview_rows))
    write_rgb(out_dir / "zoom.png", zoom_panel(outs, identities, cfg.zoom_size, cfg.zoom_factor))
    spectra = {i: mean_error_spectrum(outs[f"truth_{i}"], outs[f"recon_{i}"]) for i in identities}
    save_spectrum_figure(out_dir / "spectrum.png", spectra, title)


# --- provenance and MLflow ----------------------------------------------------------------------------


def eval_fingerprint(faces: EvalFaces, cfg: EvaluateParams, periods: tuple[int, ...]) -> str:
    """The same faces measured the same way: what two evaluations must share to be compared."""
    keys = ("max_faces", "lpips_net", "landmarks", "landmark_faces", "landmark_upscale", "landmark_min_score")
    how = {k: getattr(cfg, k) for k in keys} | {"periods": list(periods)}
    return hashlib.sha256((faces.fingerprint + json.dumps(how, sort_keys=True)).encode()).hexdigest()


def artifact_root_for(tracking_uri: str) -> str | None:
    """``<folder of the sqlite db>/mlruns`` for a sqlite store (the project's layout); None otherwise."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        return (db.resolve().parent / "mlruns").as_uri()
    return None


def ensure_experiment(client: Any, name: str, tracking_uri: str) -> str:
    from faceswap.tracking import mark_model_experiment

    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(
        name, artifact_location=artifact_root_for(tracking_uri))
    mark_model_experiment(client, exp_id)
    return exp_id


def _clean(metrics: dict[str, float | None]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}


def _tracking(run_info: dict[str, Any]) -> tuple[Any, str]:
    import mlflow

    tracking_uri = run_info.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.MlflowClient(tracking_uri), tracking_uri


def log_to_mlflow(
    run_info: dict[str, Any], variant: str, metrics: dict[str, float | None], report_dir: Path | None,
    tags: dict[str, str], seed: int, step: float | int | None = None, estimates: dict[str, dict] | None = None,
) -> dict[str, str]:
    """Log one evaluation to MLflow and return where.

    Without ``estimates``: one seed's numbers into its training run (named in run.json; else a new run).
    With ``estimates``: the variant's summary (mean over seeds with ``_ci_lo``/``_ci_hi``, and the pictures)
    into a run named after the variant, the parent of its seed runs, so the UI groups runs by variant.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client, tracking_uri = _tracking(run_info)
    run_id = run_info.get("mlflow_run_id")
    if run_id:
        try:
            client.get_run(run_id)
        except MlflowException:
            raise EvaluateError(
                f"run.json names MLflow run {run_id}, which {tracking_uri} does not hold; point "
                f"MLFLOW_TRACKING_URI at the training store or remove mlflow_run_id from run.json"
            ) from None
    exp_id = run_info.get("mlflow_experiment_id") or ensure_experiment(client, DEFAULT_EXPERIMENT, tracking_uri)
    base_tags = {"variant": variant}
    if estimates is not None:
        seed_run = run_id
        found = client.search_runs([exp_id], filter_string=f"tags.variant = '{variant}' and "
                                   f"tags.`faceswap.kind` = 'variant-summary'", max_results=1)
        run_id = found[0].info.run_id if found else client.create_run(
            exp_id, run_name=variant, tags=base_tags | {"faceswap.kind": "variant-summary"}).info.run_id
        if seed_run:
            client.set_tag(seed_run, "mlflow.parentRunId", run_id)
    elif not run_id:
        run_id = client.create_run(exp_id, run_name=f"{variant}-seed{seed}-evaluate",
                                   tags=base_tags | {"seed": str(seed)}).info.run_id
    values = {f"eval/{k}": v for k, v in _clean(metrics).items()}
    for k, e in (estimates or {}).items():
        values[f"eval/{k}_ci_lo"] = float(e["ci_lo"])
        values[f"eval/{k}_ci_hi"] = float(e["ci_hi"])
    with mlflow.start_run(run_id=run_id) as run:
        mlflow.log_metrics(values, step=int(step or 0))
        mlflow.set_tags({f"eval.{k}": v for k, v in tags.items()} | base_tags)
        if report_dir is not None:
            mlflow.log_artifacts(str(report_dir), artifact_path="evaluation")
        exp_id = run.info.experiment_id
    return {"tracking_uri": tracking_uri, "run_id": run_id, "experiment_id": exp_id}


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


@dataclass
class SeedRun:
    seed: int
    checkpoint: Path
    state: dict[str, Any]
    run_info: dict[str, Any]
    evaluation: Evaluation


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


def aggregate(runs: list[SeedRun]) -> tuple[dict[str, float | None], dict[str, dict[str, Any]]]:
    """Every metric as the mean over seeds, and an estimate (mean, 95% CI) for each.

    Per-face metrics (catalog.PER_FACE) get the hierarchical bootstrap over seeds and test faces; the others
    (set scores, rates) the seeds' range, labelled as such.
    """
    from faceswap.metrics.catalog import PER_FACE
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
            estimates[s] = {**hierarchical_bootstrap([g]).as_dict(), "kind": "bootstrap"}
        estimates[name] = {**hierarchical_bootstrap(groups).as_dict(), "kind": "bootstrap"}
    for k, v in metrics.items():
        if k in estimates or v is None or EVAL_METRICS[k][0] == INFO:
            continue
        vals = [float(r.evaluation.metrics[k]) for r in runs]
        estimates[k] = {"mean": v, "ci_lo": min(vals), "ci_hi": max(vals), "seeds": len(runs), "kind": "seed-range"}
    return metrics, estimates


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
                          r.evaluation.metrics.get("step"))
        where = log_to_mlflow(best.run_info, variant, metrics, report_dir,
                              tags | {"checkpoint_sha256": provenance["checkpoint_sha256"]}, best.seed, step,
                              estimates=estimates)
    detail = {**provenance, "metrics": metrics, "estimates": estimates,
              "per_seed": {str(r.seed): r.evaluation.metrics for r in runs},
              "landmarks": best.evaluation.details,
              "per_image": {str(r.seed): r.evaluation.per_image for r in runs}, "mlflow": where}
    record = evaluation_record_path(reports_dir, variant)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(detail, indent=2) + "\n")
    if where:
        import mlflow

        mlflow.set_tracking_uri(where["tracking_uri"])
        with mlflow.start_run(run_id=where["run_id"]):
            mlflow.log_artifact(str(record), artifact_path="evaluation")

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
