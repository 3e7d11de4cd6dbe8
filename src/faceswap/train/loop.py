"""The training loop: :func:`train`, read top to bottom — set up, resume, step, run the jobs that are due, finish.

Each piece lives in its own module of :mod:`faceswap.train`: the step in :mod:`~faceswap.train.step`, the device,
precision and DDP in :mod:`~faceswap.train.runtime`, resuming in :mod:`~faceswap.train.resume`, the held-out
measurements in :mod:`~faceswap.train.validation`, the periodic jobs and outputs in :mod:`~faceswap.train.run`."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import torch

from faceswap.config import Params
from faceswap.data.dataset import to_float
from faceswap.train.records import TrainResult
from faceswap.train.resume import resume
from faceswap.train.run import Run, StopFlag
from faceswap.train.runtime import all_reduce, check_ranks_agree, log, wrap_model
from faceswap.train.setup import build_trainables, make_loader, setup_run, start_tracking
from faceswap.train.step import StepParts, lr_at, train_step
from faceswap.train.validation import pixel_weight


def train(
    params: Params,
    variant: str,
    out_dir: str | Path,
    *,
    manifest: str | Path,
    faces_dir: str | Path | None,
    seed: int | None = None,
    progress: bool | None = None,
) -> TrainResult:
    """Train ``variant`` on the accepted faces of ``manifest`` and write its outputs to ``out_dir`` (package doc).

    ``faces_dir``: the folder the manifest's crop paths are relative to (None: the manifest's own folder);
    ``seed`` (default ``base.seed``) seeds the weights and the augmentation stream of this run; ``progress``
    None shows a bar only on a terminal.
    """
    from tqdm import tqdm

    setup = setup_run(params, variant, out_dir, manifest=manifest, faces_dir=faces_dir, seed=seed)
    t, rt, identities = params.train, setup.rt, params.base.identities
    torch.manual_seed(setup.seed)
    parts = build_trainables(setup)
    log(f"train {variant}: {rt.plan.describe()}", rt.dist)
    prog = resume(setup, parts)
    weight = pixel_weight(params)
    step_parts = StepParts(
        net=wrap_model(parts.model, t, rt), model=parts.model, opt=parts.opt, scaler=parts.scaler, loss=t.loss,
        grad_clip=t.grad_clip, autocast=rt.autocast, seed=setup.seed,
        weight=None if weight is None else weight.to(rt.device),
        reduce=(lambda x: all_reduce(x, "max", rt.device)) if rt.dist.enabled else None)
    start = step = prog.step
    loader = make_loader(setup, start)
    tracker, commit = start_tracking(setup, prog.mlflow_run_id)
    run = Run(setup=setup, parts=parts, tracker=tracker, commit=commit, progress=prog)
    images_per_step = t.batch_size * len(identities) * rt.dist.world
    run.bar = tqdm(total=t.steps, initial=start, unit="step", desc=f"train {variant}", file=sys.stderr,
                   disable=(not rt.dist.is_main) or (progress is False) or (None if progress is None else False),
                   dynamic_ncols=True)
    t_start, status, stop = time.perf_counter(), "FAILED", StopFlag()
    try:
        with stop:
            step_parts.net.train()
            for step, batch in zip(range(start, t.steps), loader, strict=False):
                xs = [to_float(batch[f"{i}_in"], rt.device, rt.channels_last) for i in identities]
                ys = [to_float(batch[f"{i}_target"], rt.device, rt.channels_last) for i in identities]
                run.add(step, train_step(step_parts, xs, ys, step, lr_at(step, t)), images_per_step)
                step += 1
                run.bar.update(1)
                signum = run.after_step(step, stop.signum)
                if signum:
                    stop.signum = signum
                    break

        # finish: model.pt and run.json (or a resumable stop on a signal)
        run.bar.close()
        result = run.result(step, start, stop.signum, time.perf_counter() - t_start, images_per_step)
        if stop.signum is not None:
            log(f"train {variant}: stopped by signal {stop.signum} at step {step}; checkpoint saved, rerun to resume",
                rt.dist)
            status = "KILLED"
            return result
        if rt.dist.enabled:
            check_ranks_agree(parts.model, rt.device)
        if rt.dist.is_main:
            run.finish(result)
        status = "FINISHED"
        return result
    finally:
        run.bar.close()
        tracker.end(status)
        if rt.dist.enabled:
            with contextlib.suppress(Exception):
                torch.distributed.barrier()
