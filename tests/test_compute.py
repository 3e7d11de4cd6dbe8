"""The compute plan (precision and memory layout per device) and bf16 training on the CPU, with resumes
across precisions: a checkpoint written in fp32 continues under bf16 and the reverse."""

from __future__ import annotations

import pytest
import torch

from faceswap.checkpoint import checkpoint_dir, load_checkpoint
from faceswap.compute import PRECISION_ENV, ComputeError, CpuFeatures, plan_compute
from faceswap.train import TrainingError, default_workers
from tests.test_train import faces, params, train  # noqa: F401 - the module's face-set fixture


@pytest.fixture(autouse=True)
def _auto_is_auto(monkeypatch):
    """These tests check what auto decides, so a suite forced to one plan ($FACESWAP_PRECISION) does not apply."""
    monkeypatch.delenv(PRECISION_ENV, raising=False)


def test_the_environment_forces_what_auto_resolves_to_and_never_an_explicit_setting(monkeypatch):
    monkeypatch.setenv(PRECISION_ENV, "fp32")
    forced = plan_compute("cpu", cpu=ZEN4)
    assert forced.precision == "fp32" and PRECISION_ENV in forced.reason
    monkeypatch.setenv(PRECISION_ENV, "bf16")
    assert plan_compute("cpu", cpu=ZEN3).precision == "bf16"
    assert plan_compute("cpu", "fp32", cpu=ZEN4).precision == "fp32"  # an explicit setting wins
    monkeypatch.setenv(PRECISION_ENV, "fp8")
    with pytest.raises(ComputeError, match="FACESWAP_PRECISION='fp8'"):
        plan_compute("cpu", cpu=ZEN4)

ZEN3 = CpuFeatures(avx512_bf16=False, amx_bf16=False, capability="AVX2", onednn=True)
ZEN4 = CpuFeatures(avx512_bf16=True, amx_bf16=False, capability="AVX512", onednn=True)
SAPPHIRE_RAPIDS = CpuFeatures(avx512_bf16=True, amx_bf16=True, capability="AVX512", onednn=True)
PLAIN = CpuFeatures(avx512_bf16=False, amx_bf16=False, capability="DEFAULT", onednn=False)


@pytest.mark.parametrize(("cpu", "precision", "channels_last"), [
    (ZEN3, "fp32", True),  # AVX2 only: bf16 would be emulated (measured ~100x slower than fp32 here)
    (ZEN4, "bf16", True),  # native AVX-512-BF16
    (SAPPHIRE_RAPIDS, "bf16", True),  # AMX
    (PLAIN, "fp32", False),  # no oneDNN: NCHW kernels
])
def test_auto_picks_bf16_only_with_native_bf16_and_channels_last_only_with_onednn(cpu, precision, channels_last):
    plan = plan_compute("cpu", cpu=cpu)
    assert (plan.precision, plan.channels_last) == (precision, channels_last)
    assert "auto" in plan.reason
    assert ("without native bf16" in plan.reason) == (precision == "fp32")
    assert plan.params()["compute.precision"] == precision


def test_cuda_rules_and_explicit_settings_win():
    assert plan_compute("cuda", cuda_bf16=True).precision == "bf16"
    gpu = plan_compute("cuda", cuda_bf16=False)
    assert (gpu.precision, gpu.channels_last) == ("fp16", True)
    forced = plan_compute("cpu", "bf16", False, cpu=ZEN3)
    assert (forced.precision, forced.channels_last) == ("bf16", False) and "set" in forced.reason
    assert plan_compute("cpu", "fp32", cpu=ZEN4).precision == "fp32"
    with pytest.raises(ComputeError, match=r"evaluate\.precision fp16 needs a CUDA device"):
        plan_compute("cpu", "fp16", setting="evaluate")


def test_this_machines_facts_are_read():
    feats = CpuFeatures.detect()
    assert feats.capability and isinstance(feats.native_bf16, bool)
    assert plan_compute("cpu").precision == ("bf16" if feats.native_bf16 else "fp32")


def test_cpu_training_makes_its_batches_inline():
    assert default_workers(torch.device("cpu")) == 0


def test_fp16_on_cpu_is_a_clear_training_error(faces, tmp_path):  # noqa: F811
    with pytest.raises(TrainingError, match="fp16 needs a CUDA device"):
        train(params(tmp_path, precision="fp16"), "convtranspose", tmp_path / "m", faces)


def _weights_finite(path) -> bool:
    state = load_checkpoint(path)
    return all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.parametrize(("first", "second"), [("fp32", "bf16"), ("bf16", "fp32")])
def test_bf16_cpu_steps_train_and_resume_across_precisions(faces, tmp_path, capsys, first, second):  # noqa: F811
    """A run of 16 steps whose checkpoints after step 8 are lost resumes at 8 in the other precision and layout."""
    out = tmp_path / "m"
    cl = first == "bf16"  # the layout changes too, both ways

    def run(precision: str, channels_last: bool):
        return train(params(tmp_path, steps=16, checkpoint_every=8, val_every=8, precision=precision,
                            channels_last=channels_last), "resize_nearest", out, faces)

    r1 = run(first, cl)
    assert r1.outcome.step == 16 and r1.best.val_loss is not None
    assert torch.isfinite(torch.tensor(r1.curves.loss)).all()
    half = load_checkpoint(checkpoint_dir(out) / "step_0000008.pt")
    assert (half["precision"], half["channels_last"]) == (first, cl)
    for late in ("step_0000016.pt", "best.pt"):
        (checkpoint_dir(out) / late).unlink()
    capsys.readouterr()
    r2 = run(second, not cl)
    err = capsys.readouterr().err
    assert r2.outcome.resumed_from == 8 and r2.outcome.step == 16
    assert f"checkpoint written in {first}" in err and f"continuing in {second}" in err
    last = load_checkpoint(checkpoint_dir(out) / "step_0000016.pt")
    assert (last["precision"], last["channels_last"]) == (second, not cl)
    assert torch.isfinite(torch.tensor(r2.curves.loss)).all() and _weights_finite(out / "model.pt")
    # the same arithmetic in another precision: the resumed run ends near the uninterrupted one
    assert abs(r2.curves.val_loss[-1] - r1.curves.val_loss[-1]) < 0.25 * r1.curves.val_loss[-1]
