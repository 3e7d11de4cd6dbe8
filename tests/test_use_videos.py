"""`faceswap use-videos DIR` on a fresh copy of the project (its git-tracked files, a new git repository), with clips
filmed on the fly: DVC versions the folder, params.yaml points at it with its comments kept, and `dvc repro extract`
samples the new videos (every frame of these short clips)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from faceswap.cli import app
from faceswap.use_videos import set_yaml_key
from tests._clips import face_clip
from tests.conftest import REPO


def _git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, capture_output=True,
                          text=True, check=True)
    return proc.stdout


@pytest.fixture
def fresh_copy(tmp_path) -> Path:
    """The project as a fresh clone has it: every git-tracked file, committed in a new repository."""
    root = tmp_path / "project"
    for rel in _git(REPO, "ls-files").splitlines():
        if (REPO / rel).is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, root / rel)
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "fresh")
    return root


def test_round_trip_changes_exactly_the_one_line(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    before = params.read_text().splitlines()
    assert set_yaml_key(params, "paths.raw", "data/raw") == "data/demo/raw"
    after = params.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert len(before) == len(after) and len(changed) == 1
    assert changed[0][1].startswith("  raw: data/raw ") and changed[0][1].split("#")[1] == changed[0][0].split("#")[1]


@pytest.mark.slow
def test_use_videos_on_a_fresh_copy(fresh_copy, monkeypatch):
    root = fresh_copy
    face_clip(root / "data" / "raw" / "a" / "phone.mp4", "a", seconds=2.0, fps=25, seed=1)
    face_clip(root / "data" / "raw" / "b" / "phone.mov", "b", seconds=3.0, fps=30, seed=2)
    monkeypatch.chdir(root)
    runner = CliRunner()

    missing = runner.invoke(app, ["use-videos", "data"])  # data/a and data/b do not exist
    assert missing.exit_code == 2 and "data/a/" in missing.output and "holds no video" in missing.output
    outside = runner.invoke(app, ["use-videos", str(root.parent)])
    assert outside.exit_code == 2 and "outside the project" in outside.output

    res = runner.invoke(app, ["use-videos", "data/raw"])
    assert res.exit_code == 0, res.output
    assert "a: 1 video, b: 1 video" in res.output and "paths.raw data/demo/raw → data/raw" in res.output
    assert (root / "data" / "raw.dvc").is_file()
    assert yaml.safe_load((root / "params.yaml").read_text())["paths"]["raw"] == "data/raw"
    diff = _git(root, "diff", "HEAD", "--unified=0", "--", "params.yaml")
    assert [ln for ln in diff.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))] == [
        "-  raw: data/demo/raw        # videos as <raw>/<identity>/*.mp4: the demo's, or data/raw after `dvc add "
        "data/raw`",
        "+  raw: data/raw             # videos as <raw>/<identity>/*.mp4: the demo's, or data/raw after `dvc add "
        "data/raw`"]
    assert "data/raw.dvc" in _git(root, "status", "--porcelain")  # DVC's autostage put it in git's index

    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                        "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run([sys.executable, "-m", "dvc", "repro", "extract"], cwd=root, capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Running stage 'demo'" not in proc.stdout  # the demo's clips are not needed any more
    import pandas as pd

    frames = pd.read_parquet(root / "data" / "frames" / "frames.parquet")
    assert frames.groupby("identity").size().to_dict() == {"a": 50, "b": 90}  # every frame (extract.every: auto)
