"""A tiny real registered model for the serving and video tests: crops of the public-domain stills, a briefly
trained autoencoder (``_eval_fixtures``), registered through :func:`faceswap.registry.log_and_register` (the same
pyfunc, signature and pinned requirements as ``faceswap register``) and given the ``champion`` alias."""

from __future__ import annotations

from pathlib import Path

MODEL_NAME = "faceswap-test"


def register_tiny(root: Path, steps: int = 60, variant: str = "resize_nearest") -> dict:
    """Train, register and alias a tiny model under ``root``; returns its tracking URI, name and checkpoint."""
    import mlflow

    from faceswap.config import RegisterParams
    from faceswap.evaluation.record import EvaluationRecord
    from faceswap.files import file_sha256
    from faceswap.registry import CHAMPION, Candidate, log_and_register

    from ._eval_fixtures import make_face_set, train_tiny

    make_face_set(root, train=24, val=4)
    ckpt = train_tiny(root, variant, steps=steps)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    client.create_experiment("faceswap", artifact_location=(root / "mlruns").as_uri())
    record = EvaluationRecord(
        variant=variant, seeds=[0], representative_seed=0, checkpoint=str(ckpt), checkpoint_sha256=file_sha256(ckpt),
        step=steps, val_loss=None, data_version="test-data", git_commit="0" * 40, eval_fingerprint="test",
        eval_data="test", manifest=str(root / "faces.parquet"), faces_dir=str(root / "faces"), identities=["a", "b"],
        face_ids={}, device="cpu", metrics={"recon_lpips": 0.2}, estimates={}, per_seed={}, landmarks={}, per_image={})
    rule = RegisterParams(model_name=MODEL_NAME)
    mv = log_and_register(Candidate.of(record), rule, uri, "test model")
    client.set_registered_model_alias(MODEL_NAME, CHAMPION, mv.version)
    return {"uri": uri, "name": MODEL_NAME, "model": f"models:/{MODEL_NAME}@{CHAMPION}", "checkpoint": ckpt,
            "root": root}


def write_params(path: Path, reg: dict, **serve) -> Path:
    """A params file pointing ``serve`` at the registered test model (plus ``serve`` overrides)."""
    import yaml

    path.write_text(yaml.safe_dump({"mlflow": {"tracking_uri": reg["uri"]}, "serve": {"model": reg["model"], **serve}}))
    return path
