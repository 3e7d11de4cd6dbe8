"""Prefect orchestration (pipelines/): the flow on a tiny real DVC repository, its artifacts, skipping, failure,
params overlay, the cron deployment, and stage discovery on this repository's own dvc.yaml.

The tiny repository has the shape of ours (a validation summary, train@/evaluate@ foreach stages over
model.variants, a register record, run.json with an MLflow run) but its stages are one-line Python scripts,
so the whole module runs in about a minute; one Prefect test server is shared by the module.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

TINY_PARAMS = {
    "base": {"seed": 0},
    # the project's layout: the tiny stages below write the files the flow's artifacts read from these paths
    "paths": yaml.safe_load((REPO / "params.yaml").read_text())["paths"],
    "model": {"variants": ["convtranspose", "pixelshuffle"]},
    # two train items side by side, one thread each, logging through an MLflow server in front of the tiny store
    "flow": {"retries": 0, "workers": 2, "threads_per_run": 1,
             "schedule": {"name": "tiny-nightly", "cron": "30 2 * * *", "timezone": "Europe/Berlin"}},
    "mlflow": {"tracking_uri": "sqlite:///mlflow.db"},
}

STAGES_PY = '''
import json, os, sys, time
from pathlib import Path
import yaml

def trace(what):  # outside the repository (not an output): when each stage ran, and how it was pinned
    if os.environ.get("TINY_TRACE"):
        with open(os.environ["TINY_TRACE"], "a") as f:
            f.write(json.dumps({"what": what, "t": time.time(), "omp": os.environ.get("OMP_NUM_THREADS"),
                                "mlflow": os.environ.get("MLFLOW_TRACKING_URI")}) + "\\n")

seed = yaml.safe_load(open("params.yaml"))["base"]["seed"]
what = sys.argv[1]

def dump(path, data):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data))

if what == "prep":
    flaky = os.environ.get("TINY_FLAKY")  # a file outside the repository: fails once, then works (transient)
    if flaky and not Path(flaky).exists():
        Path(flaky).touch()
        sys.exit("prep: transient failure")
    if os.environ.get("TINY_SLOW_PREP"):
        trace("prep-slow")
        time.sleep(float(os.environ["TINY_SLOW_PREP"]))
    if seed == 13:
        print("prep: seed 13 is refused (planted failure)", file=sys.stderr)
        sys.exit(3)
    dump("data/prep.json", {"seed": seed})
    dump("metrics/validation.json", {"success": True, "mode": "filter", "faces": 12, "accepted": 10,
                                     "quarantined": 2, "identities": {"a": {"train": 4, "val": 1}}})
elif what == "train":
    v = sys.argv[2]
    trace(f"train-{v}-start")
    time.sleep(3)
    trace(f"train-{v}-end")
    dump(f"models/{v}/run.json", {"variant": v, "mlflow_run_id": f"run{v}0123456789", "mlflow_experiment_id": "7",
                                  "tracking_uri": "http://mlflow.example:5000"})
elif what == "evaluate":
    v = sys.argv[2]
    m = {"variant": v, "recon_lpips": 0.1 + len(v) / 100, "swap_checkerboard_excess": 0.01}
    dump(f"metrics/{v}.json", m)
    run = json.loads(Path(f"models/{v}/run.json").read_text())  # the record names the variant's MLflow run
    dump(f"reports/evaluations/{v}.json", {**m, "mlflow": {"run_id": run["mlflow_run_id"], "tracking_uri":
                                           run["tracking_uri"], "experiment_id": run["mlflow_experiment_id"]}})
elif what == "register":
    cands = [json.loads(p.read_text()) for p in sorted(Path("reports/evaluations").glob("*.json"))]
    best = min(cands, key=lambda c: c["recon_lpips"])
    dump("metrics/register.json", {
        "model_name": "faceswap", "version": "3", "run_id": "r3", "variant": best["variant"], "alias": "champion",
        "champion_version": "3", "champion_changed": True, "reason": "lowest recon_lpips", "rule": "lowest lpips",
        "tracking_uri": "http://mlflow.example:5000",
        "candidates": [{"variant": c["variant"], "qualifies": True, "rank": i + 1, "note": "",
                        "metrics": {"recon_lpips": c["recon_lpips"]}} for i, c in enumerate(cands)]})
'''

DVC_YAML = textwrap.dedent('''
    stages:
      prep:
        cmd: python stages.py prep
        deps:
          - stages.py
        params:
          - base.seed
        outs:
          - data/prep.json
        metrics:
          - metrics/validation.json:
              cache: false
      train:
        foreach: ${model.variants}
        do:
          cmd: python stages.py train ${item}
          deps:
            - data/prep.json
          outs:
            - models/${item}
      evaluate:
        foreach: ${model.variants}
        do:
          cmd: python stages.py evaluate ${item}
          deps:
            - models/${item}
          outs:
            - reports/evaluations/${item}.json:
                cache: false
          metrics:
            - metrics/${item}.json:
                cache: false
      register:
        cmd: python stages.py register
        deps:
          - reports/evaluations
        metrics:
          - metrics/register.json:
              cache: false
''')

EXPECTED = ["prep", "train@convtranspose", "train@pixelshuffle", "evaluate@convtranspose", "evaluate@pixelshuffle",
            "register"]


# --- fast checks: no Prefect server ---


def test_artifact_builders_tolerate_missing_files(tmp_path):
    from pipelines import artifacts as art

    md = art.champion_markdown(tmp_path, "metrics/register.json")
    assert "No register record" in md and "skipped" in md
    md = art.variant_metrics_markdown(tmp_path, {"convtranspose": "metrics/convtranspose.json"})
    assert "No variant has evaluation metrics" in md and "convtranspose" in md
    assert "has not run" in art.validation_markdown(tmp_path, "metrics/validation.json")
    assert "no run record" in art.mlflow_runs_markdown(tmp_path, {"pixelshuffle": "models/pixelshuffle/run.json"})
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "register.json").write_text("{not json")
    assert "unreadable" in art.champion_markdown(tmp_path, "metrics/register.json")


def test_champion_artifact_without_a_champion_names_the_unqualified_model(tmp_path):
    """A fallback registration (no variant passed the gates): the artifact says there is no champion and loads the
    version by the alias it holds."""
    from pipelines import artifacts as art

    from faceswap.registry import RegisterRecord

    rec = RegisterRecord(model_name="faceswap", rule="r", reason="resize_nearest won (FALLBACK: ...)", candidates=(),
                         version="1", run_id="r1", variant="resize_nearest", alias="unqualified",
                         champion_version=None, alias_reason="it fails the gates (...)")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "register.json").write_text(json.dumps(rec.to_json()))
    md = art.champion_markdown(tmp_path, "metrics/register.json")
    assert "`@unqualified`" in md and "no champion yet" in md and "models:/faceswap@unqualified" in md
    assert "models:/faceswap@champion" not in md


def test_select_filters_variants_and_checks_names():
    from pipelines.graph import PlanError, StageSpec, select

    stages = [StageSpec("prep", "prep", None, "x"), StageSpec("train@a", "train", "a", "x"),
              StageSpec("train@b", "train", "b", "x"), StageSpec("register", "register", None, "x")]
    run, out, forced = select(stages, variants=["b"], skip=["register"], force=["train"])
    assert [s.address for s in run] == ["prep", "train@b"]
    assert [s.address for s in out] == ["train@a", "register"]
    assert forced == {"train@b"}
    with pytest.raises(PlanError, match="unknown or empty variant"):
        select(stages, variants=["c"])
    with pytest.raises(PlanError, match="no stage 'nope'"):
        select(stages, force=["nope"])


def test_flow_params_are_validated():
    from faceswap.config import ConfigError, parse_params

    with pytest.raises(ConfigError, match=r"flow\.schedule\.cron"):
        parse_params({"flow": {"schedule": {"cron": "every night"}}})
    with pytest.raises(ConfigError, match=r"flow\.schedule\.timezone"):
        parse_params({"flow": {"schedule": {"timezone": "Mars/Olympus"}}})
    with pytest.raises(ConfigError, match=r"flow\.artifacts: unknown key"):  # the files are paths.* now
        parse_params({"flow": {"artifacts": {"variant_metrics": "metrics/all.json"}}})
    assert parse_params({}).flow.schedule.cron == "0 3 * * *"


# --- the flow on a tiny DVC repository, one Prefect test server for the module ---


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny-dvc")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    (root / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS, sort_keys=False))
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "stages.py").write_text(STAGES_PY)
    (root / ".gitignore").write_text("mlflow.db\nmlruns/\n")
    _commit(root)
    return root


def _commit(root: Path) -> None:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "state", "--allow-empty"], cwd=root, check=True)


def _git_status(root: Path) -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True,
                          check=True).stdout


def _artifact(key: str) -> str:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                      sort=ArtifactSort.CREATED_DESC, limit=1)
    assert found, f"no artifact {key}"
    return found[0].data


@pytest.mark.slow
def test_first_run_runs_every_stage_in_order_and_publishes_artifacts(prefect_server, tiny_repo, tmp_path,
                                                                    monkeypatch):
    """... with the train items side by side (one thread each, MLflow through a server), recorded in dvc.lock
    exactly as a serial ``dvc repro`` of the same repository records them."""
    import shutil

    from pipelines import artifacts as art
    from pipelines.flow import pipeline

    serial = tmp_path / "serial"
    shutil.copytree(tiny_repo, serial)
    subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=serial, check=True, capture_output=True)
    monkeypatch.setenv("TINY_TRACE", str(tmp_path / "trace.jsonl"))
    out = pipeline(repo=str(tiny_repo))
    assert out["plan"] == EXPECTED
    assert [o["status"] for o in out["stages"]] == ["ran"] * len(EXPECTED)
    assert all("fanned out (OMP_NUM_THREADS=1" in o["detail"] for o in out["stages"] if o["stage"].startswith("train"))
    trace = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    t = {e["what"]: e for e in trace}
    starts = [t[f"train-{v}-start"]["t"] for v in ("convtranspose", "pixelshuffle")]
    ends = [t[f"train-{v}-end"]["t"] for v in ("convtranspose", "pixelshuffle")]
    assert max(starts) < min(ends), "the two train items did not run at the same time"
    for v in ("convtranspose", "pixelshuffle"):
        assert t[f"train-{v}-start"]["omp"] == "1"
        assert t[f"train-{v}-start"]["mlflow"].startswith("http://127.0.0.1:")
    assert yaml.safe_load((tiny_repo / "dvc.lock").read_text()) == yaml.safe_load((serial / "dvc.lock").read_text())
    assert list(yaml.safe_load((tiny_repo / "dvc.lock").read_text())["stages"]) == list(
        yaml.safe_load((serial / "dvc.lock").read_text())["stages"])
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=tiny_repo, capture_output=True,
                            text=True, check=True).stdout
    assert json.loads(status) == {}
    metrics = _artifact(art.KEYS["metrics"])
    assert re.search(r"\| convtranspose +\|", metrics) and re.search(r"\| pixelshuffle +\|", metrics)
    assert "recon_lpips" in metrics
    assert "Gate **passed**" in _artifact(art.KEYS["validation"])
    champion = _artifact(art.KEYS["champion"])
    assert "version **3**" in champion and "**moved**" in champion and "models:/faceswap@champion" in champion
    runs = _artifact(art.KEYS["mlflow"])
    link = "http://mlflow.example:5000/#/experiments/7/runs/runpixelshuffle0123456789?workflowType=machine_learning"
    assert link in runs
    assert re.search(r"\| prep +\| ran +\|", _artifact(art.KEYS["stages"]))
    _commit(tiny_repo)  # the experiments below start from this state


@pytest.mark.slow
def test_second_run_skips_every_stage(prefect_server, tiny_repo):
    from pipelines.flow import pipeline

    t0 = time.perf_counter()
    out = pipeline(repo=str(tiny_repo))
    wall = time.perf_counter() - t0
    assert [o["status"] for o in out["stages"]] == ["skipped"] * len(EXPECTED)
    print(f"no-op run of {len(EXPECTED)} stages: {wall:.1f} s")


@pytest.mark.slow
def test_overrides_run_a_dvc_experiment_and_write_no_tracked_file(prefect_server, tiny_repo):
    from dvc.api import exp_show
    from pipelines.flow import pipeline

    lock = (tiny_repo / "dvc.lock").read_bytes()
    out = pipeline(repo=str(tiny_repo), set_params=["base.seed=7"], variants=["pixelshuffle"], register_model=False)
    assert out["plan"] == ["prep", "train@pixelshuffle", "evaluate@pixelshuffle"]
    assert out["excluded"] == ["train@convtranspose", "evaluate@convtranspose", "register"]
    (o,) = out["stages"]
    assert o["stage"] == "experiment" and o["status"] == "ran" and o["experiment"]
    assert _git_status(tiny_repo) == "" and (tiny_repo / "dvc.lock").read_bytes() == lock
    assert json.loads((tiny_repo / "data/prep.json").read_text()) == {"seed": 0}  # the workspace is untouched
    rows = {r["Experiment"]: r for r in exp_show(repo=str(tiny_repo))}
    assert rows[o["experiment"]]["base.seed"] == 7


@pytest.mark.slow
def test_transient_failure_is_retried(prefect_server, tiny_repo, tmp_path, monkeypatch):
    from pipelines.flow import pipeline

    monkeypatch.setenv("TINY_FLAKY", str(tmp_path / "flaky"))
    out = pipeline(repo=str(tiny_repo), set_params=["base.seed=21", "flow.retries=1", "+flow.retry_delay_s=0"],
                   register_model=False)
    assert (tmp_path / "flaky").exists()  # the first attempt failed
    assert [(o["stage"], o["status"]) for o in out["stages"]] == [("experiment", "ran")]


@pytest.mark.slow
def test_failing_stage_fails_the_flow_with_its_message(prefect_server, tiny_repo):
    from pipelines.flow import StageFailed, pipeline
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    state = pipeline(repo=str(tiny_repo), set_params=["base.seed=13"], return_state=True)
    assert state.is_failed()
    with pytest.raises(StageFailed, match=r"base.seed=13 failed \(exit \d+\)[\s\S]*seed 13 is refused"):
        state.result()
    assert _git_status(tiny_repo) == ""
    run_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
    found, deadline = False, time.monotonic() + 20  # logs reach the API in batches, every ~2 s
    while not found and time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(log_filter=run_filter)
        found = any("seed 13 is refused (planted failure)" in log.message for log in logs)
        time.sleep(0.0 if found else 0.5)
    assert found, "the stage's own message is not in the flow run's logs"


@pytest.mark.slow
def test_a_flow_killed_with_sigkill_leaves_no_tracked_file_changed(prefect_server, tiny_repo, tmp_path):
    """SIGKILL (no ``finally`` runs) to the whole flow, mid-stage, with parameter overrides: git status is clean."""
    import os
    import signal

    from prefect.settings import PREFECT_API_URL

    trace = tmp_path / "trace.jsonl"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")]), "TINY_TRACE": str(trace),
           "TINY_SLOW_PREP": "120", "PREFECT_API_URL": PREFECT_API_URL.value()}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.flow", "--repo", str(tiny_repo), "--set", "base.seed=5",
                             "--no-register"], cwd=tiny_repo, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (trace.exists() and "prep-slow" in trace.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, "the flow never reached its first stage"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert _git_status(tiny_repo) == ""


@pytest.mark.slow
def test_deployment_registers_with_its_cron_schedule(prefect_server, tiny_repo):
    from pipelines.deploy import build_deployment
    from prefect import get_client

    deployment_id = build_deployment(repo=str(tiny_repo)).apply()
    with get_client(sync_client=True) as client:
        d = client.read_deployment(deployment_id)
    assert d.name == "tiny-nightly"
    assert [(s.schedule.cron, s.schedule.timezone) for s in d.schedules] == [("30 2 * * *", "Europe/Berlin")]
    assert d.parameters["pull"] is False


@pytest.mark.slow
def test_plan_of_this_repository_expands_foreach_stages_in_dvc_order(prefect_server):
    from dvc.repo import Repo
    from dvc.repo.reproduce import plan_repro
    from pipelines.flow import pipeline

    from faceswap.config import load_params

    out = pipeline(repo=str(REPO), dry_run=True)
    plan = out["plan"]
    variants = load_params(REPO / "params.yaml").model.variants
    with Repo(str(REPO)) as repo:
        dvc_order = [s.addressing for s in plan_repro(repo.index.graph) if s.cmd]
        edges = [(a.addressing, b.addressing) for a, b in repo.index.graph.edges]
    assert plan == dvc_order
    seeds = load_params(REPO / "params.yaml").train.seeds
    trains = [p.split("@")[1] for p in plan if p.startswith("train@")]
    assert sorted(trains) == sorted(f"{v}-{s}" for v in variants for s in seeds)  # the variant × seed matrix
    assert [p.split("@")[1] for p in plan if p.startswith("evaluate@")] == list(variants)
    pos = {p: i for i, p in enumerate(plan)}
    for dependent, dependency in edges:  # DVC's edges point from a stage to what it depends on
        if dependent in pos and dependency in pos:
            assert pos[dependency] < pos[dependent], (dependency, dependent)


# --- the two entry points, without an import cycle ---


def test_flow_module_and_cli_do_not_import_each_other():
    import ast

    def imported(path: Path) -> set[str]:
        tree = ast.parse(path.read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}

    assert not {m for m in imported(REPO / "pipelines" / "flow.py") if m.startswith("faceswap.cli")}
    cli = REPO / "src" / "faceswap" / "cli.py"
    assert not {m for m in imported(cli) if m.startswith("pipelines")}
    assert "sys.path" not in cli.read_text()


def test_both_entry_points_offer_the_same_options(tmp_path):
    import os

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")])}
    direct = subprocess.run([sys.executable, "-m", "pipelines.flow", "--help"], capture_output=True, text=True,
                            cwd=REPO, env=env, timeout=300)
    via_cli = subprocess.run([sys.executable, "-m", "faceswap.cli", "flow", "run", "--help"], capture_output=True,
                             text=True, cwd=REPO, env=env, timeout=300)
    assert direct.returncode == 0 and via_cli.returncode == 0, direct.stderr + via_cli.stderr
    for option in ("--variant", "--force", "--set", "--no-register", "--pull", "--dry-run", "--repo"):
        assert option in direct.stdout
    assert via_cli.stdout == direct.stdout
    nowhere = subprocess.run([sys.executable, "-m", "faceswap.cli", "flow", "run", "--repo", str(tmp_path)],
                             capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert nowhere.returncode == 2 and nowhere.stderr.strip() == (
        f"error: no pipelines/ package in {tmp_path.resolve()}: run from the repository root or pass --repo")


def test_lanes_split_the_cores_on_cpu_and_give_each_run_a_gpu():
    from pipelines.fanout import plan_lanes

    cpu = plan_lanes("auto", "auto", cores=2, gpus=())
    assert (cpu.workers, cpu.threads) == (2, 1)
    assert [cpu.env(i) for i in range(2)] == [{"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}] * 2
    gpu = plan_lanes("auto", "auto", cores=16, gpus=("2", "5"))
    assert (gpu.workers, gpu.threads) == (2, 8)
    assert [gpu.env(i)["CUDA_VISIBLE_DEVICES"] for i in range(2)] == ["2", "5"]
    assert plan_lanes("auto", "auto", device="cpu", cores=16, gpus=("0",)).gpus == ()  # train.device: cpu
    assert plan_lanes(3, 2, cores=2, gpus=()).workers == 3  # explicit settings win
