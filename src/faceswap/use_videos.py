"""``faceswap use-videos DIR``: train on your own videos, the DVC way, in one command.

1. ``DIR`` must lie inside the project and hold a folder of videos per identity (``DIR/a/*.mp4``, ``DIR/b/*.mov``,
   ... for ``base.identities``); what is missing is named before anything changes;
2. ``dvc add DIR``: DVC versions the videos (git tracks the small ``DIR.dvc``; the videos go to DVC's cache and,
   after ``dvc push``, to its remote);
3. ``paths.raw: DIR`` in params.yaml, written by a YAML round trip that keeps every comment and the layout (no
   ``sed``, and not ``dvc exp run -S``, which drops the comments); the file is refused rather than reformatted when
   more than that line would change.

``dvc repro`` then runs extract and align on them (``extract`` depends on ``${paths.raw}``). Not a stage: no stage
imports it.
"""

from __future__ import annotations

import difflib
import io
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from faceswap.errors import FaceswapError


class UseVideosError(FaceswapError, ValueError):
    """The folder cannot be used as it is (outside the project, an identity without videos) or DVC refused it."""

    exit_code = 2


@dataclass(frozen=True)
class UseVideosRecord:
    raw: str  # the folder, relative to the project root, as params.yaml now names it
    previous_raw: str  # what paths.raw was
    videos: dict[str, int]  # identity → video files found
    dvc_file: str | None  # DIR.dvc, or None when DVC was not asked to version the folder
    params: str


def _round_trip_yaml():
    from ruamel.yaml import YAML

    y = YAML()  # round-trip mode: comments, key order and quoting survive
    y.preserve_quotes = True
    y.width = 4096  # never re-wrap a long line
    y.indent(mapping=2, sequence=4, offset=2)  # params.yaml's layout (``  variants:`` / ``    - name``)
    y.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return y


def set_yaml_key(path: Path, dotted: str, value: object) -> object:
    """Set ``dotted`` (``paths.raw``) in a YAML file, keeping its comments and layout; the old value. Refuses (and
    writes nothing) when the round trip would change any other line."""
    y = _round_trip_yaml()
    text = path.read_text()
    data = y.load(text)
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        if not isinstance(node, dict) or key not in node:
            raise UseVideosError(f"{path} has no `{dotted}` key (its section `{key}` is missing)")
        node = node[key]
    old = node.get(leaf)
    node[leaf] = value
    out = io.StringIO()
    y.dump(data, out)
    changed = [ln for ln in difflib.unified_diff(text.splitlines(), out.getvalue().splitlines(), n=0, lineterm="")
               if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    if len(changed) > 2:
        raise UseVideosError(f"writing `{dotted}: {value}` would reformat {path} beyond that line; set it by hand")
    path.write_text(out.getvalue())
    return old


def use_videos(folder: str | Path, params_path: str | Path = "params.yaml", *, dvc: bool = True) -> UseVideosRecord:
    """Check ``folder``, ``dvc add`` it and point ``paths.raw`` at it: see the module docstring."""
    from faceswap.config import load_params
    from faceswap.data.video import VIDEO_EXTENSIONS, find_videos

    params_path = Path(params_path)
    params = load_params(params_path)
    root = params_path.resolve().parent
    folder = Path(folder).resolve()
    try:
        rel = folder.relative_to(root).as_posix()
    except ValueError:
        raise UseVideosError(
            f"{folder} is outside the project ({root}): DVC versions folders inside it; copy the videos in first "
            f"(mkdir -p {root / 'data/raw'} && cp -r {folder}/* {root / 'data/raw'}/) and run "
            "`faceswap use-videos data/raw`") from None
    if not folder.is_dir():
        raise UseVideosError(f"no folder {folder}: put your videos in <folder>/<identity>/ "
                             f"({', '.join(params.base.identities)}) first")
    videos = {ident: len(find_videos(folder, ident)[0]) for ident in params.base.identities}
    missing = [i for i, n in videos.items() if n == 0]
    if missing:
        raise UseVideosError(
            f"{', '.join(f'{folder / i}/' for i in missing)} holds no video: each identity of base.identities "
            f"({', '.join(params.base.identities)}) needs a folder with at least one video "
            f"({', '.join(sorted(VIDEO_EXTENSIONS))})")
    dvc_file = None
    if dvc:
        proc = subprocess.run([sys.executable, "-m", "dvc", "add", rel], cwd=root, capture_output=True, text=True)
        if proc.returncode != 0:
            why = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
            raise UseVideosError(f"`dvc add {rel}` failed: {why[-1] if why else f'exit {proc.returncode}'}")
        dvc_file = f"{rel}.dvc"
    old = set_yaml_key(params_path, "paths.raw", rel)
    load_params(params_path)  # the file as written still validates
    return UseVideosRecord(rel, str(old), videos, dvc_file, str(params_path))


def format_record(r: UseVideosRecord) -> str:
    found = ", ".join(f"{i}: {n} video{'s' if n != 1 else ''}" for i, n in r.videos.items())
    lines = [f"use-videos: {r.raw} ({found})"]
    if r.dvc_file:
        lines.append(f"  dvc add {r.raw} → {r.dvc_file} (the videos are in DVC's cache; `dvc push` shares them)")
    lines.append(f"  {r.params}: paths.raw {r.previous_raw} → {r.raw}")
    tracked = " ".join(x for x in (r.dvc_file, r.params) if x)
    lines.append(f"  next: dvc repro (extract and align run on them), then git add {tracked} dvc.lock && git commit")
    return "\n".join(lines)
