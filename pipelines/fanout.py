"""The items of a fan-out stage (``train``: the variant × seed matrix) side by side, recorded as DVC records them.

``dvc repro`` holds the repository's lock for a whole reproduction, so two of them in one workspace cannot run at
once. The flow therefore lets DVC run everything else and, for the stages in params ``flow.fan_out``:

1. asks DVC which items changed, and removes their non-persistent outputs, as ``dvc repro`` does before a run;
2. runs those items' commands (DVC's own command line for the stage: shell, folder, ``DVC_ROOT``/``DVC_STAGE``)
   through a Prefect task runner, at most ``workers`` at once, each pinned to its lane: ``OMP_NUM_THREADS`` /
   ``MKL_NUM_THREADS`` = ``threads_per_run`` and, with GPUs, one ``CUDA_VISIBLE_DEVICES`` each;
3. records each finished item with ``dvc commit``, in DVC's order, so ``dvc.lock`` holds what a serial
   ``dvc repro`` writes and a following ``dvc repro`` (or ``dvc status``) finds nothing to do.

The task runner is Prefect's thread pool on this machine, or ``prefect-dask``'s ``DaskTaskRunner`` on the Dask
scheduler named by params ``flow.cluster_address`` / ``$DASK_SCHEDULER_ADDRESS`` (docs/orchestration.md).
Concurrent training runs log to MLflow through a server in front of the store (``faceswap.tracking.serve_store``).
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from faceswap.errors import FaceswapError
from pipelines.proc import StageFailed, dvc, stream

CLUSTER_ENV = "DASK_SCHEDULER_ADDRESS"  # Dask's own variable: `dask scheduler` prints the address to put here


class FanOutError(FaceswapError, RuntimeError):
    """The fan-out cannot start (no task runner for the cluster address)."""


@dataclass(frozen=True)
class Lanes:
    """How many items run at once and how each is pinned: ``threads`` torch threads, one GPU each if any."""

    workers: int
    threads: int
    gpus: tuple[str, ...] = ()

    def env(self, lane: int) -> dict[str, str]:
        env = {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[lane % len(self.gpus)]
        return env


def visible_gpus() -> tuple[str, ...]:
    """The CUDA devices this process may use: ``$CUDA_VISIBLE_DEVICES``, else what ``nvidia-smi -L`` lists."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return tuple(d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1")
    exe = shutil.which("nvidia-smi")
    if not exe:
        return ()
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(str(i) for i, _ in enumerate(x for x in out.splitlines() if x.startswith("GPU ")))


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def plan_lanes(workers: int | str, threads: int | str, device: str = "auto", cores: int | None = None,
               gpus: tuple[str, ...] | None = None) -> Lanes:
    """Resolve params ``flow.workers`` / ``flow.threads_per_run`` (``auto``) for this machine.

    With GPUs (and ``train.device`` not cpu): one run per GPU, the cores shared out among them. On CPU: one thread
    per run and one run per core, because on the 2-core Xeon two one-thread runs side by side train more images
    per second than one run on both cores (docs/orchestration.md), and a many-thread run beside another collapses.
    """
    cores = cores or cpu_cores()
    gpus = (visible_gpus() if gpus is None else gpus) if device != "cpu" else ()
    if threads == "auto":
        threads = max(1, cores // len(gpus)) if gpus else 1
    if workers == "auto":
        workers = len(gpus) if gpus else max(1, cores // threads)
    return Lanes(int(workers), int(threads), gpus)


def cluster_address(configured: str | None) -> str | None:
    return configured or os.environ.get(CLUSTER_ENV) or None


def task_runner(lanes: Lanes, address: str | None):
    """Prefect's thread pool of ``lanes.workers`` threads here, or a DaskTaskRunner on ``address``."""
    if address:
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise FanOutError(f"flow.cluster_address / ${CLUSTER_ENV} is {address!r}, which needs the prefect-dask "
                              "package: pip install prefect-dask (docs/orchestration.md)") from None
        return DaskTaskRunner(address=address)
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=lanes.workers)


# Lanes of the fan-outs running in this process, by key: a task takes a free lane's environment and gives it back.
# On a Dask cluster the key is unknown to the worker, which then runs with its own environment (its GPU, threads).
_LANES: dict[str, queue.Queue] = {}


@dataclass(frozen=True)
class Item:
    """One stage item to run: its DVC address and DVC's own command line for it."""

    address: str
    argv: tuple[tuple[str, ...], ...]  # one argv per command of the stage
    cwd: str
    env: tuple[tuple[str, str], ...]  # DVC_ROOT, DVC_STAGE as `dvc repro` sets them


def prepare(root: Path, addresses: list[str]) -> list[Item]:
    """DVC's command lines for ``addresses``, with their non-persistent outputs removed as ``dvc repro`` does."""
    from dvc.repo import Repo
    from dvc.stage.run import _enforce_cmd_list, _make_cmd, get_executable, prepare_kwargs

    items = []
    with Repo(str(root)) as repo, repo.lock:  # released before the commands run: each `dvc commit` takes it
        for address in addresses:
            dvcfile, _, name = address.rpartition(":")
            (stage,) = repo.stage.collect(f"{Path(repo.root_dir) / (dvcfile or 'dvc.yaml')}:{name}")
            stage.remove_outs(ignore_remove=False, force=False)
            kwargs = prepare_kwargs(stage)
            env = {k: v for k, v in kwargs["env"].items() if k.startswith("DVC_")}
            argv = tuple(tuple(_make_cmd(get_executable(), c)) for c in _enforce_cmd_list(stage.cmd))
            items.append(Item(address, argv, str(kwargs["cwd"]), tuple(sorted(env.items()))))
    return items


@task(name="fan-out-item", cache_policy=NO_CACHE, persist_result=False)
def run_item(item: Item, lanes_key: str, extra_env: dict[str, str], log_tail: int = 30) -> dict[str, Any]:
    """Run one item's commands on a free lane (its threads and GPU); raise StageFailed with its output."""
    logger = get_run_logger()
    pool = _LANES.get(lanes_key)
    lane = pool.get() if pool is not None else None
    t0 = time.perf_counter()
    try:
        env = {**dict(item.env), **extra_env, **(lane or {})}
        logger.info("%s: running on lane %s", item.address, lane or "(the worker's own)")
        for argv in item.argv:
            rc, last = stream(list(argv), Path(item.cwd), item.address, log_tail, env=env)
            if rc != 0:
                raise StageFailed(f"stage {item.address} failed (exit {rc}); its last output:\n" + "\n".join(last))
    finally:
        if pool is not None:
            pool.put(lane)
    pinned = ", ".join(f"{k}={v}" for k, v in (lane or {}).items())
    return {"stage": item.address, "status": "ran", "seconds": time.perf_counter() - t0,
            "detail": f"fanned out ({pinned})" if pinned else "fanned out"}


def commit(root: Path, address: str, log_tail: int) -> None:
    """``dvc commit`` one finished item: its deps, params and outs into dvc.lock, its outs into the cache. Called
    from the flow's thread only, one item after the other (the runs themselves go side by side)."""
    rc, last = stream(dvc("commit", "--force", address), root, f"dvc commit {address}", log_tail)
    if rc != 0:
        raise StageFailed(f"dvc commit {address} failed (exit {rc}):\n" + "\n".join(last))


def run_group(root: Path, addresses: list[str], lanes: Lanes, address: str | None, retries: int,
              retry_delay_seconds: Any, extra_env: dict[str, str], log_tail: int) -> list[dict[str, Any]]:
    """Run the items at ``addresses`` side by side and commit each, in the given order; raise the first failure
    after every other item has finished and been recorded."""
    items = prepare(root, addresses)
    key = uuid.uuid4().hex
    pool: queue.Queue = queue.Queue()
    for lane in range(lanes.workers):
        pool.put(lanes.env(lane))
    _LANES[key] = pool
    outcomes, failure = [], None
    task_ = run_item.with_options(retries=retries, retry_delay_seconds=retry_delay_seconds if retries else 0)
    try:
        with task_runner(lanes, address) as runner:
            futures = [(it, runner.submit(task_, parameters={"item": it, "lanes_key": key, "extra_env": extra_env,
                                                             "log_tail": log_tail})) for it in items]
            for it, fut in futures:  # DVC's order: dvc.lock's stages in the order a serial run writes them
                try:
                    outcome = fut.result()
                except Exception as err:  # every item finishes and is recorded first
                    failure = failure or err
                    outcomes.append({"stage": it.address, "status": "failed", "seconds": 0.0, "detail": str(err)[:200]})
                    continue
                commit(root, it.address, log_tail)
                outcomes.append(outcome)
    finally:
        _LANES.pop(key, None)
    if failure is not None:
        raise failure
    return outcomes
