"""One MLflow module: every stage resolves the same store, creates the experiment with the same artifact layout
and logs into the same experiment (never MLflow's "Default"); no other module picks its own store."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from faceswap.config import MlflowParams, parse_params

from .conftest import REPO

SRC = REPO / "src" / "faceswap"


def _store_calls(path: Path) -> list[str]:
    """Calls that choose a store or an experiment layout: set_tracking_uri, MlflowClient(...), create_experiment."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in ("set_tracking_uri", "MlflowClient", "create_experiment", "set_experiment"):
                found.append(f"{path.relative_to(REPO)}:{node.lineno} {name}")
    return found


def test_only_tracking_py_chooses_the_store():
    offenders = [c for p in sorted(SRC.rglob("*.py")) if p.name != "tracking.py" or p.parent != SRC
                 for c in _store_calls(p)]
    assert not offenders, f"only src/faceswap/tracking.py may choose the MLflow store: {offenders}"
    literal = [str(p.relative_to(REPO)) for p in sorted(SRC.rglob("*.py"))
               if "sqlite:///mlflow.db" in p.read_text() and p.name not in ("tracking.py", "config.py")]
    assert not literal, f"the default store is written out again in {literal}"


def test_every_stage_resolves_the_same_uri(tmp_path, monkeypatch):
    from faceswap.serving.server import resolve_tracking_uri
    from faceswap.tracking import artifact_location, tracking_uri

    monkeypatch.chdir(tmp_path)
    p = parse_params({})
    # default: the repository root's (here: the working directory's) sqlite file, made absolute
    assert tracking_uri(p) == f"sqlite:///{tmp_path / 'mlflow.db'}" == resolve_tracking_uri(p)
    assert artifact_location(p) == (tmp_path / "mlruns" / "faceswap").as_uri()
    # params.yaml's one key, for every stage
    p = parse_params({"mlflow": {"tracking_uri": "sqlite:///store/x.db", "experiment": "e"}})
    assert tracking_uri(p) == f"sqlite:///{tmp_path / 'store' / 'x.db'}" == resolve_tracking_uri(p)
    assert artifact_location(p) == (tmp_path / "store" / "mlruns" / "e").as_uri()  # beside the database
    # the environment wins over params.yaml
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    assert tracking_uri(p) == "http://127.0.0.1:9" == resolve_tracking_uri(p)
    assert artifact_location(p) is None  # a tracking server keeps its own artifact root
    assert tracking_uri(MlflowParams()) == tracking_uri(None) == "http://127.0.0.1:9"


@pytest.mark.slow
def test_train_validate_evaluate_runs_share_one_experiment(tmp_path, monkeypatch):
    """The logging path of each stage, against a store named only by $MLFLOW_TRACKING_URI."""
    import mlflow

    from faceswap.evaluation.runs import log_to_mlflow
    from faceswap.stages.validate import ValidationRecord
    from faceswap.stages.validate import log_to_mlflow as log_validation
    from faceswap.tracking import start_run

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}"
    (tmp_path / "db").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    p = parse_params({})
    train = start_run(p, "resize_nearest-seed0", tags={"variant": "resize_nearest", "seed": "0"})
    train.log_metrics({"train_loss": 0.5}, 1)
    train_id = train.run_id
    train.end()
    quarantine = tmp_path / "quarantine.parquet"
    quarantine.write_bytes(b"PAR1")
    result = ValidationRecord(True, "filter", 4, 4, 0, 10, (), {}, {}, None, str(quarantine), "v.json", None, {})
    validate_id = log_validation(result, tmp_path / "no-docs", p)
    where = log_to_mlflow({"mlflow_run_id": train_id}, "resize_nearest", {"recon_lpips": 0.2}, None, {}, 0,
                          params=p)

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("faceswap")
    assert exp.artifact_location == (tmp_path / "db" / "mlruns" / "faceswap").as_uri()
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = {r.info.run_id: r for r in client.search_runs([exp.experiment_id])}
    assert {train_id, validate_id} <= set(runs) and where["run_id"] == train_id
    assert runs[validate_id].info.run_name == "validate" and runs[validate_id].info.status == "FINISHED"
    assert runs[train_id].info.run_name == "resize_nearest-seed0"
    assert runs[train_id].data.metrics["eval/recon_lpips"] == pytest.approx(0.2)
    default = client.get_experiment_by_name("Default")
    assert default is None or not client.search_runs([default.experiment_id])


def test_ui_links_open_the_model_training_views():
    """MLflow 3.17's UI ignores the experiment-kind tag and opens on GenAI traces unless the link says otherwise."""
    from faceswap.tracking import ui_url

    assert ui_url("http://127.0.0.1:5000/") == "http://127.0.0.1:5000/#/experiments?workflowType=machine_learning"
    assert ui_url("http://h:5000", "3", "abc") == "http://h:5000/#/experiments/3/runs/abc?workflowType=machine_learning"


def test_manifest_is_logged_as_the_runs_dataset_input(tmp_path, monkeypatch):
    """The MLflow UI's *Dataset* column: the manifest a run trained or was evaluated on, by name, DVC md5, context
    and commit, read back from a real sqlite store."""
    import json
    import warnings

    import mlflow

    from faceswap.tracking import EVALUATION, TRAINING, Tracker, file_md5, log_manifest_input, open_run

    from ._eval_fixtures import make_face_set

    monkeypatch.chdir(tmp_path)
    manifest = make_face_set(tmp_path, train=2, val=1, test=1)
    cfg = MlflowParams(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    train, evaluate = open_run(cfg, "resize_nearest-seed0"), open_run(cfg, "evaluate")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        digest = log_manifest_input(train, manifest, TRAINING, commit="c0ffee")
        log_manifest_input(evaluate, manifest, EVALUATION, dvc_hash="d" * 32, commit="c0ffee-dirty")
    assert not [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert log_manifest_input(Tracker(), manifest, TRAINING) is None  # tracking off: nothing to log

    client = mlflow.MlflowClient(cfg.tracking_uri)
    (trained,) = client.get_run(train.run_id).inputs.dataset_inputs
    assert trained.dataset.name == "faces.parquet" and trained.dataset.digest == file_md5(manifest) == digest
    assert {t.key: t.value for t in trained.tags} == {"mlflow.data.context": "training", "git_commit": "c0ffee"}
    assert trained.dataset.source_type == "local"
    assert json.loads(trained.dataset.source) == {"uri": str(manifest.resolve())}
    assert json.loads(trained.dataset.profile)["num_rows"] == 8  # 2 identities × (2 + 1 + 1) faces
    assert "face_id" in {c["name"] for c in json.loads(trained.dataset.schema)["mlflow_colspec"]}
    (evaluated,) = client.get_run(evaluate.run_id).inputs.dataset_inputs
    assert evaluated.dataset.digest == "d" * 32
    assert {t.key: t.value for t in evaluated.tags} == {"mlflow.data.context": "evaluation",
                                                        "git_commit": "c0ffee-dirty"}


# --- concurrent writers: the flow's fan-out logs N training runs at once ---

WRITER = '''
import sys
import time
from faceswap.config import MlflowParams
from faceswap import tracking

name, steps, start_at = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
t = tracking.open_run(MlflowParams(tracking_uri="sqlite:///unused.db"), name)  # $MLFLOW_TRACKING_URI wins
run_id, uri = t.run_id, t.uri
while time.time() < start_at:  # every writer logs the same new dataset at the same moment, as training runs do
    time.sleep(0.005)
tracking.log_manifest_input(t, "faces.parquet", tracking.TRAINING, commit="c0ffee")
for step in range(steps):  # full rate: one batch right after the other, as fast as the store takes them
    t.log_metrics({"loss": step / 7, "lr": 1 / (step + 1), "grad_norm": step % 5}, step)
t.end()
print(run_id, uri)
'''


@pytest.mark.slow
def test_concurrent_runs_through_the_served_store_lose_no_metric(tmp_path, monkeypatch):
    """N training runs logging at full rate at once, through the server the flow puts in front of the sqlite store:
    every metric arrives, no writer fails ('database is locked' or otherwise), and each run records the store
    behind the server (which outlives it), not the server's address."""
    import os
    import subprocess
    import sys

    from faceswap.tracking import STORE_ENV, TRACKING_ENV, connect, serve_store

    n, steps = 4, 150
    monkeypatch.chdir(tmp_path)
    cfg = MlflowParams(tracking_uri="sqlite:///mlflow.db")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]), "OMP_NUM_THREADS": "1"}
    import time

    import pandas as pd

    pd.DataFrame({"face_id": [f"f{i}" for i in range(8)], "identity": ["a", "b"] * 4}).to_parquet("faces.parquet")
    with serve_store(cfg, log=tmp_path / "server.log") as served:
        assert served[TRACKING_ENV].startswith("http://127.0.0.1:")
        start_at = str(time.time() + 15)  # after every writer has imported and opened its run
        procs = [subprocess.Popen([sys.executable, "-c", WRITER, f"w{i}", str(steps), start_at], env=env | served,
                                  text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(n)]
        outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
        assert "database is locked" not in err
    store = (tmp_path / "mlflow.db").resolve()
    client = connect(f"sqlite:///{store}")  # read back from the file itself: the server is gone
    for out, _ in outs:
        run_id, recorded = out.strip().splitlines()[-1].split()
        assert recorded == f"sqlite:///{store}" == served[STORE_ENV]
        for key in ("loss", "lr", "grad_norm"):
            history = client.get_metric_history(run_id, key)
            assert sorted(m.step for m in history) == list(range(steps)), key
        (dataset,) = client.get_run(run_id).inputs.dataset_inputs
        assert dataset.dataset.name == "faces.parquet"
    assert "database is locked" not in (tmp_path / "server.log").read_text()
