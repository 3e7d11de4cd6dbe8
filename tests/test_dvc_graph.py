"""dvc.yaml declares the code each stage runs: every project module its command reaches by import (read from the
source, not by running it) lies under one of the stage's `deps`, so DVC reruns a stage whenever its code changes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from .conftest import REPO

SRC = REPO / "src"
# CLI plumbing every command shares: not stage logic, deliberately not a dependency of any stage
GLUE = {"faceswap/cli.py", "faceswap/console.py", "faceswap/__init__.py"}


def _module_file(name: str) -> Path | None:
    base = SRC / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    """Every ``faceswap.*`` module a file imports, at any depth of the file (lazy imports included)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(SRC).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("faceswap")}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join([*parts, mod] if mod else parts)
            if mod.startswith("faceswap"):
                out.add(mod)
                out |= {f"{mod}.{a.name}" for a in node.names if _module_file(f"{mod}.{a.name}")}
    return out


def _closure(roots: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        f = _module_file(name)
        if f is not None:
            todo += sorted(_imports(f) - seen)
            parent = name.rsplit(".", 1)[0]
            if parent != name and _module_file(parent):
                todo.append(parent)  # importing a.b runs a/__init__.py
    return {str(f.relative_to(SRC)) for n in seen if (f := _module_file(n)) is not None}


def _command_imports(subcommand: str) -> set[str]:
    """The faceswap modules the CLI function of ``faceswap <subcommand>`` imports."""
    tree = ast.parse((SRC / "faceswap" / "cli.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for dec in node.decorator_list:
                if (isinstance(dec, ast.Call) and dec.args and isinstance(dec.args[0], ast.Constant)
                        and dec.args[0].value == subcommand and getattr(dec.func, "attr", "") == "command"):
                    found = set()
                    for sub in ast.walk(node):
                        if isinstance(sub, ast.ImportFrom) and (sub.module or "").startswith("faceswap"):
                            found.add(sub.module)  # `from faceswap.stages import train`: the module too
                            found |= {f"{sub.module}.{a.name}" for a in sub.names
                                      if _module_file(f"{sub.module}.{a.name}")}
                    return found
    raise AssertionError(f"no CLI command {subcommand!r} in cli.py")


def _stages() -> list[tuple[str, str, list[str]]]:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    out = []
    for name, stage in spec.items():
        body = stage.get("do", stage)
        cmd = body["cmd"]
        words = cmd.split()
        if words[0] != "faceswap":
            continue
        out.append((name, words[1], [d for d in body.get("deps", []) if d.startswith("src/")]))
    return out


@pytest.mark.parametrize(("stage", "subcommand", "deps"), _stages(), ids=[s[0] for s in _stages()])
def test_stage_declares_every_module_its_command_imports(stage, subcommand, deps):
    needed = _closure(_command_imports(subcommand)) - GLUE
    assert needed, f"{stage}: found no imports for `faceswap {subcommand}`"
    covered = [d.removeprefix("src/").rstrip("/") for d in deps]
    missing = sorted(m for m in needed if not any(m == c or m.startswith(c + "/") for c in covered))
    assert not missing, f"dvc.yaml stage {stage!r} runs code it does not declare: add {missing} to its deps"


@pytest.mark.parametrize(("stage", "subcommand", "deps"), _stages(), ids=[s[0] for s in _stages()])
def test_stage_declares_no_module_its_command_does_not_import(stage, subcommand, deps):
    """A file dependency the command never imports would rerun the stage for nothing."""
    needed = _closure(_command_imports(subcommand)) - GLUE
    extra = sorted(d for d in deps if d.endswith(".py") and d.removeprefix("src/") not in needed)
    assert not extra, f"dvc.yaml stage {stage!r} declares code its command does not import: drop {extra}"


def _stage_names(stages: object) -> set[str]:
    """DVC's stage addresses (``train@convtranspose-0``) reduced to the dvc.yaml stage names (``train``)."""
    return {name.split("@")[0] for name in stages}


def _committed_project(tmp_path: Path):
    """A DVC project with this dvc.yaml, params.yaml and src/, every stage committed as up to date (each dep and
    out a placeholder); returns ``status()``: the dvc.yaml stage names ``dvc status`` finds stale."""
    import json
    import shutil
    import subprocess
    import sys

    shutil.copytree(SRC, tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    dvc = [sys.executable, "-m", "dvc"]
    env = {"DVC_NO_ANALYTICS": "1", "PATH": "/usr/bin:/bin"}

    def run(*args: str) -> str:
        proc = subprocess.run([*dvc, *args], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    run("init", "--no-scm", "-q")
    from dvc.repo import Repo

    with Repo(str(tmp_path)) as repo:  # every dep and out of every (templated, expanded) stage, as a placeholder
        stages = list(repo.index.stages)
        for stage in stages:
            for item in [*stage.deps, *stage.outs]:
                path = Path(item.fs_path)
                if path.exists():
                    continue
                if path.suffix in {".json", ".parquet", ".md", ".csv", ".png", ".npz"}:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text("placeholder\n")
                else:
                    path.mkdir(parents=True, exist_ok=True)
                    (path / "placeholder").write_text("x\n")
    assert {"demo", "extract", "align", "validate", "train", "identity", "evaluate", "register"} <= {
        s.name.split("@")[0] for s in stages}
    run("commit", "--force", "-q")

    def status() -> set[str]:
        return _stage_names(json.loads(run("status", "--json") or "{}"))

    assert status() == set()
    return status


@pytest.mark.slow
def test_a_decoder_edit_reruns_only_the_model_stages(tmp_path):
    """The real thing, not the deps lists: one line added to model/blocks.py of a committed project. ``dvc status``
    must name exactly the stages that build or read models (train, evaluate, register), not the data stages (~5 min
    of work)."""
    status = _committed_project(tmp_path)
    with open(tmp_path / "src" / "faceswap" / "model" / "blocks.py", "a") as f:
        f.write("\n# a decoder edit\n")
    assert status() == {"train", "evaluate", "register"}


NEW_VARIANT = '''

@upsampler("nearest_depthwise")
class NearestDepthwiseUp(nn.Sequential):
    """Nearest ×2, a depthwise 3×3, a pointwise conv."""

    def __init__(self, in_channels: int, out_channels: int, *, first: bool = False) -> None:
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"),
                         nn.Conv2d(in_channels, in_channels, 3, padding=2 if first else 1, groups=in_channels),
                         nn.Conv2d(in_channels, out_channels, 1), *_norm_act(out_channels))
'''


@pytest.mark.slow
def test_a_new_variant_is_its_class_and_one_params_line_and_reruns_only_the_model_stages(tmp_path):
    """Adding a decoder variant as the README says (its registered class in model/blocks.py, its name in params.yaml
    ``model.variants``) touches nothing else, and leaves every data stage (demo … identity) up to date."""
    status = _committed_project(tmp_path)
    with open(tmp_path / "src" / "faceswap" / "model" / "blocks.py", "a") as f:
        f.write(NEW_VARIANT)
    params = tmp_path / "params.yaml"
    text = params.read_text()
    last = "    - pixelshuffle_icnr\n"
    params.write_text(text.replace(last, last + "    - nearest_depthwise\n", 1))
    assert status() == {"train", "evaluate", "register"}
    # ... and the project accepts it: params load, the train stage's check knows the name, the model builds
    import subprocess
    import sys

    probe = ("from faceswap.config import load_params; from faceswap.stages.train import check_variants; "
             "from faceswap.model import FaceSwapAutoencoder, ModelConfig; p = load_params('params.yaml'); "
             "check_variants(p); assert 'nearest_depthwise' in p.model.variants; "
             "FaceSwapAutoencoder(ModelConfig(image_size=64, width=4, bottleneck_channels=16, "
             "decoder='nearest_depthwise'))")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(tmp_path / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr


def test_the_readme_layout_names_every_module_and_package():
    """A newcomer finds each room from README's layout: every top-level module and package of src/faceswap and
    every module of pipelines/ is named there."""
    text = (REPO / "README.md").read_text()
    layout = text[text.index("## Layout"):]
    layout = layout[: layout.index("\n## ", 1)]
    rooms = [p.name + ("/" if p.is_dir() else "") for p in sorted((SRC / "faceswap").iterdir())
             if not p.name.startswith("__") and (p.is_dir() or p.suffix == ".py")]
    rooms += [p.name for p in sorted((REPO / "pipelines").glob("*.py")) if not p.name.startswith("__")]
    missing = [r for r in rooms if r not in layout]
    assert not missing, f"README.md's layout does not name {missing}"
