"""Stage ``demo``: synthetic clips of the two public-domain faces, as ``<paths.demo>/<identity>/clipNN.mp4``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceswap.data.demo import make_demo
from faceswap.errors import FaceswapError

if TYPE_CHECKING:
    from faceswap.config import Params


class DemoError(FaceswapError, RuntimeError):
    """The demo clips could not be written (disk, codec)."""


@dataclass(frozen=True)
class DemoRecord:
    out: str
    clips: tuple[str, ...]
    per_identity: int
    seconds: float
    width: int
    height: int
    fps: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"clips": list(self.clips)}


def run(params: Params) -> DemoRecord:
    d, out = params.data.demo, Path(params.paths.demo)
    try:
        paths = make_demo(out, identities=params.base.identities, clips=d.clips, seconds=d.seconds, fps=d.fps,
                          width=d.width, height=d.height, seed=params.base.seed)
    except (OSError, ValueError) as err:
        raise DemoError(str(err)) from None
    return DemoRecord(str(out), tuple(str(p) for p in paths), d.clips, d.seconds, d.width, d.height, d.fps)


def format_record(r: DemoRecord) -> str:
    return (f"demo data → {r.out}: {len(r.clips)} clips ({r.per_identity} per identity, {r.seconds:g} s, "
            f"{r.width}×{r.height} @ {r.fps} fps)")
