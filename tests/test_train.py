"""Training on real (tiny) face sets: learning, resume after a kill, corrupt checkpoints, NaN guard, DDP, MLflow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from faceswap.checkpoint import checkpoint_dir, load_checkpoint, load_model
from faceswap.config import ConfigError, parse_params
from faceswap.data.dataset import StepBatches, SwapPairs, load_faces
from faceswap.train import GRID_KEYS, TrainingError, lr_at
from faceswap.train import train as train_lib
from tests._faces import make_face_set
from tests.conftest import REPO, repo_paths


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return make_face_set(tmp_path_factory.mktemp("faces"))


def raw_params(tmp_path, **train):
    t = {"steps": 20, "batch_size": 4, "lr": 2e-3, "warmup_steps": 2, "val_every": 5, "val_images": 4,
         "checkpoint_every": 5, "keep_checkpoints": 2, "preview_every": 10, "preview_rows": 2, "log_every": 5,
         "workers": 0, "loss": {"lpips_net": "none"},
         "mlflow": False}
    # every file a stage writes lands in tmp_path (the manifest and crops: the tests pass their face set)
    paths = repo_paths(tmp_path)
    tracking = {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "artifact_root": str(tmp_path / "mlruns")}
    for k, v in train.items():
        if k in ("tracking", "paths"):
            (tracking if k == "tracking" else paths).update(v)
            continue
        t[k] = {**t[k], **v} if isinstance(v, dict) and isinstance(t.get(k), dict) else v
    return {"base": {"seed": 0, "image_size": 64}, "model": {"width": 4, "bottleneck_channels": 16}, "train": t,
            "mlflow": tracking, "paths": paths}


def params(tmp_path, **train):
    return parse_params(raw_params(tmp_path, **train))


def write_params(tmp_path, **train):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw_params(tmp_path, **train)))
    return path


def cli_env(**extra):
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]), **extra}


def train(p, variant, out, faces, **kw):
    """The library on the test face set (crop paths relative to the manifest's folder: ``faces_dir=None``)."""
    return train_lib(p, variant, out, manifest=faces, faces_dir=None, **kw)


def with_faces(faces):
    """``paths`` of a params file for the stage and the CLI: the test face set as the accepted manifest."""
    return {"accepted": str(faces), "faces": str(faces.parent)}


# --- pieces -----------------------------------------------------------------------------------------------


def test_stream_is_deterministic_and_ranks_take_disjoint_slices(faces, tmp_path):
    p = params(tmp_path, augment={"warp": 0.025})  # off by default; on here to see it touch the input only
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
    """The stage: the library's run folder under paths.run_dir, the stage's metrics file and curves."""
    from faceswap.stages import train as stage

    # the colour transfer between identities off: on two stills as far apart in colour as the astronaut and Grace
    # Hopper, half the training faces in the other's colours keep the held-out loss from falling within 60 steps;
    # the random warp on: two stills (one expression each) are learnt by heart within 20 steps without it, and the
    # held-out loss rises after (0.253 at step 20, 0.263 at 60)
    p = params(tmp_path, steps=60, val_every=20, checkpoint_every=20, preview_every=30, paths=with_faces(faces),
               loss={"lpips_net": "alex", "lpips_weight": 0.1, "lpips_every": 2, "lpips_images": 2},
               augment={"colour_transfer": "none", "warp": 0.025})
    r = stage.run(p, "resize_nearest", 0)
    out = tmp_path / "models" / "resize_nearest" / "seed0"
    assert r.step == 60 and r.interrupted is None and r.run_dir == str(out)
    curves = tmp_path / "metrics" / "train" / "curves" / "resize_nearest" / "seed0"
    assert r.metrics == str(tmp_path / "metrics" / "train" / "resize_nearest" / "seed0.json")
    assert r.curves == str(curves)
    train_rows = [line.split(",") for line in (curves / "train.csv").read_text().splitlines()]
    val_rows = [line.split(",") for line in (curves / "val.csv").read_text().splitlines()]
    assert train_rows[0] == ["step", "loss"] and train_rows[1][0] == "5" and len(train_rows) == 1 + 12
    assert val_rows[0] == ["step", "val_loss", "train_clean_loss"]
    assert [v[0] for v in val_rows[1:]] == ["20", "40", "60"]
    loss, val = [float(v[1]) for v in train_rows[1:]], [float(v[1]) for v in val_rows[1:]]
    assert loss[-1] < 0.7 * loss[0] and val[-1] < val[0]
    assert r.final_train_loss == pytest.approx(loss[-1], abs=1e-6)
    model, state = load_model(out / "model.pt")
    assert {"model", "model_config", "step", "val_loss", "variant", "schema_version"} <= set(state)
    assert state["variant"] == "resize_nearest" and state["step"] == r.best_step
    assert state["val_loss"] == pytest.approx(min(val), abs=1e-6) and r.best_val_loss == state["val_loss"]
    assert sorted(x.name for x in checkpoint_dir(out).iterdir()) == ["best.pt", "step_0000040.pt", "step_0000060.pt"]
    full = load_checkpoint(checkpoint_dir(out) / "step_0000060.pt")  # weights_only: the whole state loads safely
    assert {"optimizer", "scaler", "schedule", "rng", "config", "fingerprint", "schema_version"} <= set(full)
    run = json.loads((out / "run.json").read_text())
    assert set(run) == {"variant", "mlflow_run_id", "mlflow_experiment_id", "tracking_uri", "data_version",
                        "git_commit", "steps", "best_val_loss", "best_step"}
    assert run["best_step"] == r.best_step and len(run["data_version"]) == 32
    assert sorted(x.name for x in (out / "previews").iterdir()) == ["step_0000030.png", "step_0000060.png"]
    from faceswap.imageio import read_rgb

    grid = read_rgb(out / "previews" / "step_0000060.png")
    assert grid.shape == (2 + 2 * 66, 2 + 6 * 66, 3)  # 2 rows × (A | A rec | A→B | B→A | B rec | B)
    metrics = json.loads(Path(r.metrics).read_text())
    assert list(metrics) == list(stage.TrainRecord.METRICS) and metrics == r.to_json()
    assert metrics["best_step"] == r.best_step and metrics["world_size"] == 1 and metrics["variant"] == "resize_nearest"
    assert "trained resize_nearest: 60 steps" in stage.format_record(r)
    assert model.config.decoder == "resize_nearest"


@pytest.mark.slow
def test_face_weighted_training_runs_and_weighs_its_validation_the_same_way(faces, tmp_path):
    """background_weight < 1: the run trains (finite, falling loss) and its validation loss is the weighted one
    (recomputed here from the saved best checkpoint, weighted and not)."""
    from faceswap.compute import plan_compute
    from faceswap.data.dataset import stack_faces
    from faceswap.stages import train as stage
    from faceswap.train import pixel_weight, validation_loss

    p = params(tmp_path, steps=30, val_every=30, checkpoint_every=30, preview_every=30, paths=with_faces(faces),
               loss={"lpips_net": "none", "background_weight": 0.2})
    r = stage.run(p, "resize_nearest", 0)
    assert r.step == 30 and r.final_train_loss == r.final_train_loss  # finite
    w = pixel_weight(p)
    assert w is not None and float(w.min()) == pytest.approx(0.2, abs=1e-3)
    model, state = load_model(checkpoint_dir(r.run_dir) / "best.pt", torch.device("cpu"))
    val = {i: stack_faces(fs, p.train.val_images) for i, fs in load_faces(faces, ("a", "b"), "val", 64).items()}
    # recomputed in the run's own arithmetic (bf16 where the plan chose it), so the tolerance is the rounding of
    # a summation order, whatever plan this machine picks
    run_plan = plan_compute("cpu", state["precision"], state["channels_last"])
    plain = validation_loss(model, val, p.train, torch.device("cpu"), run_plan.autocast, run_plan.channels_last)
    weighted = validation_loss(model, val, p.train, torch.device("cpu"), run_plan.autocast, run_plan.channels_last, w)
    assert weighted != pytest.approx(plain, rel=1e-2)
    assert r.best_val_loss == pytest.approx(weighted, rel=1e-4 if state["precision"] == "fp32" else 1e-3)


def test_sigterm_saves_and_resume_matches_an_uninterrupted_run(faces, tmp_path):
    steps = 150
    # same thread count in this process and the child, so that both sum in the same order
    ref = train(params(tmp_path, steps=steps, checkpoint_every=2, val_every=50), "pixelshuffle_icnr",
                tmp_path / "ref", faces)
    cfg = write_params(tmp_path, steps=steps, checkpoint_every=2, val_every=50)
    out = tmp_path / "models" / "pixelshuffle_icnr" / "seed0"
    proc = subprocess.Popen(
        [sys.executable, "-m", "faceswap.cli", "train", "--variant", "pixelshuffle_icnr",  # into paths.run_dir: out
         "--data", str(faces), "--faces-dir", str(faces.parent), "--params", str(cfg)],
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (checkpoint_dir(out) / "step_0000004.pt").exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by signal" in err and "interrupted at step" in err and "rerun the same command" in err
    stopped = max(int(c.stem.split("_")[1]) for c in checkpoint_dir(out).glob("step_*.pt"))
    assert 4 <= stopped < steps
    assert not (out / "model.pt").exists()  # an interrupted run is not a finished one
    assert not (tmp_path / "metrics").exists()  # nor are its records written

    r = train(parse_params(yaml.safe_load(cfg.read_text())), "pixelshuffle_icnr", out, faces)
    assert r.outcome.resumed_from == stopped and r.outcome.step == steps
    a = load_checkpoint(checkpoint_dir(tmp_path / "ref") / f"step_{steps:07d}.pt")
    b = load_checkpoint(checkpoint_dir(out) / f"step_{steps:07d}.pt")
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=0, atol=1e-6)
    for s, st in a["optimizer"]["state"].items():
        torch.testing.assert_close(b["optimizer"]["state"][s]["exp_avg_sq"], st["exp_avg_sq"], rtol=0, atol=1e-9)
        assert float(b["optimizer"]["state"][s]["step"]) == float(st["step"])
    assert r.curves.loss == pytest.approx(ref.curves.loss, abs=1e-6)


def test_grid_curves_and_metrics_are_written_and_leave_the_training_unchanged(faces, tmp_path, monkeypatch):
    """Every validation scores the decoder grid (recons, swaps, the flat-field probe) into grid.csv and MLflow's
    val/* metrics; the same run with the grid switched off takes exactly the same steps (the grid code draws no
    random numbers and changes no state)."""
    from mlflow import MlflowClient

    import faceswap.train.run as tr
    from faceswap.stages import train as stage

    p = params(tmp_path, steps=10, val_every=5, checkpoint_every=10, preview_every=10, mlflow=True,
               paths=with_faces(faces), tracking={"experiment": "grid"})
    r = stage.run(p, "convtranspose", 0)
    rows = [line.split(",") for line in (Path(r.curves) / "grid.csv").read_text().splitlines()]
    assert rows[0] == ["step", "grid_recon", "grid_swap", "flat_grid"] and [v[0] for v in rows[1:]] == ["5", "10"]
    values = [float(v) for row in rows[1:] for v in row[1:]]
    assert all(np.isfinite(v) and 0.0 <= v <= 1.0 for v in values)
    history = MlflowClient(p.mlflow.tracking_uri).get_metric_history
    for k in ("grid_recon", "grid_swap", "flat_grid"):
        logged = history(r.mlflow_run_id, f"val/{k}")
        assert [m.step for m in logged] == [5, 10]
        assert [m.value for m in logged] == pytest.approx([float(row[rows[0].index(k)]) for row in rows[1:]], abs=1e-6)
    out = Path(r.run_dir)

    def no_grid(*args, **kwargs):
        return dict.fromkeys(GRID_KEYS, float("nan"))

    monkeypatch.setattr(tr, "validation_grid", no_grid)
    ref = train(params(tmp_path, steps=10, val_every=5, checkpoint_every=10, preview_every=10), "convtranspose",
                tmp_path / "nogrid", faces)
    assert ref.outcome.step == 10 and all(np.isnan(ref.curves.grid_swap))
    a = load_checkpoint(checkpoint_dir(out) / "step_0000010.pt")
    b = load_checkpoint(checkpoint_dir(tmp_path / "nogrid") / "step_0000010.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])  # bit for bit
    assert a["history"]["loss"] == b["history"]["loss"] and a["history"]["val_loss"] == b["history"]["val_loss"]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert len(a["history"]["flat_grid"]) == 2 and all(np.isnan(b["history"]["flat_grid"]))


def test_grid_reference_is_decoder_grid_score_and_old_histories_pad_with_nan(faces):
    from faceswap.metrics.checkerboard import GridReference, decoder_grid_score, plant_lattice
    from faceswap.train import Curves
    from faceswap.train.validation import hwc as _hwc

    val = load_faces(faces, ("a", "b"), "val", 64)
    truth = {i: _hwc(torch.from_numpy(f.images).permute(0, 3, 1, 2).float() / 255) for i, f in val.items()}
    gridded = [plant_lattice(x, 0.06, 4) for x in truth["b"]]
    for outputs in (truth["b"], gridded, truth["a"]):
        ref = GridReference(truth["b"], (2, 4, 8))
        assert ref.excess(outputs) == decoder_grid_score(outputs, truth["b"], (2, 4, 8))["excess"]
    assert GridReference(truth["b"], (2, 4, 8)).excess(gridded) > 0.03
    old = {"step": [5], "loss": [0.5], "val_step": [5, 10], "val_loss": [0.4, 0.3], "train_clean_loss": [0.3],
           "grid_swap": [0.01]}  # a checkpoint from before the grid, resumed for one more validation
    c = Curves.from_history(old)
    assert np.isnan(c.train_clean_loss[0]) and c.grid_swap[1] == 0.01 and np.isnan(c.grid_swap[0])
    assert len(c.grid_recon) == 2 and all(np.isnan(c.flat_grid))


def test_corrupt_latest_checkpoint_falls_back_and_changed_config_starts_fresh(faces, tmp_path, capsys):
    out = tmp_path / "m"
    train(params(tmp_path, steps=10), "convtranspose", out, faces)
    latest = checkpoint_dir(out) / "step_0000010.pt"
    latest.write_bytes(latest.read_bytes()[:1000])
    with pytest.warns(RuntimeWarning, match="falling back"):
        r = train(params(tmp_path, steps=12), "convtranspose", out, faces)
    assert r.outcome.resumed_from is None  # steps changed the schedule: a new config
    latest = checkpoint_dir(out) / "step_0000012.pt"
    latest.write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match="falling back"):
        r = train(params(tmp_path, steps=12, checkpoint_every=5, preview_every=3), "convtranspose", out, faces)
    assert r.outcome.resumed_from == 10 and r.outcome.step == 12  # operational keys may change, the run goes on
    capsys.readouterr()
    r = train(params(tmp_path, steps=12, lr=1e-3), "convtranspose", out, faces)
    assert r.outcome.resumed_from is None and "config changed" in capsys.readouterr().err


def test_resume_reasons(faces, tmp_path):
    """find_resume says why with an enum: none, resumed, config changed (the old run's files go), unreadable."""
    from faceswap.train import ResumeReason, find_resume, fingerprint, run_config

    out = tmp_path / "m"
    ckpts = checkpoint_dir(out)
    assert find_resume(ckpts, "x").reason is ResumeReason.NONE_FOUND
    p = params(tmp_path, steps=4, checkpoint_every=2, val_every=2, preview_every=2)
    train(p, "resize_nearest", out, faces)
    fp = load_checkpoint(ckpts / "step_0000004.pt")["fingerprint"]
    found = find_resume(ckpts, fp)
    assert found.reason is ResumeReason.RESUMED and found.state.step == 4 and found.path == ckpts / "step_0000004.pt"
    changed = params(tmp_path, steps=4, checkpoint_every=2, val_every=2, preview_every=2, lr=1e-3)
    new_fp = fingerprint(run_config(changed, "resize_nearest", found.state.config["data_version"], 0))
    assert new_fp != fp
    found = find_resume(ckpts, new_fp)
    assert found.reason is ResumeReason.CONFIG_CHANGED and found.state is None and "config changed" in found.message
    r = train(changed, "resize_nearest", out, faces)  # a fresh start: the old run's files were deleted first
    assert r.outcome.resumed_from is None and r.outcome.step == 4
    assert load_checkpoint(ckpts / "step_0000004.pt")["fingerprint"] == new_fp
    for c in ckpts.glob("step_*.pt"):
        c.write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match="falling back"):
        assert find_resume(ckpts, new_fp).reason is ResumeReason.UNREADABLE


def test_a_checkpoint_of_an_unknown_schema_stops_the_resume_with_what_to_do(faces, tmp_path):
    from faceswap.checkpoint import SCHEMA_VERSION, CheckpointVersionError, save_checkpoint

    out = tmp_path / "m"
    p = params(tmp_path, steps=4, checkpoint_every=4, val_every=4, preview_every=4)
    train(p, "resize_nearest", out, faces)
    path = checkpoint_dir(out) / "step_0000004.pt"
    state = load_checkpoint(path)
    save_checkpoint(path, {**state, "schema_version": SCHEMA_VERSION + 1})
    with pytest.raises(CheckpointVersionError, match=r"newer faceswap: upgrade faceswap.*delete .*checkpoints"):
        train(p, "resize_nearest", out, faces)
    assert path.is_file()  # not overwritten by a fresh start


def _nan_loss_at(monkeypatch, steps: set[int]) -> None:
    """Make the training loss NaN at these steps (fault injection from outside: train() has no test hook)."""
    import faceswap.train.step as tr

    real_uses, real_loss = tr.uses_lpips, tr.reconstruction_loss
    now = {"step": -1}

    def uses(cfg, step):  # called once per training step, with its number
        now["step"] = step
        return real_uses(cfg, step)

    def loss(pred, target, cfg, with_lpips, **kw):
        value, parts = real_loss(pred, target, cfg, with_lpips, **kw)
        training = not with_lpips  # these params train without LPIPS; validation always asks for it
        return (value * float("nan"), parts) if training and now["step"] in steps else (value, parts)

    monkeypatch.setattr(tr, "uses_lpips", uses)
    monkeypatch.setattr(tr, "reconstruction_loss", loss)


def test_nonfinite_losses_are_skipped_then_stop_the_run(faces, tmp_path, capsys, monkeypatch):
    _nan_loss_at(monkeypatch, {3})
    r = train(params(tmp_path, steps=8, checkpoint_every=2), "resize_bilinear", tmp_path / "ok", faces)
    assert r.outcome.nonfinite_skipped == 1 and r.outcome.step == 8
    assert "non-finite loss at step 3" in capsys.readouterr().err
    out = tmp_path / "bad"
    monkeypatch.undo()
    _nan_loss_at(monkeypatch, {4, 5, 6})
    with pytest.raises(TrainingError, match=r"3 non-finite steps in a row \(steps 4..6, last: loss\).*step_0000006.pt"):
        train(params(tmp_path, steps=20, checkpoint_every=2, max_nonfinite=3), "resize_bilinear", out, faces)
    assert load_checkpoint(checkpoint_dir(out) / "step_0000006.pt")["step"] == 6  # weights of step 4, unharmed
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
    import faceswap.train.step as tr

    real = tr.reconstruction_loss
    calls = {"n": 0}

    def poisoned(pred, target, cfg, with_lpips, **kw):  # the first step's gradients are NaN, its loss is not
        calls["n"] += 1
        return real(_NanGrad.apply(pred) if calls["n"] <= 2 else pred, target, cfg, with_lpips, **kw)

    monkeypatch.setattr(tr, "reconstruction_loss", poisoned)
    out = tmp_path / "m"
    r = train(params(tmp_path, steps=4, checkpoint_every=2, grad_clip=None), "resize_nearest", out, faces)
    assert "non-finite gradients (finite loss) at step 0" in capsys.readouterr().err
    assert r.outcome.nonfinite_skipped == 1 and r.outcome.step == 4
    weights = load_checkpoint(checkpoint_dir(out) / "step_0000004.pt")["model"]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())  # NaN never applied


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_and_agree(faces, tmp_path):
    """Two gloo ranks of batch 2 train what one process of batch 4 trains (the same samples each step, the
    gradients averaged), every collective on the backend's device (tests/_checked_dist.py)."""
    over = {"steps": 6, "checkpoint_every": 3, "batch_size": 2, "precision": "fp32", "loss": {"lpips_images": 2},
            "paths": with_faces(faces)}
    cfg = write_params(tmp_path, **over)
    counts = tmp_path / "collectives"
    counts.mkdir()
    proc = subprocess.run(  # dvc.yaml's command: every path from the params file
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(REPO / "tests" / "_checked_dist.py"), "train", "--variant", "pixelshuffle", "--seed", "0",
         "--params", str(cfg)],
        env=cli_env(OMP_NUM_THREADS="1", FACESWAP_COLLECTIVES_DIR=str(counts)), capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((tmp_path / "metrics" / "train" / "pixelshuffle" / "seed0.json").read_text())
    assert m["world_size"] == 2 and m["step"] == 6  # the replicas agreeing is checked inside (TrainingError)
    assert (tmp_path / "metrics" / "train" / "curves" / "pixelshuffle" / "seed0" / "val.csv").is_file()
    out = tmp_path / "models" / "pixelshuffle" / "seed0"
    assert max(x.name for x in checkpoint_dir(out).glob("step_*")) == "step_0000006.pt"
    load_model(out / "model.pt")
    # one flag reduce per step and the replica check at the end, on both ranks
    assert [int((counts / f"rank{r}.txt").read_text()) >= 6 + 2 for r in (0, 1)] == [True, True]

    # the decoders' batch norms see each rank's half of the batch (no cross-rank statistics: those would cost a
    # host sync per layer on a GPU), so the runs agree closely rather than to rounding: measured 0.4 % of the
    # weights' norm apart, where another seed lands 100 % apart
    single = train(params(tmp_path, **{**over, "batch_size": 4}), "pixelshuffle", tmp_path / "single", faces)
    assert single.outcome.step == 6
    a = load_checkpoint(checkpoint_dir(out) / "step_0000006.pt")["model"]
    b = load_checkpoint(checkpoint_dir(tmp_path / "single") / "step_0000006.pt")["model"]
    floats = [k for k in a if a[k].is_floating_point()]
    apart = sum(float((a[k] - b[k]).norm() ** 2) for k in floats) ** 0.5
    assert apart < 0.02 * sum(float(b[k].norm() ** 2) for k in floats) ** 0.5
    assert m["best_val_loss"] == pytest.approx(single.best.val_loss, rel=1e-3)


def test_cli_has_no_run_location_options(faces, tmp_path):
    """A run's files go where params.paths puts them (dvc.yaml's outs, metrics and plots): the command line takes
    no other location for them."""
    from typer.testing import CliRunner

    from faceswap.cli import app

    cfg = write_params(tmp_path, paths=with_faces(faces))
    for option in ("--out", "--metrics", "--curves"):
        r = CliRunner().invoke(app, ["train", "--variant", "convtranspose", option, str(tmp_path / "run"),
                                     "--params", str(cfg)])
        assert r.exit_code == 2 and "No such option" in r.output + r.stderr, r.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "models").exists()


@pytest.mark.slow
def test_mlflow_run_holds_params_metrics_previews_and_model(faces, tmp_path):
    from mlflow import MlflowClient

    p = params(tmp_path, steps=10, mlflow=True, tracking={"experiment": "t"})
    r = train(p, "resize_nearest", tmp_path / "m", faces)
    assert r.main and r.seed == 0
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
    (inp,) = run.inputs.dataset_inputs  # the UI's Dataset column: the manifest it trained on, by its DVC md5
    assert inp.dataset.digest == run_info["data_version"]
    assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "training"


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
