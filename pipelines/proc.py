"""Child processes of the flow: DVC's command line and a stage's command, each streamed into the Prefect logs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import deque
from pathlib import Path

from faceswap.errors import FaceswapError


class StageFailed(FaceswapError, RuntimeError):
    """A DVC stage exited non-zero; the message ends with the stage's last output lines."""


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The flow's environment for a child, ``extra`` on top. Stage commands run `faceswap`/`python` from PATH:
    this interpreter's environment goes first, so a served deployment works without an activated virtualenv."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "PYTHONUNBUFFERED": "1", **(extra or {})}


def dvc(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


def stream(
    args: list[str], cwd: Path, label: str, tail: int, env: dict[str, str] | None = None
) -> tuple[int, list[str]]:
    """Run ``args``, log every output line to the Prefect run logger, return (exit code, last lines)."""
    from prefect import get_run_logger

    logger = get_run_logger()
    last: deque[str] = deque(maxlen=tail)
    proc = subprocess.Popen(args, cwd=cwd, env=child_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", bufsize=1)
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n").rsplit("\r", 1)[-1].rstrip()  # progress bars: keep the last redraw
            if line:
                logger.info("%s | %s", label, line)
                last.append(line)
        return proc.wait(), list(last)
    finally:
        if proc.poll() is None:  # cancelled or interrupted: do not leave the stage running
            proc.terminate()
            proc.wait(timeout=30)
