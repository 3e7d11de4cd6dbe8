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
