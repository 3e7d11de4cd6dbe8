"""Everything a run decides once before its first step: where it runs, the faces it reads, its config and
fingerprint (:class:`RunSetup`), what a step changes (:class:`Trainables`), the batch stream, and its MLflow run."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from faceswap.checkpoint import checkpoint_dir
from faceswap.compute_timing import timed_training_plan
from faceswap.config import Params, TrainParams
from faceswap.data.dataset import FaceSet, StepBatches, SwapPairs, load_faces, worker_init
from faceswap.data.manifest import manifest_detector
from faceswap.model import FaceSwapAutoencoder, ModelConfig
from faceswap.train.resume import fingerprint, run_config, run_seed
from faceswap.train.runtime import Runtime, default_workers, setup_runtime
from faceswap.train.step import make_optimizer

if TYPE_CHECKING:
    from faceswap.tracking import Tracker


@dataclass(frozen=True)
class RunData:
    """The faces one run reads: the training stream's source and the fixed sets for validation and previews."""

    manifest: Path
    version: str  # md5 of the manifest, recorded with the run
    detector: dict | None  # recorded with the model: serving detects as the crops were made
    train: dict[str, FaceSet]
    val_faces: dict[str, FaceSet]


def load_run_data(params: Params, manifest: Path, faces_dir: str | Path | None) -> RunData:
    """Every accepted train and val crop of the run's identities, with the manifest's version and detector."""
    from faceswap.tracking import file_md5

    ids, size = params.base.identities, params.base.image_size
    train = load_faces(manifest, ids, "train", size, faces_dir)  # first: its errors name a bad manifest clearly
    val = load_faces(manifest, ids, "val", size, faces_dir)
    return RunData(manifest=manifest, version=file_md5(manifest), detector=manifest_detector(manifest), train=train,
                   val_faces=val)


@dataclass(frozen=True)
class RunSetup:
    """What one run is, decided once before its first step: the params, variant and seed, the run folder, where
    the arithmetic runs, the faces it reads, and its config with the fingerprint a resume must match."""

    params: Params
    variant: str
    seed: int
    out: Path
    rt: Runtime
    data: RunData
    cfg: dict[str, Any]  # run_config: what the checkpoints and MLflow record
    fp: str  # fingerprint(cfg)

    @property
    def t(self) -> TrainParams:
        return self.params.train

    @property
    def ckpt_dir(self) -> Path:
        return checkpoint_dir(self.out)


def setup_run(params: Params, variant: str, out_dir: str | Path, *, manifest: str | Path,
              faces_dir: str | Path | None, seed: int | None = None) -> RunSetup:
    """Device and compute plan (joining DDP under torchrun), the run's faces, its config and fingerprint."""
    rt = setup_runtime(params.train)
    if not rt.dist.enabled:  # auto on a CPU: the fastest plan for this model (DDP ranks keep the rules, alike)
        t = params.train
        plan = timed_training_plan(rt.plan, ModelConfig.from_params(params, variant), t.loss, t.batch_size)
        rt = replace(rt, plan=plan)
    data = load_run_data(params, Path(manifest), faces_dir)
    seed = run_seed(params, seed)
    cfg = run_config(params, variant, data.version, seed)
    return RunSetup(params=params, variant=variant, seed=seed, out=Path(out_dir), rt=rt, data=data, cfg=cfg,
                    fp=fingerprint(cfg))


@dataclass(frozen=True)
class Trainables:
    """What a step changes: the model (and the config that rebuilds it), the optimiser and the loss scaler."""

    model: FaceSwapAutoencoder
    mcfg: ModelConfig
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler


def build_trainables(setup: RunSetup) -> Trainables:
    """The autoencoder with the variant's decoders on the run's device and memory format (weights drawn from the
    torch RNG as it stands: the loop seeds it first), its optimiser, and a scaler that only fp16 turns on."""
    rt = setup.rt
    mcfg = ModelConfig.from_params(setup.params, setup.variant)
    model = FaceSwapAutoencoder(mcfg).to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return Trainables(model=model, mcfg=mcfg, opt=make_optimizer(model, setup.t, rt.device),
                      scaler=torch.amp.GradScaler(rt.device.type, enabled=rt.precision == "fp16"))


def make_loader(setup: RunSetup, start: int) -> torch.utils.data.DataLoader:
    """This rank's slice of the deterministic batch stream from step ``start`` (so a resume continues it)."""
    t, rt = setup.t, setup.rt
    workers = t.workers if t.workers is not None else default_workers(rt.device)
    return torch.utils.data.DataLoader(
        SwapPairs(setup.data.train, t.augment, setup.seed, setup.params.align.coverage),
        batch_sampler=StepBatches(start, t.steps, t.batch_size, rt.dist.rank, rt.dist.world),
        num_workers=workers, pin_memory=rt.device.type == "cuda",
        prefetch_factor=4 if workers else None, persistent_workers=False, worker_init_fn=worker_init,
    )


def start_tracking(setup: RunSetup, run_id: str | None) -> tuple[Tracker, str]:
    """Open (or reopen, on resume) the MLflow run on the main rank, tagged so runs group by variant, seed and
    experiment; returns the tracker and the git commit."""
    from faceswap.tracking import GROUP_ENV, git_commit, start_run

    params, cfg, fp, data, rt = setup.params, setup.cfg, setup.fp, setup.data, setup.rt
    commit = git_commit()
    group = os.environ.get(GROUP_ENV) or hashlib.sha256(json.dumps(
        [commit, data.version, {k: v for k, v in cfg.items() if k != "variant"}], sort_keys=True).encode()
    ).hexdigest()[:12]
    variant, seed = cfg["variant"], cfg["seed"]
    tags = {"variant": variant, "seed": str(seed), "data_version": data.version, "git_commit": commit,
            "faceswap.group": group, "config_fingerprint": fp, "device": str(rt.device), "precision": rt.precision,
            "world_size": str(rt.dist.world)}
    tracker = start_run(params, f"{variant}-seed{seed}", run_id, tags, enabled=params.train.mlflow and rt.dist.is_main)
    if rt.dist.is_main:
        tracker.log_params({**cfg, **rt.plan.params(), "data_path": str(data.manifest),
                            "train_faces": {i: len(f) for i, f in data.train.items()}})
        if run_id is None:  # a new run: what it trains on, as the UI's Dataset column (a resume has it already)
            from faceswap.tracking import TRAINING, log_manifest_input

            log_manifest_input(tracker, data.manifest, TRAINING, dvc_hash=data.version, commit=commit)
    return tracker, commit
