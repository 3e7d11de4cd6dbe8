"""The scheduled deployment: the pipeline flow re-run on a cron schedule from params ``flow.schedule``.

Serve it (one long-running process that also executes the runs), from the repository root::

    prefect server start                         # another terminal; UI at http://127.0.0.1:4200
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m pipelines.deploy

``build_deployment()`` returns the same deployment unapplied (tests call ``.apply()`` on it); for work pools
(Docker, Kubernetes) see docs/orchestration.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.flow import PARAMS_FILE, pipeline


def _schedule(repo: str = "."):
    from faceswap.config import load_params

    return load_params(Path(repo) / PARAMS_FILE).flow.schedule


def build_deployment(repo: str = ".", name: str | None = None, cron: str | None = None):
    """A RunnerDeployment of the pipeline flow with the cron schedule of params ``flow.schedule``."""
    s = _schedule(repo)
    from prefect.schedules import Cron

    return pipeline.to_deployment(
        name=name or s.name,
        schedule=Cron(cron or s.cron, timezone=s.timezone),
        parameters={"pull": s.pull, "push": s.push, "repo": repo},
        description="Re-runs the faceswap DVC pipeline; DVC skips what is up to date.",
        tags=["faceswap", "dvc"],
        concurrency_limit=1,  # two runs in one DVC workspace would fight over its lock
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Serve the faceswap pipeline on its cron schedule (params flow.schedule).")
    ap.add_argument("--repo", default=".", help="DVC repository the runs work in (default: the current folder).")
    ap.add_argument("--cron", default=None, help="Override params flow.schedule.cron.")
    ap.add_argument("--name", default=None, help="Override params flow.schedule.name.")
    ap.add_argument("--apply-only", action="store_true",
                    help="Register the deployment and exit (runs then need a worker: docs/orchestration.md).")
    args = ap.parse_args(argv)
    deployment = build_deployment(args.repo, name=args.name, cron=args.cron)
    if args.apply_only:
        deployment_id = deployment.apply()
        print(f"registered deployment {pipeline.name}/{deployment.name} ({deployment_id})")
        return
    from prefect import serve

    serve(deployment)


if __name__ == "__main__":
    main()
