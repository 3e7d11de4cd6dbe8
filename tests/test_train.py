"""Training on real (tiny) face sets: learning, resume after a kill, corrupt checkpoints, NaN guard, DDP, MLflow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from faceswap.checkpoint import load_checkpoint, load_model
from faceswap.config import ConfigError, parse_params
from faceswap.data.dataset import StepBatches, SwapPairs, load_faces
from faceswap.train import TrainingError, lr_at, train
from tests._faces import make_face_set
from tests.conftest import REPO


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return make_face_set(tmp_path_factory.mktemp("faces"))


def raw_params(tmp_path, **train):
    t = {"steps": 20, "batch_size": 4, "lr": 2e-3, "warmup_steps": 2, "val_every": 5, "val_images": 4,
         "checkpoint_every": 5, "keep_checkpoints": 2, "preview_every": 10, "preview_rows": 2, "log_every": 5,
         "workers": 0, "faces_dir": None, "loss": {"lpips_net": "none"},
         "mlflow": False}
    tracking = {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "artifact_root": str(tmp_path / "mlruns")}
    for k, v in train.items():
        if k == "tracking":
            tracking.update(v)
            continue
        t[k] = {**t[k], **v} if isinstance(v, dict) and isinstance(t.get(k), dict) else v
    return {"base": {"seed": 0, "image_size": 64}, "model": {"width": 4, "bottleneck_channels": 16}, "train": t,
            "mlflow": tracking}


def params(tmp_path, **train):
    return parse_params(raw_params(tmp_path, **train))


def write_params(tmp_path, **train):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw_params(tmp_path, **train)))
    return path


def cli_env(**extra):
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


# --- pieces -----------------------------------------------------------------------------------------------


def test_stream_is_deterministic_and_ranks_take_disjoint_slices(faces, tmp_path):
    p = params(tmp_path)
    f = load_faces(faces, ("a", "b"), "train", 64)
    ds = SwapPairs(f, p.train.augment, seed=0)
    x, y = ds[17], SwapPairs(f, p.train.augment, seed=0)[17]
    assert all(torch.equal(x[k], y[k]) for k in x)
    assert not torch.equal(x["a_in"], x["a_target"])  # the warp touches the input only
    r0 = list(StepBatches(3, 5, 4, rank=0, world=2))
    r1 = list(StepBatches(3, 5, 4, rank=1, world=2))
    assert len(r0) == 2 and not {i for b in r0 for i in b} & {i for b in r1 for i in b}
    assert next(iter(StepBatches(3, 5, 4))) == list(range(12, 16))  # step 3 of one process: samples 12..15


def test_schedule_warms_up_and_decays(tmp_path):
    t = params(tmp_path, steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1).train
    assert lr_at(0, t) == pytest.approx(0.1) and lr_at(9, t) == pytest.approx(1.0)
    assert lr_at(99, t) == pytest.approx(0.1) and lr_at(50, t) < 1.0


@pytest.mark.parametrize(
    ("train", "needles"),
    [
        ({"loss": {"pixel": "huber"}}, ["train.loss.pixel", "huber", "l1, mse, ssim"]),
        ({"precision": "fp8"}, ["train.precision", "fp8", "bf16"]),
        ({"warmup_steps": 50, "steps": 10}, ["warmup_steps (50)", "steps (10)"]),
        ({"stpes": 3}, ["train.stpes", "unknown key"]),
        ({"batch_size": 0}, ["train.batch_size", "greater than or equal to 1"]),
    ],
)
def test_bad_train_values_are_named(train, needles):
    with pytest.raises(ConfigError) as err:
        parse_params({"train": train}, "params.yaml")
    for n in needles:
        assert n in str(err.value)


# --- the loop ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_loss_decreases_and_outputs_follow_the_interface(faces, tmp_path):
    p = params(tmp_path, steps=60, val_every=20, checkpoint_every=20, preview_every=30,
               loss={"lpips_net": "alex", "lpips_weight": 0.1, "lpips_every": 2, "lpips_images": 2})
    out = tmp_path / "m"
    r = train(p, "resize_nearest", out, data=faces, metrics_path=tmp_path / "metrics.json",
              curves_dir=tmp_path / "curves")
    assert r.step == 60 and r.interrupted is None
    assert r.history["loss"][-1] < 0.7 * r.history["loss"][0]
    assert r.history["val_loss"][-1] < r.history["val_loss"][0]
    model, state = load_model(out / "model.pt")
    assert {"model", "model_config", "step", "val_loss", "variant"} <= set(state)
    assert state["variant"] == "resize_nearest" and state["step"] == r.best_step
    assert state["val_loss"] == pytest.approx(min(r.history["val_loss"]))
    assert sorted(x.name for x in (out / "checkpoints").iterdir()) == ["best.pt", "step_0000040.pt", "step_0000060.pt"]
    full = load_checkpoint(out / "checkpoints" / "step_0000060.pt")  # weights_only: the whole state loads safely
    assert {"optimizer", "scaler", "schedule", "rng", "config", "fingerprint"} <= set(full)
    run = json.loads((out / "run.json").read_text())
    assert set(run) == {"variant", "mlflow_run_id", "mlflow_experiment_id", "tracking_uri", "data_version",
                        "git_commit", "steps", "best_val_loss", "best_step"}
    assert run["best_step"] == r.best_step and len(run["data_version"]) == 32
    assert sorted(x.name for x in (out / "previews").iterdir()) == ["step_0000030.png", "step_0000060.png"]
    from faceswap.imageio import read_rgb

    grid = read_rgb(out / "previews" / "step_0000060.png")
    assert grid.shape == (2 + 2 * 66, 2 + 6 * 66, 3)  # 2 rows × (A | A rec | A→B | B→A | B rec | B)
    assert json.loads((tmp_path / "metrics.json").read_text())["best_step"] == r.best_step
    assert (tmp_path / "curves" / "train.csv").read_text().startswith("step,loss\n5,")
    assert model.config.decoder == "resize_nearest"


@pytest.mark.slow
def test_sigterm_saves_and_resume_matches_an_uninterrupted_run(faces, tmp_path):
    steps = 150
    # same thread count in this process and the child, so that both sum in the same order
    ref = train(params(tmp_path, steps=steps, checkpoint_every=2, val_every=50), "pixelshuffle_icnr",
                tmp_path / "ref", data=faces)
    cfg = write_params(tmp_path, steps=steps, checkpoint_every=2, val_every=50)
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "faceswap.cli", "train", "--variant", "pixelshuffle_icnr", "--out", str(out),
         "--data", str(faces), "--params", str(cfg)],
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "step_0000004.pt").exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by signal" in err
    stopped = max(int(c.stem.split("_")[1]) for c in (out / "checkpoints").glob("step_*.pt"))
    assert 4 <= stopped < steps
    assert not (out / "model.pt").exists()  # an interrupted run is not a finished one

    r = train(parse_params(yaml.safe_load(cfg.read_text())), "pixelshuffle_icnr", out, data=faces)
    assert r.resumed_from == stopped and r.step == steps
    a = load_checkpoint(tmp_path / "ref" / "checkpoints" / f"step_{steps:07d}.pt")
    b = load_checkpoint(out / "checkpoints" / f"step_{steps:07d}.pt")
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=0, atol=1e-6)
    for s, st in a["optimizer"]["state"].items():
        torch.testing.assert_close(b["optimizer"]["state"][s]["exp_avg_sq"], st["exp_avg_sq"], rtol=0, atol=1e-9)
        assert float(b["optimizer"]["state"][s]["step"]) == float(st["step"])
    assert r.history["loss"] == pytest.approx(ref.history["loss"], abs=1e-6)


def test_corrupt_latest_checkpoint_falls_back_and_changed_config_starts_fresh(faces, tmp_path, capsys):
    out = tmp_path / "m"
    train(params(tmp_path, steps=10), "convtranspose", out, data=faces)
    latest = out / "checkpoints" / "step_0000010.pt"
    latest.write_bytes(latest.read_bytes()[:1000])
    with pytest.warns(RuntimeWarning, match="falling back"):
        r = train(params(tmp_path, steps=12), "convtranspose", out, data=faces)
    assert r.resumed_from is None  # steps changed the schedule: a new config
    latest = out / "checkpoints" / "step_0000012.pt"
    latest.write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match="falling back"):
        r = train(params(tmp_path, steps=12, checkpoint_every=5, preview_every=3), "convtranspose", out, data=faces)
    assert r.resumed_from == 10 and r.step == 12  # operational keys may change without losing the run
    capsys.readouterr()
    r = train(params(tmp_path, steps=12, lr=1e-3), "convtranspose", out, data=faces)
    assert r.resumed_from is None and "config changed" in capsys.readouterr().err


def _nan_loss_at(monkeypatch, steps: set[int]) -> None:
    """Make the training loss NaN at these steps (fault injection from outside: train() has no test hook)."""
    import faceswap.train as tr

    real_uses, real_loss = tr.uses_lpips, tr.reconstruction_loss
    now = {"step": -1}

    def uses(cfg, step):  # called once per training step, with its number
        now["step"] = step
        return real_uses(cfg, step)

    def loss(pred, target, cfg, with_lpips):
        value, parts = real_loss(pred, target, cfg, with_lpips)
        training = not with_lpips  # these params train without LPIPS; validation always asks for it
        return (value * float("nan"), parts) if training and now["step"] in steps else (value, parts)

    monkeypatch.setattr(tr, "uses_lpips", uses)
    monkeypatch.setattr(tr, "reconstruction_loss", loss)


def test_nonfinite_losses_are_skipped_then_stop_the_run(faces, tmp_path, capsys, monkeypatch):
    _nan_loss_at(monkeypatch, {3})
    r = train(params(tmp_path, steps=8, checkpoint_every=2), "resize_bilinear", tmp_path / "ok", data=faces)
    assert r.nonfinite_skipped == 1 and r.step == 8
    assert "non-finite loss at step 3" in capsys.readouterr().err
    out = tmp_path / "bad"
    monkeypatch.undo()
    _nan_loss_at(monkeypatch, {4, 5, 6})
    with pytest.raises(TrainingError, match=r"3 non-finite steps in a row \(steps 4..6, last: loss\).*step_0000006.pt"):
        train(params(tmp_path, steps=20, checkpoint_every=2, max_nonfinite=3), "resize_bilinear", out, data=faces)
    assert load_checkpoint(out / "checkpoints" / "step_0000006.pt")["step"] == 6  # weights of step 4, unharmed
    assert not (out / "model.pt").exists()


class _NanGrad(torch.autograd.Function):
    """Identity forward, NaN backward: a finite loss whose gradients are not."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


def test_nonfinite_gradients_with_a_finite_loss_skip_the_step(faces, tmp_path, capsys, monkeypatch):
    import faceswap.train as tr

    real = tr.reconstruction_loss
    calls = {"n": 0}

    def poisoned(pred, target, cfg, with_lpips):  # the first step's gradients are NaN, its loss is not
        calls["n"] += 1
        return real(_NanGrad.apply(pred) if calls["n"] <= 2 else pred, target, cfg, with_lpips)

    monkeypatch.setattr(tr, "reconstruction_loss", poisoned)
    out = tmp_path / "m"
    r = train(params(tmp_path, steps=4, checkpoint_every=2, grad_clip=None), "resize_nearest", out, data=faces)
    assert "non-finite gradients (finite loss) at step 0" in capsys.readouterr().err
    assert r.nonfinite_skipped == 1 and r.step == 4
    weights = load_checkpoint(out / "checkpoints" / "step_0000004.pt")["model"]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())  # NaN never applied


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_and_agree(faces, tmp_path):
    cfg = write_params(tmp_path, steps=6, checkpoint_every=3)
    out, metrics = tmp_path / "m", tmp_path / "metrics.json"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
         "faceswap.cli", "train", "--variant", "pixelshuffle", "--out", str(out), "--data", str(faces),
         "--params", str(cfg), "--metrics", str(metrics)],
        env=cli_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads(metrics.read_text())
    assert m["world_size"] == 2 and m["step"] == 6  # the replicas agreeing is checked inside (TrainingError)
    assert max(x.name for x in (out / "checkpoints").glob("step_*")) == "step_0000006.pt"
    load_model(out / "model.pt")


@pytest.mark.slow
def test_mlflow_run_holds_params_metrics_previews_and_model(faces, tmp_path):
    from mlflow import MlflowClient

    p = params(tmp_path, steps=10, mlflow=True, tracking={"experiment": "t"})
    r = train(p, "resize_nearest", tmp_path / "m", data=faces)
    run_info = json.loads((tmp_path / "m" / "run.json").read_text())
    assert run_info["mlflow_run_id"] == r.mlflow_run_id
    client = MlflowClient(p.mlflow.tracking_uri)
    run = client.get_run(r.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.info.experiment_id == run_info["mlflow_experiment_id"]
    assert run.data.params["train.lr"] == "0.002" and run.data.params["variant"] == "resize_nearest"
    assert run.data.tags["data_version"] == run_info["data_version"] and "faceswap.group" in run.data.tags
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [5, 10]
    assert "val_loss" in run.data.metrics
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.artifact_location == (tmp_path / "mlruns" / "t").as_uri()
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on the training runs
    assert run.info.run_name == "resize_nearest-seed0" and run.data.tags["seed"] == "0"
    paths = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"previews", "model", "run.json"} <= paths
    assert [a.path for a in client.list_artifacts(run.info.run_id, "previews")] == ["previews/step_0000010.png"]


@pytest.mark.parametrize("name", ["seed-256", "seed-512"])
def test_profiles_are_valid_dvc_overrides(name, monkeypatch):
    from typer.testing import CliRunner

    from faceswap.cli import app

    monkeypatch.chdir(REPO)
    res = CliRunner().invoke(app, ["profile", name])
    assert res.exit_code == 0, res.output
    args = res.output.split()
    assert args[0] == "-S" and "base.image_size=" + name.split("-")[1] in args
    assert CliRunner().invoke(app, ["profile", "nope"]).exit_code == 2
