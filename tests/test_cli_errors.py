"""Every expected failure derives from FaceswapError, and every command prints it as one line, no traceback."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from faceswap.cli import app
from faceswap.errors import FaceswapError
from tests.conftest import REPO, repo_paths


def _exception_classes() -> dict[str, list[str]]:
    """Every class in src/ and pipelines/ that derives from a built-in exception or one of ours, with its bases."""
    found: dict[str, list[str]] = {}
    for root in (REPO / "src", REPO / "pipelines"):
        for path in root.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef):
                    bases = [ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases]
                    if any(b.endswith(("Error", "Exception")) or b == "StageFailed" for b in bases):
                        found[node.name] = bases
    return found


def test_every_project_exception_derives_from_faceswap_error():
    classes = _exception_classes()
    assert len(classes) >= 17, classes
    ours = {"FaceswapError", *classes}

    def rooted(name: str) -> bool:
        return name == "FaceswapError" or any(b in ours and rooted(b) for b in classes.get(name, []))

    assert not [c for c in classes if not rooted(c)]


def _one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[0]


def test_register_without_evaluations_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "faceswap.cli", "register", "--params", str(REPO / "params.yaml")],  # paths: tmp
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert proc.returncode == 1
    assert "no evaluation for" in _one_error_line(proc.stderr)
    assert not (tmp_path / "metrics" / "register.json").exists()


def test_evaluate_of_a_corrupt_checkpoint_is_one_line(tmp_path):
    (tmp_path / "models" / "resize_nearest" / "seed0").mkdir(parents=True)
    (tmp_path / "models" / "resize_nearest" / "seed0" / "model.pt").write_bytes(b"not a zip file")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"paths": repo_paths(tmp_path)}))  # models/… below tmp_path
    r = CliRunner().invoke(app, ["evaluate", "--variant", "resize_nearest", "--no-mlflow", "--params", str(params)])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert "cannot read checkpoint" in _one_error_line(r.stderr)


@pytest.mark.parametrize("args", [["lpips", "{a}", "{missing}"], ["checkerboard", "{missing}"]])
def test_missing_image_is_one_line_with_status_2(tmp_path, astronaut, args):
    from faceswap.imageio import write_rgb

    write_rgb(tmp_path / "a.png", astronaut[:64, :64])
    argv = [a.format(a=tmp_path / "a.png", missing=tmp_path / "nope.png") for a in args]
    r = CliRunner().invoke(app, argv)
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
    assert "nope.png" in _one_error_line(r.stderr)


def test_a_faceswap_error_raised_in_any_command_is_caught_by_the_app():
    """The wrapper sits on every registered command, including the flow sub-app's."""
    import typer

    from faceswap.checkpoint import CheckpointError
    from faceswap.console import App

    probe = App()

    @probe.command("boom")
    def boom() -> None:
        raise CheckpointError("checkpoint models/x/model.pt is truncated")

    @probe.command("other")
    def other() -> None:
        typer.echo("fine")

    r = CliRunner().invoke(probe, ["boom"])
    assert r.exit_code == 1 and _one_error_line(r.stderr) == "error: checkpoint models/x/model.pt is truncated"
    assert issubclass(CheckpointError, FaceswapError) and issubclass(CheckpointError, RuntimeError)


# --- params: a missing or invalid file stops every command with one line -------------------------------------

# the least arguments each command needs to get as far as reading its params
COMMAND_ARGS = {
    "model-info": [], "checkerboard": ["x.png"], "demo-data": [], "extract": ["raw"], "align": ["frames"],
    "train": ["--variant", "resize_nearest"], "validate": ["faces"], "evaluate": ["--variant", "resize_nearest"],
    "register": [], "serve": [], "swap": ["in.png", "-o", "out.png"], "identity-reference": [], "ui": [],
    "use-videos": ["data/raw"],
}


def test_every_command_with_params_is_covered():
    import typer

    group = typer.main.get_command(app)
    with_params = {name for name, cmd in group.commands.items()
                   if any("--params" in getattr(o, "opts", ()) for o in cmd.params)}
    assert with_params == set(COMMAND_ARGS)


@pytest.mark.parametrize("command", sorted(COMMAND_ARGS))
def test_a_missing_params_file_is_an_error_in_every_command(command, tmp_path):
    r = CliRunner().invoke(app, [command, *COMMAND_ARGS[command], "--params", str(tmp_path / "nope.yaml")])
    assert r.exit_code == 2, r.output
    assert _one_error_line(r.stderr) == f"error: params file not found: {tmp_path / 'nope.yaml'} " \
                                        "(run from the repository root or pass --params)"


def test_an_invalid_params_file_and_a_bad_override_name_the_key(tmp_path):
    import yaml

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["steps"] = raw["train"]["warmup_steps"]  # what `dvc exp run -S train.steps=20` writes
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(raw))
    r = CliRunner().invoke(app, ["train", "--variant", "resize_nearest", "--params", str(bad)])
    w = raw["train"]["warmup_steps"]
    assert r.exit_code == 2
    assert _one_error_line(r.stderr) == f"error: {bad}: train.warmup_steps ({w}) must be smaller than steps ({w})"
    r = CliRunner().invoke(app, ["train", "--variant", "resize_nearest", "--steps", str(w),
                                 "--params", str(REPO / "params.yaml")])
    assert r.exit_code == 2
    assert _one_error_line(r.stderr) == (f"error: {REPO / 'params.yaml'} + --steps: train.warmup_steps ({w}) "
                                         f"must be smaller than steps ({w})")
    r = CliRunner().invoke(app, ["align", "frames", "--detector", "dlib", "--params", str(REPO / "params.yaml")])
    assert r.exit_code == 2
    assert "align.detector = 'dlib': must be one of" in _one_error_line(r.stderr)


def test_a_choice_option_names_its_values_from_the_one_tuple():
    """``--net`` and ``--direction`` are Enum options built from the tuples the code uses (usage error, status 2)."""
    from faceswap.metrics.lpips_weights import NETS
    from faceswap.serving.swapper import DIRECTIONS

    r = CliRunner().invoke(app, ["lpips", "a.png", "b.png", "--net", "squeeze"])
    assert r.exit_code == 2 and "'squeeze' is not one of" in r.stderr
    assert all(f"'{n}'" in r.stderr for n in NETS)
    help_text = CliRunner().invoke(app, ["swap", "--help"]).stdout
    assert f"<{'|'.join(DIRECTIONS)}>" in help_text and f"<{'|'.join(NETS)}>" in CliRunner().invoke(
        app, ["lpips", "--help"]).stdout
