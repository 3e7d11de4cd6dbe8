"""Checkpoints: atomic, self-describing, and refused when damaged."""

from __future__ import annotations

import pytest
import torch

from faceswap.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from faceswap.model import FaceSwapAutoencoder, ModelConfig


def test_round_trip_rebuilds_the_same_function(tmp_path):
    cfg = ModelConfig(width=4, bottleneck_channels=16, decoder="pixelshuffle_icnr")
    model = FaceSwapAutoencoder(cfg).eval()
    path = save_checkpoint(tmp_path / "ckpt.pt", {"model": model.state_dict(), "model_config": cfg.to_dict(),
                                                   "step": 7})
    loaded, state = load_model(path)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x, "b"), model(x, "b"))
    assert state["step"] == 7 and loaded.config == cfg
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_truncated_foreign_and_missing_files_are_refused(tmp_path):
    cfg = ModelConfig(width=4, bottleneck_channels=16)
    good = save_checkpoint(tmp_path / "good.pt", {"model": FaceSwapAutoencoder(cfg).state_dict(),
                                                  "model_config": cfg.to_dict()})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(truncated)
    foreign = save_checkpoint(tmp_path / "foreign.pt", {"weights": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="not a faceswap checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", {"model": {}, "model_config": {}, "step": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(path, {"model": {}, "model_config": {}, "bad": Unpicklable()})
    assert load_checkpoint(path)["step"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


# --- the versioned layout -----------------------------------------------------------------------------------


def _training_state(cfg: ModelConfig, **changes):
    from faceswap.checkpoint import TrainingState

    model = FaceSwapAutoencoder(cfg)
    return TrainingState(**{
        "model": model.state_dict(), "model_config": cfg.to_dict(), "optimizer": {"state": {}, "param_groups": []},
        "schedule": {"kind": "cosine", "step": 3, "lr": 1e-3}, "step": 3, "variant": cfg.decoder,
        "best_val_loss": 0.5, "best_step": 2, "nonfinite_total": 1, "rng": {"torch": torch.get_rng_state()},
        "config": {"variant": cfg.decoder}, "fingerprint": "abc", "history": {"step": [1, 2], "loss": [0.9, 0.8]},
        "precision": "fp32", "channels_last": True, "mlflow_run_id": None, "loss_window": (1.5, 2), **changes})


def test_a_current_training_state_round_trips(tmp_path):
    from faceswap.checkpoint import SCHEMA_VERSION, TrainingState, load_training_state

    cfg = ModelConfig(width=4, bottleneck_channels=16)
    st = _training_state(cfg)
    path = save_checkpoint(tmp_path / "step.pt", st)
    raw = load_checkpoint(path)  # weights_only=True
    assert raw["schema_version"] == SCHEMA_VERSION and raw["loss_window"] == [1.5, 2]
    back = load_training_state(path)
    assert isinstance(back, TrainingState) and back.schema_version == SCHEMA_VERSION
    assert (back.step, back.best_val_loss, back.fingerprint, back.loss_window) == (3, 0.5, "abc", (1.5, 2))
    assert all(torch.equal(back.model[k], v) for k, v in st.model.items())
    assert torch.equal(back.rng["torch"], st.rng["torch"]) and back.history == st.history
    loaded, state = load_model(path)  # a training state rebuilds the network too
    assert loaded.config == cfg and state["step"] == 3


def test_an_unknown_schema_version_is_a_clear_error(tmp_path):
    from faceswap.checkpoint import SCHEMA_VERSION, CheckpointVersionError, ModelFile, load_training_state

    cfg = ModelConfig(width=4, bottleneck_channels=16)
    newer = save_checkpoint(tmp_path / "newer.pt", {**_training_state(cfg).to_dict(),
                                                    "schema_version": SCHEMA_VERSION + 1})
    with pytest.raises(CheckpointVersionError, match=rf"schema_version {SCHEMA_VERSION + 1}.*upgrade faceswap"):
        load_training_state(newer)
    weights = ModelFile(model=FaceSwapAutoencoder(cfg).state_dict(), model_config=cfg.to_dict(), step=1)
    odd = save_checkpoint(tmp_path / "model.pt", {**weights.to_dict(), "schema_version": 0})
    with pytest.raises(CheckpointVersionError, match=r"schema_version 0.*retrain it") as err:
        load_model(odd)  # what evaluation and serving call
    assert isinstance(err.value, CheckpointError)  # the CLI's one-line error, like a damaged file


def test_files_written_before_the_version_read_as_version_1(tmp_path):
    """model.pt files users already have (no schema_version) keep loading; old training states resume."""
    from faceswap.checkpoint import load_training_state

    cfg = ModelConfig(width=4, bottleneck_channels=16)
    old_model = save_checkpoint(tmp_path / "model.pt", {
        "model": FaceSwapAutoencoder(cfg).state_dict(), "model_config": cfg.to_dict(), "step": 5, "val_loss": 0.1,
        "variant": cfg.decoder, "config": {}, "detector": None})
    model, state = load_model(old_model)
    assert model.config == cfg and "schema_version" not in state and state["step"] == 5
    old = _training_state(cfg).to_dict()
    for k in ("schema_version", "precision", "channels_last", "loss_window", "mlflow_run_id", "scaler"):
        old.pop(k)  # the first training checkpoints had none of these
    st = load_training_state(save_checkpoint(tmp_path / "step.pt", old))
    assert (st.precision, st.loss_window, st.scaler, st.step) == (None, (0.0, 0), {}, 3)
    model_only = save_checkpoint(tmp_path / "weights.pt", {"model": {}, "model_config": {}})
    with pytest.raises(CheckpointError, match=r"not a training checkpoint.*optimizer"):
        load_training_state(model_only)
