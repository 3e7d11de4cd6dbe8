"""Where an evaluation's numbers go in MLflow: each seed's into its training run, the variant's mean ± CI and
pictures into a run named after the variant (the parent of its seed runs), in the project's one store and
experiment (:mod:`faceswap.tracking`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceswap.evaluation import EvaluateError

if TYPE_CHECKING:
    from faceswap.config import Params
    from faceswap.tracking import Tracker

SUMMARY_KIND = "variant-summary"


def _clean(metrics: dict[str, float | None]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}


def log_to_mlflow(
    run_info: dict[str, Any], variant: str, metrics: dict[str, float | None], report_dir: Path | None,
    tags: dict[str, str], seed: int, step: float | int | None = None, estimates: dict[str, dict] | None = None,
    params: Params | None = None,
) -> dict[str, str]:
    """Log one evaluation to MLflow and return where.

    Without ``estimates``: one seed's numbers into its training run (named in run.json; else a new run).
    With ``estimates``: the variant's summary (mean over seeds with ``_ci_lo``/``_ci_hi``, and the pictures)
    into a run named after the variant, the parent of its seed runs, so the UI groups runs by variant.
    """
    from mlflow.exceptions import MlflowException

    from faceswap.tracking import Tracker, connect, ensure_experiment, tracking_uri

    uri = tracking_uri(params)
    client = connect(uri)
    run_id = run_info.get("mlflow_run_id")
    if run_id:
        try:
            client.get_run(run_id)
        except MlflowException:
            raise EvaluateError(
                f"run.json names MLflow run {run_id}, which {uri} does not hold; point MLFLOW_TRACKING_URI (or "
                "mlflow.tracking_uri in params.yaml) at the training store or remove mlflow_run_id from run.json"
            ) from None
    exp_id = run_info.get("mlflow_experiment_id") or ensure_experiment(client, params, uri)
    base_tags = {"variant": variant}
    if estimates is not None:
        seed_run = run_id
        found = client.search_runs([exp_id], filter_string=f"tags.variant = '{variant}' and "
                                   f"tags.`faceswap.kind` = '{SUMMARY_KIND}'", max_results=1)
        run_id = found[0].info.run_id if found else client.create_run(
            exp_id, run_name=variant, tags=base_tags | {"faceswap.kind": SUMMARY_KIND}).info.run_id
        if seed_run:
            client.set_tag(seed_run, "mlflow.parentRunId", run_id)
    elif not run_id:
        run_id = client.create_run(exp_id, run_name=f"{variant}-seed{seed}-evaluate",
                                   tags=base_tags | {"seed": str(seed)}).info.run_id
    values = {f"eval/{k}": v for k, v in _clean(metrics).items()}
    for k, e in (estimates or {}).items():
        values[f"eval/{k}_ci_lo"] = float(e["ci_lo"])
        values[f"eval/{k}_ci_hi"] = float(e["ci_hi"])
    run = Tracker(client.get_run(run_id), client, uri)
    run.log_metrics(values, step=int(step or 0))
    run.set_tags({f"eval.{k}": v for k, v in tags.items()} | base_tags)
    if report_dir is not None:
        run.log_artifacts(report_dir, "evaluation")
    exp_id = run.experiment_id
    run.end()
    return {"tracking_uri": uri, "run_id": run_id, "experiment_id": exp_id}


def log_record(run: Tracker, record: Path) -> None:
    """The evaluation record file into the variant's summary run."""
    run.log_artifact(record, "evaluation")
