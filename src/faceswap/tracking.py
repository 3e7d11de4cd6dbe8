"""MLflow tracking for training runs, plus the provenance every run records (data version, git commit).

``import mlflow`` happens inside :func:`start_run` only (it costs ~3 s). Tracking goes to sqlite
(``sqlite:///mlflow.db``) and a new experiment's artifacts to an explicit absolute ``mlruns/<name>``
location, so where artifacts land never depends on the working directory of a later reader.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from faceswap.config import MlflowParams
from faceswap.files import file_digest

GROUP_ENV = "FACESWAP_PIPELINE_RUN"


def file_md5(path: str | Path) -> str:
    return file_digest(path, "md5")


def git_commit(cwd: str | Path = ".") -> str:
    """HEAD's commit, suffixed ``-dirty`` when tracked files differ from it; ``unknown`` outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def artifact_location(cfg: MlflowParams) -> str:
    return (Path(cfg.artifact_root).resolve() / cfg.experiment).as_uri()


class Tracker:
    """One MLflow run; every method is a no-op when tracking is disabled (``run`` is None)."""

    def __init__(self, run: Any = None, client: Any = None, cfg: MlflowParams | None = None) -> None:
        self.run, self.client, self.cfg = run, client, cfg

    @property
    def run_id(self) -> str | None:
        return self.run.info.run_id if self.run else None

    @property
    def experiment_id(self) -> str | None:
        return self.run.info.experiment_id if self.run else None

    def log_params(self, params: dict[str, Any]) -> None:
        if not self.run:
            return
        from mlflow.entities import Param

        flat = flatten(params)
        existing = self.client.get_run(self.run_id).data.params  # a resumed run already holds them
        items = [Param(k, str(v)[:6000]) for k, v in flat.items() if k not in existing]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if not self.run:
            return
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), ts, step) for k, v in metrics.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.run:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.run:
            for k, v in tags.items():
                self.client.set_tag(self.run_id, k, str(v))

    def end(self, status: str = "FINISHED") -> None:
        if self.run:
            self.client.set_terminated(self.run_id, status)
            self.run = None


# MLflow 3's UI opens an experiment on its GenAI "Overview" (traces) unless the experiment says it holds model
# training runs; this tag is what the UI reads.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


def mark_model_experiment(client: Any, experiment_id: str) -> None:
    """Tag the experiment as model development, so the UI opens on its training runs."""
    exp = client.get_experiment(experiment_id)
    if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def start_run(
    cfg: MlflowParams, run_name: str, run_id: str | None = None, tags: dict[str, str] | None = None
) -> Tracker:
    """Create (or reopen, to resume) a run in the configured experiment; a disabled config gives a no-op."""
    if not cfg.enabled:
        return Tracker()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=cfg.tracking_uri)
    exp = client.get_experiment_by_name(cfg.experiment)
    if exp is None:
        try:
            exp_id = client.create_experiment(cfg.experiment, artifact_location=artifact_location(cfg))
        except MlflowException:  # created meanwhile by a parallel stage
            exp_id = client.get_experiment_by_name(cfg.experiment).experiment_id
    else:
        exp_id = exp.experiment_id
    mark_model_experiment(client, exp_id)
    run = None
    if run_id:
        try:
            run = client.get_run(run_id)
            client.update_run(run_id, status="RUNNING")
        except MlflowException:
            run = None
    if run is None:
        run = client.create_run(exp_id, run_name=run_name, tags=tags or {})
    tracker = Tracker(run, client, cfg)
    if run_id and run.info.run_id == run_id and tags:
        tracker.set_tags(tags)
    return tracker
