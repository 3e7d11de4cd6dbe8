"""File helpers every stage shares: content digests and atomic writes.

One implementation each, so a digest recorded by one stage (dvc.lock, run.json, a registered model's tags)
is computed the same way where another stage checks it, and no cache or checkpoint is ever left half-written.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def file_digest(path: str | Path, algorithm: str = "md5") -> str:
    """Hex digest of a file's bytes. md5 is the DVC 3 hash (equals the ``md5`` dvc.lock records for it)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file: checkpoints and downloaded files are verified with it before use."""
    return file_digest(path, "sha256")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(f)`` on a temp file in the same folder, fsync, then ``os.replace`` onto ``path``.

    A crash at any moment leaves either the old file or the new one, never half of one; the temp file gets
    the usual permissions (umask applies, unlike ``mkstemp``'s 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | Path, obj: object) -> Path:
    """A stage's record or DVC metrics file: indented JSON with a final newline, written atomically."""
    import json

    text = json.dumps(obj, indent=2) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))
