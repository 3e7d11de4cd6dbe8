"""The REST server: ``mlflow models serve`` on the registered pyfunc, with the project's defaults.

``faceswap serve`` and the tests and benchmark all start it through :class:`Server`:

- the model: ``serve.model`` (``models:/faceswap@champion``), an MLflow model URI, or a training
  checkpoint (``.pt``), which is first packaged as a local pyfunc exactly as ``register`` logs it;
- the registry: the project's one store (:func:`faceswap.tracking.tracking_uri`: ``$MLFLOW_TRACKING_URI``, else
  ``mlflow.tracking_uri``; sqlite made absolute, so the server finds it from any folder);
- ``--env-manager local`` (the project's own environment) with the venv's ``bin`` first on ``PATH``
  (``mlflow models serve`` starts ``uvicorn`` from there), telemetry off, loopback only by default;
- the ``serve`` and ``align`` sections travel to the model in ``$FACESWAP_SERVE_PARAMS``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, TYPE_CHECKING

from faceswap.errors import FaceswapError

if TYPE_CHECKING:
    from faceswap.config import Params

TELEMETRY_OFF = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "NO_ALBUMENTATIONS_UPDATE": "1",
}


class ServeError(FaceswapError, RuntimeError):
    """The server cannot start (no mlflow, a model that does not resolve, a port in use, ...)."""


def resolve_tracking_uri(params: Params) -> str:
    """The registry the server reads: the one rule of :func:`faceswap.tracking.tracking_uri`."""
    from faceswap.tracking import tracking_uri

    return tracking_uri(params)


def is_checkpoint(model: str) -> bool:
    return model.endswith(".pt") and Path(model).is_file()


def package_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """Save a training checkpoint as a local pyfunc model folder (what ``register`` would log), for serving."""
    import shutil

    from faceswap.serving.pyfunc import save_pyfunc

    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    return save_pyfunc(checkpoint, out)


def mlflow_executable() -> str:
    exe = Path(sys.executable).with_name("mlflow")
    if exe.exists():
        return str(exe)
    import shutil

    found = shutil.which("mlflow")
    if not found:
        raise ServeError("the mlflow command is not installed in this environment (make setup)")
    return found


def server_env(params: Params, tracking_uri: str) -> dict[str, str]:
    """The server's environment: venv bin first on PATH, the registry, telemetry off, the serving settings."""
    env = {**os.environ, **TELEMETRY_OFF}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env["MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"] = str(params.serve.timeout_s)
    from faceswap.serving.pyfunc import PARAMS_ENV

    env[PARAMS_ENV] = json.dumps({"serve": params.serve.model_dump(mode="json"),
                                  "align": params.align.model_dump(mode="json")})
    return env


def curl_example(host: str, port: int) -> str:
    """A ready-to-paste request: a full frame from face.jpg, the swapped frame to swapped.png."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return "\n".join([
        "# full frame (aligned=true for an aligned square crop; direction a2b or b2a):",
        "printf '{\"dataframe_records\":[{\"image\":\"%s\",\"direction\":\"a2b\",\"aligned\":false}]}' "
        "\"$(base64 -w0 face.jpg)\" > request.json",
        f"curl -s http://{shown}:{port}/invocations -H 'Content-Type: application/json' -d @request.json \\",
        "  | python3 -c 'import sys,json,base64; r=json.load(sys.stdin)[\"predictions\"][0]; "
        "r[\"image\"] and open(\"swapped.png\",\"wb\").write(base64.b64decode(r[\"image\"])); "
        "print({k: v for k, v in r.items() if k != \"image\"})'",
    ])


class Server:
    """One ``mlflow models serve`` process (and its uvicorn child), started, awaited and stopped."""

    def __init__(
        self,
        params: Params,
        model: str | None = None,
        host: str | None = None,
        port: int | None = None,
        workers: int | None = None,
        work_dir: str | Path | None = None,
    ) -> None:
        self.params = params
        self.model = model or params.serve.model
        self.host = host or params.serve.host
        self.port = int(port or params.serve.port)
        self.workers = int(workers or params.serve.workers)
        self.tracking_uri = resolve_tracking_uri(params)
        self.work_dir = Path(work_dir) if work_dir else None
        self.proc: subprocess.Popen | None = None
        self._own_group = False

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def model_uri(self) -> str:
        if is_checkpoint(self.model):
            import tempfile

            base = self.work_dir or Path(tempfile.mkdtemp(prefix="faceswap-serve-"))
            return str(package_checkpoint(self.model, base / "pyfunc"))
        if self.model.endswith(".pt"):
            raise ServeError(f"checkpoint not found: {self.model}")
        from faceswap.aliases import alias_problem

        problem = alias_problem(self.model, self.tracking_uri)
        if problem:
            raise ServeError(f"cannot serve {self.model}: {problem}")
        return self.model

    def command(self, model_uri: str) -> list[str]:
        return [mlflow_executable(), "models", "serve", "-m", model_uri, "--env-manager", "local",
                "-h", self.host, "-p", str(self.port), "-w", str(self.workers), "-t", str(self.params.serve.timeout_s)]

    def start(self, stdout: IO | int | None = None, stderr: IO | int | None = None,
              new_session: bool = True) -> Server:
        """Start the server; ``new_session``: in its own process group (stopped as a whole by :meth:`stop`)."""
        if _port_open(self.host, self.port):
            raise ServeError(f"port {self.port} on {self.host} is already in use; pick another with --port")
        cmd = self.command(self.model_uri())
        self.proc = subprocess.Popen(cmd, env=server_env(self.params, self.tracking_uri), stdout=stdout,
                                     stderr=stderr, start_new_session=new_session)
        self._own_group = new_session
        return self

    def wait_ready(self, timeout: float = 120.0, log: Path | None = None) -> float:
        """Seconds until ``/ping`` answers 200; a ServeError (with the log's tail) if the process exits first."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc is not None and self.proc.poll() is not None:
                tail = ""
                if log is not None and Path(log).is_file():
                    tail = "\n" + "\n".join(Path(log).read_text(errors="replace").splitlines()[-25:])
                raise ServeError(f"mlflow models serve exited with code {self.proc.returncode} before it was ready"
                                 f" (model {self.model}, registry {self.tracking_uri}){tail}")
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.25)
        raise ServeError(f"the server did not answer {self.url}/ping within {timeout:.0f} s")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the whole process group when it has its own), then SIGKILL after ``timeout``."""
        p = self.proc
        if p is None or p.poll() is not None:
            return
        sig_target = (lambda s: os.killpg(p.pid, s)) if self._own_group else p.send_signal
        try:
            sig_target(signal.SIGTERM)
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            sig_target(signal.SIGKILL)
            p.wait(5)
        except ProcessLookupError:
            pass

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _port_open(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1" if host in ("0.0.0.0", "::") else host, port)) == 0


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
