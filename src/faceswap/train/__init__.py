"""Training one decoder variant: ``train(params, variant, out_dir, manifest=..., faces_dir=...)`` (:mod:`.loop`),
the library under the ``train`` stage (:mod:`faceswap.stages.train`), benchmarks and tests; its step
(:func:`train_step`) is the one the benchmarks time.

Each step reconstructs a batch of every identity through its own decoder (shared encoder), on warped
inputs against clean targets. One code path serves every device:

* device ``cuda`` (auto when present): bf16 autocast (fp16 + GradScaler on GPUs without bf16),
  channels-last, pinned memory and loader workers, optional ``torch.compile``; ``cpu``: bf16 autocast only
  where the CPU has native bf16 (AVX-512-BF16, AMX), channels-last under oneDNN (``faceswap.compute``).
* DDP under ``torchrun`` (NCCL on GPUs, gloo on CPU): ranks read disjoint slices of one deterministic
  data stream; only ``is_main`` logs, previews, validates and saves.
* checkpoints (atomic, ``faceswap.checkpoint``) every N steps, the last K kept plus ``best.pt``, each a
  full :class:`~faceswap.checkpoint.TrainingState` that loads with ``weights_only=True``. A rerun resumes
  from the newest readable checkpoint with the same config fingerprint (a corrupt one falls back to the
  previous with a warning); a changed config starts fresh and says so (:func:`find_resume`, :mod:`.resume`).
* a non-finite loss or non-finite gradients skip the step on the device, with no wait for it (:mod:`.step`); the
  loop reads the flags at its log and job boundaries, warns, and ``max_nonfinite`` in a row stop the run
  (:class:`TrainingError`) and leave the last good checkpoint (:mod:`.run`); SIGINT/SIGTERM save and stop cleanly.

Outputs in ``out_dir``: ``model.pt`` (the best-by-validation weights, a :class:`~faceswap.checkpoint.ModelFile`),
``previews/``, ``run.json``; the training states beside it, in :func:`~faceswap.checkpoint.checkpoint_dir`. The
stage's records (DVC metrics, loss curves) are written by
:mod:`faceswap.stages.train` from the :class:`TrainResult`.
"""

from faceswap.train.loop import train
from faceswap.train.records import GRID_KEYS, Best, Curves, Outcome, Speed, TrainingError, TrainResult
from faceswap.train.resume import (
    OPERATIONAL_KEYS,
    RESUMABLE_KEYS,
    LossWindow,
    Progress,
    Resume,
    ResumeReason,
    find_resume,
    fingerprint,
    run_config,
    run_seed,
)
from faceswap.train.runtime import Dist, Runtime, default_workers, setup_runtime
from faceswap.train.step import StepOutput, StepParts, SwapModel, lr_at, make_optimizer, train_step
from faceswap.train.validation import pixel_weight, training_preview, validation_grid, validation_loss

__all__ = [
    "GRID_KEYS", "OPERATIONAL_KEYS", "RESUMABLE_KEYS", "Best", "Curves", "Dist", "LossWindow", "Outcome", "Progress",
    "Resume", "ResumeReason", "Runtime", "Speed", "StepOutput", "StepParts", "SwapModel", "TrainResult",
    "TrainingError", "default_workers", "find_resume", "fingerprint", "lr_at", "make_optimizer", "pixel_weight",
    "run_config", "run_seed", "setup_runtime", "train", "train_step", "training_preview", "validation_grid",
    "validation_loss",
]
