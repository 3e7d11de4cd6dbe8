"""The training package's contracts: a step that never waits for the device yet skips a non-finite step, every
collective on the run's device, the operational keys agreeing with dvc.yaml, a warning-free run, small modules."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml
from torch.utils._python_dispatch import TorchDispatchMode

from faceswap.config import LossParams, TrainParams, parse_params
from faceswap.model import FaceSwapAutoencoder, ModelConfig
from faceswap.train import (
    OPERATIONAL_KEYS,
    RESUMABLE_KEYS,
    LossWindow,
    StepParts,
    SwapModel,
    TrainingError,
    make_optimizer,
    train_step,
)
from faceswap.train.runtime import all_reduce
from tests import _checked_dist
from tests._faces import make_face_set
from tests.conftest import REPO, repo_paths

# the ops by which the host reads a device tensor (item, float, bool; tolist of a GPU tensor copies it to the CPU;
# a boolean mask's size): each waits for the device
HOST_READS = {"_local_scalar_dense", "nonzero", "masked_select", "_to_copy"}


class HostReads(TorchDispatchMode):
    """Counts the ops that make the host wait for the device (``_to_copy`` only towards the CPU; indexing only by a
    boolean mask, whose count the host must know)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in HOST_READS and (name != "_to_copy" or str(kwargs.get("device", "")) == "cpu"):
            self.seen.append(name)
        if name in ("index", "index_put", "index_put_") and any(
                i is not None and i.dtype == torch.bool for i in args[1]):
            self.seen.append(f"{name} by mask")
        return func(*args, **kwargs)


def _parts(code_mmd: float = 0.5, grad_clip: float | None = 1.0) -> StepParts:
    torch.manual_seed(0)
    model = FaceSwapAutoencoder(ModelConfig(image_size=64, width=4, bottleneck_channels=16, input_mask="ellipse"))
    t = TrainParams(grad_clip=grad_clip, warmup_steps=0, steps=10)
    return StepParts(net=SwapModel(model, with_codes=code_mmd > 0), model=model,
                     opt=make_optimizer(model, t, torch.device("cpu")),
                     scaler=torch.amp.GradScaler("cpu", enabled=False),
                     loss=LossParams(lpips_net="none", code_mmd=code_mmd), grad_clip=grad_clip)


def _batch(seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    xs = [torch.rand(3, 3, 64, 64, generator=g) for _ in range(2)]
    return xs, [x.clone() for x in xs]


def test_the_step_does_not_wait_for_the_device_and_the_guard_sees_a_wait():
    parts, window = _parts(), LossWindow(torch.device("cpu"))
    train_step(parts, *_batch(0), 0, 1e-3)  # the optimiser's state is made on the first step
    with HostReads() as reads:
        for k in range(1, 4):
            out = train_step(parts, *_batch(k), k, 1e-3)
            window.add(out.loss, out.ok)  # what the loop does with it every step
    assert reads.seen == []
    with HostReads() as reads:
        float(out.loss)  # what a log line reads: seen
        torch.zeros(4)[torch.tensor([True, False, True, False])]  # code_mmd's old boolean mask: seen
    assert reads.seen == ["_local_scalar_dense", "index by mask"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_the_step_never_synchronises_a_gpu(precision):
    """CUDA's own sync check: an op that makes the host wait for the GPU raises inside the step."""
    from faceswap.compute import plan_compute

    cuda = torch.device("cuda")
    parts = _parts()
    parts.model.to(cuda)
    parts.opt = make_optimizer(parts.model, TrainParams(), cuda)
    parts.scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    parts.autocast = plan_compute(cuda, precision, True).autocast
    window = LossWindow(cuda)
    batches = [[[x.to(cuda) for x in xy] for xy in _batch(k)] for k in range(4)]
    train_step(parts, *batches[0], 0, 1e-3)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for k in range(1, 4):
            out = train_step(parts, *batches[k], k, 1e-3)
            window.add(out.loss, out.ok)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert window.state()[1] == 3


@pytest.mark.parametrize("poison", ["loss", "gradients"])
def test_a_nonfinite_step_leaves_weights_and_optimiser_alone(poison):
    parts = _parts(code_mmd=0.0, grad_clip=None)
    train_step(parts, *_batch(0), 0, 1e-3)
    before = {k: v.detach().clone() for k, v in parts.model.named_parameters()}
    state = {k: {n: v.clone() for n, v in s.items()} for k, s in parts.opt.state.items()}
    xs, ys = _batch(1)
    if poison == "loss":
        ys[0][0, 0, 0, 0] = float("nan")  # a NaN target pixel: the loss is NaN
    else:
        next(parts.model.parameters()).register_hook(lambda g: g * float("nan"))  # the loss stays finite
    out = train_step(parts, xs, ys, 1, 1e-3)
    bad_loss, bad_grads = out.flags.tolist()
    assert (bad_loss if poison == "loss" else bad_grads) == 1.0 and not bool(out.ok)
    assert all(torch.equal(before[k], v) for k, v in parts.model.named_parameters())
    for p, s in parts.opt.state.items():
        assert all(torch.equal(s[n], state[p][n]) for n in s)  # moments and step count as they were
    window = LossWindow(torch.device("cpu"))
    window.add(out.loss, out.ok)
    assert window.state() == (0.0, 0)


def test_a_collective_on_another_device_is_refused_before_the_backend_sees_it():
    with pytest.raises(TrainingError, match="collective on a meta tensor in a run on cpu"):
        all_reduce(torch.zeros(2, device="meta"), "max", torch.device("cpu"))
    # the DDP test's wrapper of torch.distributed: a CPU tensor under NCCL (the crash of a .cpu() before a reduce)
    with pytest.raises(RuntimeError, match="cpu tensor under nccl"):
        _checked_dist.check(torch.zeros(2), "nccl", "all_reduce")
    _checked_dist.check(torch.zeros(2), "gloo", "all_reduce")


def test_operational_keys_are_the_train_keys_dvc_does_not_watch():
    """dvc.yaml's train stage lists every train key that changes a model; the operational keys are all the others,
    so a key is either rerun by DVC or kept across a resume, never both and never neither."""
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]
    watched = {p.split(".", 1)[1] for p in stage["params"] if isinstance(p, str) and p.startswith("train.")}
    keys = set(TrainParams.model_fields)
    assert set(OPERATIONAL_KEYS) == keys - watched
    assert set(RESUMABLE_KEYS) <= watched  # DVC reruns them, a resume continues across them


@pytest.mark.slow
def test_a_short_training_raises_no_warning(tmp_path):
    """Every warning is an error in a short run of the stage's own command (validation, LPIPS, previews, grid)."""
    faces = make_face_set(tmp_path / "faces")
    paths = {**repo_paths(tmp_path), "accepted": str(faces), "faces": str(faces.parent)}
    raw = {"base": {"seed": 0, "image_size": 64}, "model": {"width": 4, "bottleneck_channels": 16}, "paths": paths,
           "train": {"steps": 4, "batch_size": 2, "warmup_steps": 1, "val_every": 2, "val_images": 2,
                     "checkpoint_every": 2, "preview_every": 4, "preview_rows": 2, "log_every": 2, "workers": 0,
                     "mlflow": False,
                     "loss": {"lpips_net": "alex", "lpips_weight": 0.1, "lpips_every": 2, "lpips_images": 2}}}
    parse_params(raw)
    cfg = tmp_path / "params.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    env = {"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-W", "error", "-m", "faceswap.cli", "train", "--variant", "resize_nearest",
                           "--params", str(cfg)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Warning" not in proc.stderr and "trained resize_nearest: 4 steps" in proc.stdout


def test_the_training_modules_are_small_and_train_reads_in_under_100_lines():
    """Each module of the package has one job and stays under 400 lines; ``train()`` itself under 100."""
    for path in sorted((REPO / "src" / "faceswap" / "train").glob("*.py")):
        assert path.read_text().count("\n") <= 400, path.name
    loop = (REPO / "src" / "faceswap" / "train" / "loop.py").read_text()
    assert loop.count("\n") - loop[: loop.index("def train(")].count("\n") < 100


def test_the_benchmarks_time_the_training_step_itself():
    """bench/gpu_train.py runs no step of its own; bench/train.py's timed step is train_step (its ``parts``
    section times the pieces of a step apart, by design)."""
    gpu = (REPO / "bench" / "gpu_train.py").read_text()
    assert "train_step(parts" in gpu and "loss.backward(" not in gpu and "opt.step(" not in gpu
    assert "train_step(self.parts" in (REPO / "bench" / "train.py").read_text()
