"""The served model is logged the MLflow way, as code (*models from code*): the model folder holds the Python file
that builds it, never a pickle; logging and registering it warns about neither CloudPickle nor type hints; loading
it works with pickle deserialization switched off; the explicit signature is the one requests are checked against."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from .conftest import REPO

NAME = "faceswap-logging-test"


class _Records(logging.Handler):
    """Keeps what MLflow logs (its loggers do not propagate to the root, so caplog never sees them)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _complaints(messages: list[str]) -> list[str]:
    return [m for m in messages if "cloudpickle" in m.lower() or "type hint" in m.lower()]


CLASS_PROBE = """
import warnings
import mlflow.pyfunc  # MLflow's own import warns about its own hints; only what follows counts
warnings.simplefilter("error", UserWarning)
import faceswap.serving.pyfunc
"""


def test_creating_the_model_class_raises_no_type_hint_warning():
    """MLflow checks ``predict``'s hints when the class is created (an untyped one warns): in a fresh interpreter,
    so the class really is created here, any UserWarning of the import fails."""
    import os

    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", CLASS_PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert not _complaints([out.stderr]), out.stderr[-3000:]


@pytest.mark.slow
def test_logged_and_registered_as_code_without_warnings_and_loaded_without_pickle(tmp_path, monkeypatch):
    import mlflow
    import pandas as pd
    import yaml
    from mlflow.exceptions import MlflowException
    from PIL import Image

    from faceswap.serving.pyfunc import input_example, log_pyfunc, signature
    from faceswap.tracking import connect

    from ._eval_fixtures import make_face_set, train_tiny

    make_face_set(tmp_path, train=4, val=2, test=2)
    ckpt = train_tiny(tmp_path, "resize_nearest")
    faces = [np.asarray(Image.open(tmp_path / "faces" / i / "0000.png").convert("RGB")) for i in ("a", "b")]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = connect(uri)
    exp = client.create_experiment("faceswap", artifact_location=(tmp_path / "mlruns").as_uri())

    records = _Records()
    logging.getLogger("mlflow").addHandler(records)
    try:
        with warnings.catch_warnings(record=True) as caught, mlflow.start_run(experiment_id=exp):
            warnings.simplefilter("always")
            info = log_pyfunc(ckpt, "faceswap_model", input_example(*faces), tags={"variant": "resize_nearest"})
            mv = mlflow.register_model(info.model_uri, NAME)
    finally:
        logging.getLogger("mlflow").removeHandler(records)
    user = [f"{w.category.__name__}: {w.message}" for w in caught if issubclass(w.category, UserWarning)]
    assert not user, user
    assert not _complaints([str(w.message) for w in caught] + records.messages), records.messages

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{NAME}/{mv.version}",
                                                     dst_path=str(tmp_path / "dl")))
    assert (local / "model_code.py").is_file() and not list(local.rglob("*.pkl"))
    assert (local / "code" / "faceswap" / "serving" / "pyfunc.py").is_file()  # the package travels with it
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model" and "python_model" not in flavor

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # a pickled model would refuse to load
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/{mv.version}")
    assert model.metadata.signature == signature()  # the explicit signature, not one inferred from hints
    out = model.predict(input_example(*faces))
    assert list(out["identity"]) == ["b", "a"] and out["error"].isna().all()
    with pytest.raises(MlflowException, match="aligned"):  # the schema still refuses a missing column
        model.predict(pd.DataFrame({"image": [out.loc[0, "image"]], "direction": ["a2b"]}))
