"""The logged model lists what serving needs: a fresh interpreter loads the packaged pyfunc and swaps a full frame
(detector included); every third-party distribution it imported must be installed by the model's pip requirements
(the requirements and what they pull in): the third-party imports of faceswap's own code are recorded, the rest
follows from the packages' metadata. So `--env-manager virtualenv` rebuilds a working environment."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution

import pytest

from .conftest import REPO

PROBE = r"""
import builtins, json, sys
import pandas as pd, skimage.data
frame = skimage.data.astronaut()
direct, _import = set(), builtins.__import__
def record(name, globals=None, locals=None, fromlist=(), level=0):  # what faceswap's own code imports
    if level == 0 and globals and str(globals.get("__name__", "")).startswith("faceswap"):
        direct.add(name.split(".")[0])
    return _import(name, globals, locals, fromlist, level)
builtins.__import__ = record
import mlflow
from faceswap.serving.pyfunc import encode_png
model = mlflow.pyfunc.load_model(sys.argv[1])
res = model.predict(pd.DataFrame({"image": [encode_png(frame)], "direction": ["a2b"], "aligned": [False]}))
assert res.loc[0, "error"] is None and res.loc[0, "face_found"], res.to_dict("records")
from importlib.metadata import packages_distributions
dists = packages_distributions()
print(json.dumps(sorted({d for m in direct for d in dists.get(m, [])})))
"""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(reqs: list[str]) -> set[str]:
    """The distributions a ``pip install`` of ``reqs`` brings (installed metadata, extras and markers ignored)."""
    seen: set[str] = set()
    todo = [r.split("==")[0] for r in reqs]
    while todo:
        name = _norm(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            continue
        for r in requires:
            if "extra ==" in r:
                continue
            todo.append(re.split(r"[ ;<>=!~\[(]", r.strip(), maxsplit=1)[0])
    return seen


@pytest.mark.slow
def test_full_frame_serving_imports_only_what_the_requirements_install(tmp_path):
    from faceswap.serving.pyfunc import pip_requirements
    from faceswap.serving.server import package_checkpoint

    from ._eval_fixtures import make_face_set, train_tiny

    make_face_set(tmp_path, train=4, val=2, test=2)
    pkg = package_checkpoint(train_tiny(tmp_path, "resize_nearest"), tmp_path / "pkg")
    reqs = (pkg / "requirements.txt").read_text().split()
    assert sorted(reqs) == sorted(pip_requirements())
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", PROBE, str(pkg)], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    used = {_norm(d) for d in json.loads(out.stdout.strip().splitlines()[-1])} - {"faceswap"}
    missing = sorted(used - _closure(reqs))
    assert not missing, f"serving imports {missing}, which the model's pip requirements do not install"


@pytest.mark.slow
def test_mlflow_models_serve_in_a_fresh_virtualenv(tmp_path, astronaut):
    """``mlflow models serve --env-manager virtualenv`` of a registered version: MLflow builds a new virtualenv from
    the model's python_env.yaml and requirements (pyenv for the interpreter, pip from the package index; the env
    is kept under ``$MLFLOW_ENV_ROOT``, default ~/.mlflow/envs, and reused by a rerun), without this checkout's
    source on the path (the model ships its own code), and swaps a real full frame."""
    import base64
    import io
    import shutil
    import signal
    import time
    import urllib.error
    import urllib.request

    import numpy as np
    from PIL import Image

    from faceswap.serving.pyfunc import encode_png
    from faceswap.serving.server import free_port, mlflow_executable

    from ._serving import register_tiny

    if shutil.which("pyenv") is None:
        pytest.skip("MLflow's virtualenv env manager needs pyenv on PATH (https://github.com/pyenv/pyenv)")
    reg = register_tiny(tmp_path / "reg", steps=20)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(MLFLOW_TRACKING_URI=reg["uri"], DO_NOT_TRACK="true", MLFLOW_DISABLE_TELEMETRY="true")
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([mlflow_executable(), "models", "serve", "-m", f"models:/{reg['name']}/1",
                                 "--env-manager", "virtualenv", "-h", "127.0.0.1", "-p", str(port)],
                                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + float(os.environ.get("FACESWAP_VENV_SERVE_TIMEOUT", "1800"))
        while True:
            assert proc.poll() is None, f"mlflow models serve exited {proc.returncode}:\n{log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"server not ready in time:\n{log.read_text()[-4000:]}"
            try:
                with urllib.request.urlopen(url + "/ping", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                time.sleep(5)
        body = {"dataframe_records": [{"image": encode_png(astronaut), "direction": "a2b", "aligned": False}]}
        req = urllib.request.Request(url + "/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as r:
            row = json.loads(r.read())["predictions"][0]
        assert row["error"] is None and row["face_found"] and row["identity"] == "b", row
        swapped = np.asarray(Image.open(io.BytesIO(base64.b64decode(row["image"]))).convert("RGB"))
        assert swapped.shape == astronaut.shape
        assert np.abs(swapped.astype(int) - astronaut.astype(int)).mean() > 0.5  # the face really was replaced
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
