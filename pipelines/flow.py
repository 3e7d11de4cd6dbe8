"""The Prefect flow: the DVC pipeline stage by stage, one task per stage (and per ``stage@variant``).

DVC decides what is up to date: each task asks ``dvc status`` for its stage and runs ``dvc repro --single-item``
only when something changed, streaming the stage's own output into the Prefect logs. The stage list and its
order come from ``dvc.yaml`` (``pipelines.graph``); settings from the ``flow`` section of ``params.yaml``.

Run once, locally, with no server set up: ``faceswap flow run`` or ``python -m pipelines.flow``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

# A fresh Prefect database makes the temporary server start in ~30 s, over Prefect's 20 s default.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
for _k, _v in {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "true",
               "MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}.items():
    os.environ.setdefault(_k, _v)

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from faceswap.console import App, fail  # noqa: E402
from faceswap.errors import FaceswapError  # noqa: E402
from pipelines import artifacts as art  # noqa: E402
from pipelines.graph import StageSpec, discover, select  # noqa: E402

PARAMS_FILE = "params.yaml"


class StageFailed(FaceswapError, RuntimeError):
    """A DVC stage exited non-zero; the message ends with the stage's last output lines."""


def _child_env() -> dict[str, str]:
    # Stage commands run `faceswap`/`python` from PATH: put this interpreter's environment first, so a served
    # deployment works without an activated virtualenv.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "PYTHONUNBUFFERED": "1"}


def _stream(args: list[str], cwd: Path, label: str, tail: int) -> tuple[int, list[str]]:
    """Run ``args``, log every output line to the Prefect run logger, return (exit code, last lines)."""
    logger = get_run_logger()
    last: deque[str] = deque(maxlen=tail)
    proc = subprocess.Popen(args, cwd=cwd, env=_child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", bufsize=1)
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n").rsplit("\r", 1)[-1].rstrip()  # progress bars: keep the last redraw
            if line:
                logger.info("%s | %s", label, line)
                last.append(line)
        return proc.wait(), list(last)
    finally:
        if proc.poll() is None:  # cancelled or interrupted: do not leave the stage running
            proc.terminate()
            proc.wait(timeout=30)


def _dvc(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


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
    rc, last = _stream(_dvc("repro", "--single-item", *(["--force"] if force else []), address), root, address,
                       log_tail)
    if rc != 0:
        raise StageFailed(f"stage {address} failed (exit {rc}); its last output:\n" + "\n".join(last))
    return {"stage": address, "status": "ran", "seconds": time.perf_counter() - t0, "detail": detail}


@task(name="dvc-sync", cache_policy=NO_CACHE, persist_result=False)
def dvc_sync(command: str, repo: str, log_tail: int = 30) -> None:
    """``dvc pull`` (new data from the remote before a run) or ``dvc push`` (outputs after it)."""
    args = [command, "--allow-missing"] if command == "pull" else [command]
    rc, last = _stream(_dvc(*args), Path(repo), f"dvc {command}", log_tail)
    if rc != 0:
        raise StageFailed(f"dvc {command} failed (exit {rc}):\n" + "\n".join(last))


@contextlib.contextmanager
def params_overlay(root: Path, overrides: list[str]) -> Iterator[None]:
    """Apply ``dvc exp run -S``-style overrides (``key=value``) to params.yaml; restore the file afterwards."""
    if not overrides:
        yield
        return
    from dvc.utils.hydra import apply_overrides

    path = root / PARAMS_FILE
    original = path.read_bytes()
    try:
        apply_overrides(path, list(overrides))
        yield
    finally:
        path.write_bytes(original)


def _load_params(root: Path):
    """params.yaml, validated (a ConfigError names each bad key, overlay included)."""
    from faceswap.config import load_params

    return load_params(root / PARAMS_FILE)


def _retry_delays(first: float, retries: int) -> list[float]:
    return [first * 2**i for i in range(retries)]


def _publish(root: Path, params, outcomes: list[dict[str, Any]], overlay: list[str], excluded: list[str]) -> None:
    f, paths = params.flow, params.paths  # the files the stages wrote, where params.yaml says they are
    variants = params.model.variants
    metrics = {v: paths.variant_metrics_file(v) for v in variants}
    records = {v: paths.evaluation_record(v) for v in variants}
    docs = {
        "stages": (art.stages_markdown(outcomes, overlay, excluded), "What each stage did in this run"),
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
        set_params: params overlay, ``dvc exp run -S`` syntax (``train.steps=50``); params.yaml is restored after.
        register_model: false leaves out the stages in params flow.register_stages.
        pull / push: ``dvc pull`` before / ``dvc push`` after (default: params flow.pull / flow.push).
        dry_run: only discover and return the plan.
        repo: the DVC repository (relative to the working directory).
    """
    logger = get_run_logger()
    root = Path(repo)
    overlay = list(set_params or [])
    base = _load_params(root)
    f = base.flow
    outcomes: list[dict[str, Any]] = []
    if (f.pull if pull is None else pull) and not dry_run:
        dvc_sync.with_options(retries=f.retries, retry_delay_seconds=_retry_delays(f.retry_delay_s, f.retries))(
            "pull", repo, f.log_tail)
    with params_overlay(root, overlay):
        params = _load_params(root) if overlay else base
        stages = discover(root)
        f = params.flow  # the overlay may set flow.* too (retries, register stages)
        todo, excluded, forced = select(stages, variants, () if register_model else f.register_stages, force or ())
        plan = [s.address for s in todo]
        logger.info("plan: %s%s", " → ".join(plan), f" (excluded: {', '.join(s.address for s in excluded)})"
                    if excluded else "")
        if dry_run:
            return {"plan": plan, "excluded": [s.address for s in excluded], "forced": sorted(forced)}
        try:
            for s in todo:
                outcomes.append(_run(s, repo, s.address in forced, f))
        except BaseException:
            failed = next((s.address for s in todo if s.address not in {o["stage"] for o in outcomes}), "?")
            outcomes.append({"stage": failed, "status": "failed", "seconds": 0.0, "detail": "see the task's logs"})
            raise
        finally:
            _publish(root, params, outcomes, overlay, [s.address for s in excluded])
    if (f.push if push is None else push) and any(o["status"] == "ran" for o in outcomes):
        dvc_sync.with_options(retries=f.retries, retry_delay_seconds=_retry_delays(f.retry_delay_s, f.retries))(
            "push", repo, f.log_tail)
    ran = [o["stage"] for o in outcomes if o["status"] == "ran"]
    logger.info("done: %d stage(s) ran, %d up to date", len(ran), len(outcomes) - len(ran))
    return {"plan": plan, "excluded": [s.address for s in excluded], "stages": outcomes}


def _run(s: StageSpec, repo: str, force: bool, f) -> dict[str, Any]:
    retries = 0 if (s.name in f.no_retry or s.address in f.no_retry) else f.retries
    task_ = run_stage.with_options(name=s.address, retries=retries,
                                   retry_delay_seconds=_retry_delays(f.retry_delay_s, retries) if retries else 0)
    return task_(s.address, repo, force, f.log_tail)


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
    cli(sys.argv[1:] if argv is None else argv, prog_name="python -m pipelines.flow")


if __name__ == "__main__":
    main()
