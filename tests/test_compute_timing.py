"""``precision: auto`` on a CPU decided by timing: the fastest candidate wins, the choice is cached per machine and
model, and the probe leaves the run's RNG where it was."""

from __future__ import annotations

import json
import time

import pytest
import torch

from faceswap.compute import PRECISION_ENV, ComputePlan, CpuFeatures, plan_compute
from faceswap.compute_timing import (
    cache_file,
    candidate_plans,
    key_digest,
    label,
    plan_key,
    timed_plan,
    timed_training_plan,
    training_geometry,
)
from faceswap.config import LossParams
from faceswap.model import ModelConfig

AMX = CpuFeatures(avx512_bf16=True, amx_bf16=True, capability="AVX512", onednn=True)
ZEN3 = CpuFeatures(avx512_bf16=False, amx_bf16=False, capability="AVX2", onednn=True)
GEOMETRY = {"model": "planted", "batch": 4}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACESWAP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(PRECISION_ENV, raising=False)


def planted(fast: str, calls: list[str]):
    """Steps that really take 1 ms (the ``fast`` plan) or 15 ms (every other plan)."""

    def make(plan: ComputePlan):
        calls.append(label(plan))
        return lambda: time.sleep(0.001 if label(plan) == fast else 0.015)

    return make


@pytest.mark.parametrize("fast", ["fp32/NCHW", "bf16/channels-last", "fp32/channels-last"])
def test_the_fastest_candidate_is_chosen_and_its_timings_are_the_reason(fast):
    calls: list[str] = []
    plan = timed_plan(plan_compute("cpu", cpu=AMX), planted(fast, calls), GEOMETRY, cpu=AMX, warmup=1, rounds=2)
    assert label(plan) == fast
    assert sorted(calls) == ["bf16/NCHW", "bf16/channels-last", "fp32/NCHW", "fp32/channels-last"]
    assert "measured" in plan.reason and all(c in plan.reason for c in calls)
    assert plan.params()["compute.reason"] == plan.reason  # what MLflow records


def test_the_second_run_reads_the_cache_and_a_new_geometry_or_torch_measures_again(monkeypatch):
    calls: list[str] = []
    rule = plan_compute("cpu", cpu=AMX)
    first = timed_plan(rule, planted("bf16/channels-last", calls), GEOMETRY, cpu=AMX, warmup=1, rounds=2)
    saved = json.loads(cache_file().read_text())
    assert len(saved) == 1 and next(iter(saved.values()))["key"]["geometry"] == GEOMETRY

    again: list[str] = []
    second = timed_plan(rule, planted("fp32/NCHW", again), GEOMETRY, cpu=AMX)
    assert again == [] and label(second) == label(first) and "cached" in second.reason

    timed_plan(rule, planted("fp32/NCHW", again), {**GEOMETRY, "batch": 8}, cpu=AMX, warmup=1, rounds=1)
    assert len(again) == 4
    key = plan_key(GEOMETRY, AMX)
    monkeypatch.setattr(torch, "__version__", "0.0.0-other")
    assert key_digest(plan_key(GEOMETRY, AMX)) != key_digest(key)
    monkeypatch.undo()
    monkeypatch.setattr(torch, "get_num_threads", lambda: 97)
    assert key_digest(plan_key(GEOMETRY, AMX)) != key_digest(key)


def test_bf16_is_timed_only_where_native_and_settings_are_not_second_guessed(monkeypatch):
    assert [label(p) for p in candidate_plans(plan_compute("cpu", cpu=ZEN3), ZEN3)] == ["fp32/NCHW",
                                                                                      "fp32/channels-last"]
    calls: list[str] = []
    make = planted("fp32/NCHW", calls)
    explicit = plan_compute("cpu", "bf16", True, cpu=AMX)
    assert timed_plan(explicit, make, GEOMETRY, cpu=AMX) == explicit
    layout_set = timed_plan(plan_compute("cpu", channels_last=True, cpu=AMX), make, GEOMETRY, cpu=AMX, rounds=1)
    assert layout_set.channels_last and sorted(calls) == ["bf16/channels-last", "fp32/channels-last"]
    monkeypatch.setenv(PRECISION_ENV, "fp32")
    forced = plan_compute("cpu", "auto", False, cpu=AMX)
    assert timed_plan(forced, make, GEOMETRY, cpu=AMX) == forced
    gpu = plan_compute("cuda", cuda_bf16=True)
    assert timed_plan(gpu, make, GEOMETRY, cpu=AMX) == gpu
    assert len(calls) == 2


def test_a_real_training_step_probe_leaves_the_rng_untouched():
    mcfg = ModelConfig(image_size=32, width=4, bottleneck_channels=8)
    loss = LossParams(lpips_net="none", lpips_weight=0.0)
    torch.manual_seed(7)
    before = torch.get_rng_state()
    plan = timed_training_plan(plan_compute("cpu"), mcfg, loss, 2, warmup=1, rounds=1)
    assert torch.equal(torch.get_rng_state(), before)
    assert plan.precision in ("fp32", "bf16") and "ms" in plan.reason
    ms = next(iter(json.loads(cache_file().read_text()).values()))["ms"]
    assert ms and all(0 < v < 10_000 for v in ms.values())
    assert training_geometry(mcfg, loss, 2)["model"]["width"] == 4
