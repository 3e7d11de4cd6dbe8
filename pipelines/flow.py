"""The Prefect flow: the DVC pipeline stage by stage, one task per stage (and per ``stage@item``).

DVC decides what is up to date: each task asks ``dvc status`` for its stage and runs ``dvc repro --single-item``
only when something changed, streaming the stage's own output into the Prefect logs. The items of the stages in
params ``flow.fan_out`` (the train matrix) run side by side instead, each recorded by ``dvc commit``
(``pipelines.fanout``). The stage list and its order come from ``dvc.yaml`` (``pipelines.graph``); settings from
the ``flow`` section of ``params.yaml``, which the flow never writes: a run with parameter overrides (``--set``)
is a DVC experiment in a temporary copy of the workspace (``dvc exp run --temp -S``; ``dvc exp show`` lists it).

Run once, locally, with no server set up: ``faceswap flow run`` or ``python -m pipelines.flow``.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from faceswap.console import App, fail
from faceswap.errors import FaceswapError
from pipelines import artifacts as art
from pipelines import fanout
from pipelines.graph import StageSpec, discover, select
from pipelines.proc import StageFailed, dvc, stream

__all__ = ["PARAMS_FILE", "StageFailed", "main", "pipeline"]

PARAMS_FILE = "params.yaml"

# Set by main() for the processes it starts, unless already set: telemetry that fails offline stays off, and a
# fresh Prefect database makes the temporary server start in ~30 s, over Prefect's 20 s default.
ENV_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "NO_ALBUMENTATIONS_UPDATE": "1",
}


def _stage_status(root: Path, address: str) -> dict[str, Any]:
    """DVC's status of one stage (its own deps, params and outs only); {} when up to date."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:  # DVC resolves targets against the working folder: name the dvc.yaml fully
        dvcfile, _, name = address.rpartition(":")
        return repo.status(targets=[f"{Path(repo.root_dir) / (dvcfile or 'dvc.yaml')}:{name}"])


def _describe(status: dict[str, Any]) -> str:
    parts = []
    for entries in status.values():
        for entry in entries:
            if isinstance(entry, dict):
                for kind, changes in entry.items():
                    if isinstance(changes, dict):
                        parts += [f"{kind} {path}: {what}" for path, what in changes.items()]
                    else:
                        parts.append(f"{kind}: {changes}")
            else:
                parts.append(str(entry))
    return "; ".join(parts)[:300]


@task(name="dvc-stage", cache_policy=NO_CACHE, persist_result=False)
def run_stage(address: str, repo: str, force: bool = False, log_tail: int = 30) -> dict[str, Any]:
    """Reproduce one DVC stage if DVC says it changed (or ``force``); raise StageFailed with its output."""
    logger = get_run_logger()
    root, t0 = Path(repo), time.perf_counter()
    status = {} if force else _stage_status(root, address)
    if not force and not status:
        logger.info("%s: up to date, skipped", address)
        return {"stage": address, "status": "skipped", "seconds": time.perf_counter() - t0, "detail": "up to date"}
    detail = "forced" if force else _describe(status)
    logger.info("%s: running (%s)", address, detail)
    rc, last = stream(dvc("repro", "--single-item", *(["--force"] if force else []), address), root, address,
                      log_tail)
    if rc != 0:
        raise StageFailed(f"stage {address} failed (exit {rc}); its last output:\n" + "\n".join(last))
    return {"stage": address, "status": "ran", "seconds": time.perf_counter() - t0, "detail": detail}


@task(name="dvc-experiment", cache_policy=NO_CACHE, persist_result=False)
def run_experiment(targets: list[str], overrides: list[str], repo: str, force: bool = False,
                   log_tail: int = 30) -> dict[str, Any]:
    """``dvc exp run --temp -S ...``: the stages with the overrides, in a temporary copy of the workspace (the
    workspace and its params.yaml are never written); the result is a DVC experiment (``dvc exp show``)."""
    t0 = time.perf_counter()
    args = ["exp", "run", "--temp", *(a for o in overrides for a in ("-S", o)), *(["--force"] if force else []),
            *targets]
    rc, last = stream(dvc(*args), Path(repo), "experiment", log_tail)
    if rc != 0:
        raise StageFailed(f"experiment {' '.join(overrides)} failed (exit {rc}); its last output:\n" + "\n".join(last))
    names = [m.group(1) for line in last for m in [re.search(r"Ran experiment\(s\): (\S+)", line)] if m]
    return {"stage": "experiment", "status": "ran", "seconds": time.perf_counter() - t0,
            "detail": f"dvc experiment {names[-1] if names else '?'} ({', '.join(overrides)})",
            "experiment": names[-1] if names else None}


@task(name="dvc-sync", cache_policy=NO_CACHE, persist_result=False)
def dvc_sync(command: str, repo: str, log_tail: int = 30) -> None:
    """``dvc pull`` (new data from the remote before a run) or ``dvc push`` (outputs after it)."""
    args = [command, "--allow-missing"] if command == "pull" else [command]
    rc, last = stream(dvc(*args), Path(repo), f"dvc {command}", log_tail)
    if rc != 0:
        raise StageFailed(f"dvc {command} failed (exit {rc}):\n" + "\n".join(last))


def _load_params(root: Path, overrides: list[str] = ()):
    """params.yaml, validated, with ``dvc exp run -S``-style ``overrides`` applied to a copy of it outside the
    workspace (a ConfigError names each bad key, overrides included)."""
    import shutil
    import tempfile

    from faceswap.config import load_params

    if not overrides:
        return load_params(root / PARAMS_FILE)
    from dvc.utils.hydra import apply_overrides

    with tempfile.TemporaryDirectory(prefix="faceswap-flow-") as tmp:
        copy = Path(tmp) / PARAMS_FILE
        shutil.copyfile(root / PARAMS_FILE, copy)
        apply_overrides(copy, list(overrides))
        return load_params(copy)


def _retrying(f, retries: int | None = None) -> dict[str, Any]:
    """Prefect retry options from params ``flow``: ``retries`` tries, the first after ``retry_delay_s``, doubling."""
    retries = f.retries if retries is None else retries
    return {"retries": retries, "retry_delay_seconds": exponential_backoff(backoff_factor=f.retry_delay_s)(retries)
            if retries else 0}


def _publish(root: Path, params, outcomes: list[dict[str, Any]], overlay: list[str], excluded: list[str]) -> None:
    stages = (art.stages_markdown(outcomes, overlay, excluded), "What each stage did in this run")
    if overlay:  # an experiment's files are in its DVC experiment, not in the workspace the other artifacts read
        create_markdown_artifact(markdown=stages[0], key=art.KEYS["stages"], description=stages[1])
        return
    f, paths = params.flow, params.paths  # the files the stages wrote, where params.yaml says they are
    variants = params.model.variants
    metrics = {v: paths.variant_metrics_file(v) for v in variants}
    records = {v: paths.evaluation_record(v) for v in variants}
    docs = {
        "stages": stages,
        "metrics": (art.variant_metrics_markdown(root, metrics), "Metrics per variant"),
        "validation": (art.validation_markdown(root, paths.validation_metrics), "Validation gate summary"),
        "champion": (art.champion_markdown(root, paths.register_record, f.mlflow_ui), "Registry: champion"),
        "mlflow": (art.mlflow_runs_markdown(root, records, f.mlflow_ui), "MLflow runs per variant"),
    }
    for name, (markdown, description) in docs.items():
        create_markdown_artifact(markdown=markdown, key=art.KEYS[name], description=description)


@flow(name="faceswap-pipeline", log_prints=True)
def pipeline(
    variants: list[str] | None = None,
    force: list[str] | None = None,
    set_params: list[str] | None = None,
    register_model: bool = True,
    pull: bool | None = None,
    push: bool | None = None,
    dry_run: bool = False,
    repo: str = ".",
) -> dict[str, Any]:
    """Run the DVC pipeline of ``repo`` stage by stage.

    Args:
        variants: items of the foreach stages to run (default: all, i.e. params model.variants).
        force: stage names or addresses to rerun even if DVC finds them up to date.
        set_params: parameter overrides, ``dvc exp run -S`` syntax (``train.steps=50``): the run is a DVC
            experiment in a temporary copy of the workspace (``dvc exp show``); params.yaml is never written.
        register_model: false leaves out the stages in params flow.register_stages.
        pull / push: ``dvc pull`` before / ``dvc push`` after (default: params flow.pull / flow.push).
        dry_run: only discover and return the plan.
        repo: the DVC repository (relative to the working directory).
    """
    logger = get_run_logger()
    root = Path(repo)
    overlay = list(set_params or [])
    params = _load_params(root, overlay)
    f = params.flow  # the overrides may set flow.* too (retries, register stages)
    outcomes: list[dict[str, Any]] = []
    if (f.pull if pull is None else pull) and not dry_run:
        dvc_sync.with_options(**_retrying(f))("pull", repo, f.log_tail)
    stages = discover(root)
    todo, excluded, forced = select(stages, variants, () if register_model else f.register_stages, force or ())
    plan = [s.address for s in todo]
    logger.info("plan: %s%s", " → ".join(plan), f" (excluded: {', '.join(s.address for s in excluded)})"
                if excluded else "")
    if dry_run:
        return {"plan": plan, "excluded": [s.address for s in excluded], "forced": sorted(forced)}
    try:
        if overlay:
            outcomes.append(run_experiment.with_options(**_retrying(f))(plan, overlay, repo, bool(forced), f.log_tail))
        else:
            _run_all(root, todo, forced, params, outcomes)
    except BaseException:
        done = {o["stage"] for o in outcomes}
        failed = next((a for a in (["experiment"] if overlay else plan) if a not in done), "?")
        outcomes.append({"stage": failed, "status": "failed", "seconds": 0.0, "detail": "see the task's logs"})
        raise
    finally:
        _publish(root, params, outcomes, overlay, [s.address for s in excluded])
    if (f.push if push is None else push) and any(o["status"] == "ran" for o in outcomes):
        dvc_sync.with_options(**_retrying(f))("push", repo, f.log_tail)
    ran = [o["stage"] for o in outcomes if o["status"] == "ran"]
    logger.info("done: %d stage(s) ran, %d up to date", len(ran), len(outcomes) - len(ran))
    return {"plan": plan, "excluded": [s.address for s in excluded], "stages": outcomes}


def _run_all(root: Path, todo: list[StageSpec], forced: set[str], params, outcomes: list[dict[str, Any]]) -> None:
    """Every stage in DVC's order; the items of a fan-out stage side by side where the first of them comes."""
    f, done = params.flow, set()
    for s in todo:
        if s.address in done:
            continue
        group = [t for t in todo if t.name == s.name] if s.item is not None and s.name in f.fan_out else [s]
        if len(group) > 1:
            lanes = fanout.plan_lanes(f.workers, f.threads_per_run, params.train.device)
            if lanes.workers > 1:
                outcomes += _fan_out(root, group, forced, lanes, params)
                done.update(t.address for t in group)
                continue
        for t in group:
            outcomes.append(_run(t, str(root), t.address in forced, f))
            done.add(t.address)


def _fan_out(root: Path, group: list[StageSpec], forced: set[str], lanes: fanout.Lanes,
             params) -> list[dict[str, Any]]:
    """The items DVC finds changed (or forced) side by side; the others reported as skipped."""
    import contextlib

    from faceswap.tracking import serve_store

    logger, f, t0 = get_run_logger(), params.flow, time.perf_counter()
    outcomes, changed = [], []
    for s in group:
        if s.address in forced or _stage_status(root, s.address):
            changed.append(s.address)
        else:
            outcomes.append({"stage": s.address, "status": "skipped", "seconds": 0.0, "detail": "up to date"})
    logger.info("%s: %d item(s) to run, %d at once (%d thread(s) each%s)", group[0].name, len(changed),
                lanes.workers, lanes.threads, f", GPUs {','.join(lanes.gpus)}" if lanes.gpus else "")
    if not changed:
        return outcomes
    address = fanout.cluster_address(f.cluster_address)
    served = serve_store(params, log=root / ".dvc" / "tmp" / "mlflow-server.log", root=root) if (
        f.mlflow_server and not address and len(changed) > 1) else contextlib.nullcontext({})
    retries = 0 if group[0].name in f.no_retry else f.retries
    with served as tracking_env:
        if tracking_env:
            logger.info("MLflow: the runs log through %s (store %s)", *tracking_env.values())
        ran = fanout.run_group(root, changed, lanes, address, **_retrying(f, retries), extra_env=dict(tracking_env),
                               log_tail=f.log_tail)
    logger.info("%s: %d item(s) in %.1f s", group[0].name, len(ran), time.perf_counter() - t0)
    order = {s.address: i for i, s in enumerate(group)}
    return sorted(outcomes + ran, key=lambda o: order[o["stage"]])


def _run(s: StageSpec, repo: str, force: bool, f) -> dict[str, Any]:
    retries = 0 if (s.name in f.no_retry or s.address in f.no_retry) else f.retries
    return run_stage.with_options(name=s.address, **_retrying(f, retries))(s.address, repo, force, f.log_tail)


cli = App(name="pipelines.flow", add_completion=False, pretty_exceptions_enable=False)


@cli.command()
def run(
    variant: Annotated[
        list[str] | None, typer.Option("--variant", help="Run only these foreach items (repeatable; default all).")
    ] = None,
    force: Annotated[
        list[str] | None, typer.Option("--force", help="Rerun this stage or stage@item even if up to date.")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", "-S", help="Params overlay, `dvc exp run -S` syntax: key=value.")
    ] = None,
    register: Annotated[bool, typer.Option(help="Run the register stage(s) (params flow.register_stages).")] = True,
    pull: Annotated[bool | None, typer.Option(help="`dvc pull` first (default: params flow.pull).")] = None,
    push: Annotated[bool | None, typer.Option(help="`dvc push` after (default: params flow.push).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the stage plan from dvc.yaml and stop.")] = False,
    repo: Annotated[Path, typer.Option(help="The DVC repository (holds dvc.yaml and params.yaml).")] = Path("."),
) -> None:
    """Run the DVC pipeline once as a Prefect flow (temporary local server unless PREFECT_API_URL is set)."""
    try:
        result = pipeline(variants=variant or None, force=force or None, set_params=set_ or None,
                          register_model=register, pull=pull, push=push, dry_run=dry_run, repo=str(repo))
    except FaceswapError:
        raise
    except Exception as err:  # Prefect's own failures (server start-up, ...); the full log is in the Prefect UI
        fail(str(err))
    if dry_run:
        typer.echo("\n".join(result["plan"]))
        return
    for o in result["stages"]:
        typer.echo(f"{o['stage']:<32} {o['status']:<8} {o['seconds']:7.2f} s  {o.get('detail', '')}")


def main(argv: list[str] | None = None) -> None:
    """``python -m pipelines.flow [options]``, also what ``faceswap flow run [options]`` runs."""
    for k, v in ENV_DEFAULTS.items():
        os.environ.setdefault(k, v)
    cli(sys.argv[1:] if argv is None else argv, prog_name="python -m pipelines.flow")


if __name__ == "__main__":
    main()
