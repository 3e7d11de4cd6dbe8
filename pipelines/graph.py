"""The DVC pipeline as an ordered list of stages, read from ``dvc.yaml`` itself.

Adding a stage to ``dvc.yaml`` needs no change here: the order is the one ``dvc repro`` uses (a post-order
walk of the stage graph), with ``foreach`` and ``matrix`` stages expanded into ``name@item``
(``evaluate@resize_nearest``, ``train@resize_nearest-0``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from faceswap.errors import FaceswapError


class PlanError(FaceswapError, ValueError):
    """A variant, forced stage or skipped stage that the pipeline does not have."""

    exit_code = 2  # a bad argument or value: the same status as a usage error


@dataclass(frozen=True)
class StageSpec:
    """One runnable stage: ``address`` is what ``dvc repro`` takes (``train@pixelshuffle``)."""

    address: str
    name: str  # the dvc.yaml key (``train``)
    item: str | None  # the foreach item (``pixelshuffle``) or matrix item (``pixelshuffle-0``); None: plain stage
    cmd: str
    frozen: bool = False

    @property
    def variant(self) -> str | None:
        """The decoder variant an item stands for: a matrix item ``<variant>-<seed>`` keeps its variant."""
        return None if self.item is None else self.item.split("-", 1)[0]


def discover(root: str | Path = ".") -> list[StageSpec]:
    """Every stage of every ``dvc.yaml`` under ``root`` that runs a command, in DVC's reproduction order."""
    from dvc.repo import Repo
    from dvc.repo.reproduce import get_active_graph, plan_repro

    with Repo(str(root)) as repo:
        order = plan_repro(get_active_graph(repo.index.graph))
        specs = []
        for stage in order:
            cmd = getattr(stage, "cmd", None)
            if not cmd:  # a .dvc data source (`dvc add`): tracked data, nothing to run
                continue
            # addresses relative to the repository, not to the working folder (``dvc repro`` runs in the repo)
            dvcfile = Path(stage.path).relative_to(repo.root_dir).as_posix()
            address = stage.name if dvcfile == "dvc.yaml" else f"{dvcfile}:{stage.name}"
            name, _, item = stage.name.partition("@")
            specs.append(StageSpec(address, name, item or None, cmd if isinstance(cmd, str) else " && ".join(cmd),
                                   bool(stage.frozen)))
    return specs


def _known(stages: Iterable[StageSpec]) -> str:
    return ", ".join(dict.fromkeys(s.address for s in stages)) or "(none)"


def _matches(stage: StageSpec, names: Iterable[str]) -> bool:
    names = set(names)
    return stage.address in names or stage.name in names


def select(
    stages: list[StageSpec],
    variants: Iterable[str] | None = None,
    skip: Iterable[str] = (),
    force: Iterable[str] = (),
) -> tuple[list[StageSpec], list[StageSpec], set[str]]:
    """Split ``stages`` into (to run, excluded) and resolve ``force`` to addresses.

    ``variants`` keeps only those items of every ``foreach`` stage (plain stages always run); ``skip`` and
    ``force`` take stage names (every item) or addresses (one item). Unknown names raise PlanError.
    """
    skip, force = list(skip), list(force)
    items = {s.variant for s in stages if s.variant is not None}
    if variants is not None:
        variants = list(variants)
        unknown = [v for v in variants if v not in items]
        if unknown or not variants:
            raise PlanError(f"unknown or empty variant selection {variants}; the pipeline has: "
                            f"{', '.join(sorted(items)) or '(no foreach stages)'}")
    for label, names in (("skip", skip), ("force", force)):
        unknown = [n for n in names if not any(_matches(s, [n]) for s in stages)]
        if unknown:
            raise PlanError(f"{label}: no stage {', '.join(map(repr, unknown))}; stages: {_known(stages)}")
    run, excluded = [], []
    for s in stages:
        out = (variants is not None and s.variant is not None and s.variant not in variants) or _matches(s, skip)
        (excluded if out else run).append(s)
    forced = {s.address for s in run if _matches(s, force)}
    return run, excluded, forced
