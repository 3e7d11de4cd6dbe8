"""The one MLflow module: where the store is, where artifacts go, and the runs every stage logs to.

- **The store** (:func:`tracking_uri`): ``$MLFLOW_TRACKING_URI`` if set, else ``mlflow.tracking_uri`` of
  params.yaml (``sqlite:///mlflow.db``). A relative sqlite path is made absolute against the working
  directory, which is the repository root for every command and DVC stage, so a server or a later reader
  started elsewhere finds the same database.
- **The artifacts** (:func:`artifact_location`): the experiment is created by whichever stage comes first, always
  with ``<artifact_root>/<experiment>``; a relative ``artifact_root`` lies beside a sqlite database (else in the
  working directory); a remote (http) store keeps its server's own artifact root.
- **The runs** (:func:`open_run`): train, validate, evaluate and register all log through one :class:`Tracker`
  into the one experiment, tagged so the MLflow 3 UI opens on its training runs; training runs are named
  ``<variant>-seed<k>`` and tagged ``variant`` and ``seed``.
- **The data** (:func:`log_manifest_input`): the face manifest a run trained or was evaluated on is logged as the
  run's MLflow dataset input (the UI's *Dataset* column), its digest the file's DVC md5, tagged with the commit.

- **Concurrent writers** (:func:`serve_store`): several training runs at once (the flow's fan-out) log through an
  MLflow tracking server on 127.0.0.1 in front of the sqlite store, never to the file directly: the server is the
  one process that writes it, and a client retries what the server could not write (HTTP 5xx) instead of losing
  it. tests/test_tracking.py runs N writers at full rate through it and counts every metric.

No other module sets the tracking URI or builds an ``MlflowClient`` (tests/test_tracking.py checks this).
``import mlflow`` happens inside functions only (it costs ~3 s).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceswap.files import file_digest

if TYPE_CHECKING:
    from mlflow.entities import Dataset

    from faceswap.config import MlflowParams, Params

GROUP_ENV = "FACESWAP_PIPELINE_RUN"
# Set beside MLFLOW_TRACKING_URI by whoever puts a server in front of the project's store: the store behind it,
# which records (run.json) name, so a reader finds the runs after the server is gone.
STORE_ENV = "FACESWAP_TRACKING_STORE"


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


DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
TRACKING_ENV = "MLFLOW_TRACKING_URI"
TELEMETRY_OFF = {"DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}


def _cfg(params: Params | MlflowParams | None) -> MlflowParams:
    from faceswap.config import MlflowParams, Params

    if isinstance(params, Params):
        return params.mlflow
    return params if params is not None else MlflowParams()


def tracking_uri(params: Params | MlflowParams | None = None) -> str:
    """The store every stage uses: ``$MLFLOW_TRACKING_URI``, else ``mlflow.tracking_uri``; sqlite made absolute."""
    uri = os.environ.get(TRACKING_ENV) or _cfg(params).tracking_uri or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    return uri


def is_local(uri: str) -> bool:
    """A store on this machine (sqlite or a folder), whose artifacts are local folders too."""
    return "://" not in uri or uri.startswith(("sqlite:", "file:"))


def artifact_root(params: Params | MlflowParams | None = None, uri: str | None = None) -> Path:
    """``mlflow.artifact_root`` made absolute: beside a sqlite database, else against the working directory."""
    cfg = _cfg(params)
    uri = uri or tracking_uri(cfg)
    root = Path(cfg.artifact_root)
    if root.is_absolute():
        return root
    base = Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else Path.cwd()
    return (base / root).resolve()


def artifact_location(params: Params | MlflowParams | None = None, uri: str | None = None) -> str | None:
    """The one artifact layout: ``<artifact_root>/<experiment>``; None (the server's own) for a remote store."""
    cfg = _cfg(params)
    uri = uri or tracking_uri(cfg)
    return (artifact_root(cfg, uri) / cfg.experiment).as_uri() if is_local(uri) else None


def connect(uri: str) -> Any:
    """An ``MlflowClient`` on ``uri``, also made the fluent API's store (``log_model``, ``register_model``,
    ``download_artifacts`` read it); telemetry off. The only place the tracking URI is set."""
    for k, v in TELEMETRY_OFF.items():
        os.environ.setdefault(k, v)
    import mlflow

    before = os.environ.get(TRACKING_ENV)
    mlflow.set_tracking_uri(uri)
    # MLflow also exports the URI to $MLFLOW_TRACKING_URI; undo that, or the environment (which wins in
    # tracking_uri) would pin every later stage of this process to the first store it connected to
    if before is None:
        os.environ.pop(TRACKING_ENV, None)
    else:
        os.environ[TRACKING_ENV] = before
    return mlflow.MlflowClient(uri)


def ensure_experiment(client: Any, params: Params | MlflowParams | None = None, uri: str | None = None) -> str:
    """The project experiment's id, created with the one artifact layout by whichever stage comes first, and
    tagged so the MLflow 3 UI opens on its training runs."""
    from mlflow.exceptions import MlflowException

    cfg = _cfg(params)
    exp = client.get_experiment_by_name(cfg.experiment)
    if exp is None:
        try:
            exp_id = client.create_experiment(cfg.experiment, artifact_location=artifact_location(cfg, uri))
        except MlflowException:  # created meanwhile by a parallel stage
            exp_id = client.get_experiment_by_name(cfg.experiment).experiment_id
    else:
        exp_id = exp.experiment_id
    mark_model_experiment(client, exp_id)
    return exp_id


class Tracker:
    """One MLflow run; every method is a no-op when tracking is disabled (``run`` is None)."""

    def __init__(self, run: Any = None, client: Any = None, uri: str | None = None) -> None:
        self.run, self.client, self.uri = run, client, uri

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
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), ts, step) for k, v in metrics.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.run:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        if self.run:
            self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.run:
            for k, v in tags.items():
                self.client.set_tag(self.run_id, k, str(v))

    def end(self, status: str = "FINISHED") -> None:
        if self.run:
            self.client.set_terminated(self.run_id, status)
            self.run = None


# MLflow 3's UI opens an experiment on its GenAI "Overview" (traces) unless told it holds model training runs.
# Earlier 3.x releases read the experiment's kind tag; 3.17 (pinned here) ignores it and follows a per-browser
# setting (default GenAI) that the ``workflowType`` query parameter overrides and the UI keeps while navigating
# (seen in headless Chromium: docs/img/mlflow-runs.png). So the tag is set and every link carries the parameter.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
UI_QUERY = "?workflowType=machine_learning"


def ui_url(base: str, experiment_id: str | None = None, run_id: str | None = None) -> str:
    """A link into the MLflow UI at ``base`` that opens on the model-training views (runs, not traces)."""
    path = "#/experiments"
    if experiment_id:
        path += f"/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
    return f"{base.rstrip('/')}/{path}{UI_QUERY}"


def mark_model_experiment(client: Any, experiment_id: str) -> None:
    """Tag the experiment as model development, so the UI opens on its training runs."""
    exp = client.get_experiment(experiment_id)
    if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def open_run(
    params: Params | MlflowParams | None, run_name: str, run_id: str | None = None,
    tags: dict[str, str] | None = None, enabled: bool = True,
) -> Tracker:
    """Reopen run ``run_id`` (to resume or add to it) or create one named ``run_name`` in the project experiment;
    every stage logs through this. ``enabled=False`` gives a no-op tracker."""
    if not enabled:
        return Tracker()
    from mlflow.exceptions import MlflowException

    uri = tracking_uri(params)
    client = connect(uri)
    run = None
    if run_id:
        try:
            run = client.get_run(run_id)
        except MlflowException:
            run = None
    if run is None:
        exp_id = ensure_experiment(client, params, uri)
        run = client.create_run(exp_id, run_name=run_name, tags=tags or {})
    else:
        mark_model_experiment(client, run.info.experiment_id)
    tracker = Tracker(run, client, os.environ.get(STORE_ENV) or uri)
    if run_id and run.info.run_id == run_id and tags:
        tracker.set_tags(tags)
    return tracker


def start_run(
    params: Params | MlflowParams | None, run_name: str, run_id: str | None = None,
    tags: dict[str, str] | None = None, enabled: bool = True,
) -> Tracker:
    """A training run (``<variant>-seed<k>``), marked RUNNING until :meth:`Tracker.end`; a resumed one reopened."""
    tracker = open_run(params, run_name, run_id, tags, enabled)
    if tracker.run is not None and run_id and tracker.run_id == run_id:
        tracker.client.update_run(run_id, status="RUNNING")
    return tracker


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the MLflow server exited with status {proc.returncode} before it was up")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"the MLflow server at {url} did not answer /health within {timeout_s:.0f} s")


@contextlib.contextmanager
def serve_store(params: Params | MlflowParams | None = None, log: Path | None = None, root: Path | None = None,
                timeout_s: float = 120.0) -> Iterator[dict[str, str]]:
    """An MLflow tracking server on 127.0.0.1 (a free port) in front of the project's local store, for as long as
    the block runs; yields the environment that points a child process at it (``MLFLOW_TRACKING_URI`` and
    :data:`STORE_ENV`). An http store is already a server: it is yielded as it is, and nothing is started.

    The experiment is created first on the store itself, so it keeps the one artifact layout; the server does
    not proxy artifacts (the runs write them to that folder directly, as they do without a server). A relative
    sqlite path is read against ``root`` (the repository the stages run in), else the working directory.
    """
    from faceswap.config import MlflowParams

    cfg = _cfg(params)
    raw = os.environ.get(TRACKING_ENV) or cfg.tracking_uri
    if root is not None and raw.startswith("sqlite:///") and not raw.startswith("sqlite:////"):
        raw = "sqlite:///" + str((Path(root) / raw.removeprefix("sqlite:///")).resolve())  # as the stages see it
    uri = tracking_uri(MlflowParams(tracking_uri=raw))
    if not uri.startswith("sqlite:"):
        yield {TRACKING_ENV: uri}
        return
    cfg = cfg.model_copy(update={"tracking_uri": uri})
    ensure_experiment(connect(uri), cfg, uri)  # also creates the schema: N fresh clients would race on it
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    exe = Path(sys.executable).with_name("mlflow")
    args = [str(exe) if exe.exists() else "mlflow", "server", "--backend-store-uri", uri, "--registry-store-uri", uri,
            "--default-artifact-root", artifact_root(cfg, uri).as_uri(), "--no-serve-artifacts",
            "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **TELEMETRY_OFF},
                            start_new_session=True)
    try:
        _wait_healthy(url, proc, timeout_s)
        yield {TRACKING_ENV: url, STORE_ENV: uri}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server's workers are its children
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if log:
            out.close()


TRAINING, EVALUATION = "training", "evaluation"  # dataset contexts (the UI shows them beside the dataset)
COMMIT_TAG = "git_commit"
RACE_RETRIES = 3  # a dataset logged by several runs at once (see log_manifest_input)


def _manifest_dataset(manifest: Path, digest: str) -> Dataset:
    """The manifest as an ``mlflow.data`` dataset: named by its path (relative to the repository root, the working
    directory of every stage), sourced at its absolute path, with schema and row count; ``digest`` as given."""
    import warnings

    import mlflow.data
    import pandas as pd
    from mlflow.data.dataset_source_registry import get_dataset_source_from_json

    path = manifest.resolve()
    try:
        name = str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        name = str(path)
    # the source named outright: a plain path resolves two ways ("" and file:, both local) and MLflow warns
    source = get_dataset_source_from_json(json.dumps({"uri": str(path)}), "local")
    dataset = mlflow.data.from_pandas(pd.read_parquet(path), source=source, name=name, digest=digest)
    with warnings.catch_warnings():  # the schema's "integer columns cannot hold missing values" hint is for serving
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer", category=UserWarning)
        return dataset._to_mlflow_entity()


def log_manifest_input(
    tracker: Tracker, manifest: str | Path, context: str, dvc_hash: str | None = None, commit: str | None = None,
) -> str | None:
    """Log the validated face manifest (parquet) as a dataset input of the tracker's run, so the MLflow UI says
    what the run trained (``context="training"``) or was evaluated on (``"evaluation"``).

    The digest is ``dvc_hash`` (the md5 DVC recorded for it), else the file's md5 (DVC's hash of a file: the same
    number); the input carries ``commit`` (default: :func:`git_commit`), so ``dvc checkout`` at that commit
    restores exactly this data. Returns the digest (None when tracking is off).
    """
    if not tracker.run:
        return None
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.exceptions import MlflowException
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    manifest = Path(manifest)
    digest = dvc_hash or file_md5(manifest)
    tags = [InputTag(MLFLOW_DATASET_CONTEXT, context), InputTag(COMMIT_TAG, commit or git_commit())]
    entry = DatasetInput(_manifest_dataset(manifest, digest), tags)
    for attempt in range(RACE_RETRIES + 1):
        try:
            tracker.client.log_inputs(tracker.run_id, datasets=[entry])
            return digest
        except MlflowException as err:
            # runs started together (the fan-out) log the same new dataset at once: MLflow's get-or-create lets
            # all but one insert fail on the table's unique key, and the retry finds the row the winner wrote
            if "UNIQUE constraint failed" not in str(err) or attempt == RACE_RETRIES:
                raise
            time.sleep(0.2 * (attempt + 1))
    return digest
