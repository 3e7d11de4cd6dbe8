"""The Great Expectations gate on real aligned faces: a clean set passes; planted defects each trip the one
expectation meant for them, in both modes; quarantine, JSON summary, Data Docs and MLflow artifacts; a run writes
only the paths it is given (no Great Expectations project file in the repository)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from faceswap.cli import app
from faceswap.config import ConfigError, Params, load_params, parse_params
from faceswap.data.manifest import column_array, write_manifest
from tests._clips import face_clip
from tests.conftest import REPO, repo_paths

SIZE = 64
ARRAYS = ("box", "landmarks_src", "landmarks_aligned", "matrix")


def _params(**validate) -> Params:
    return parse_params(
        {
            "base": {"image_size": SIZE},
            # the layout, below a folder no test writes to: each test names the files it reads and writes
            "paths": repo_paths(Path(tempfile.gettempdir()) / "faceswap-validate-unset"),
            "split": {"mode": "tail", "val_fraction": 0.2, "test_fraction": 0.2, "gap_s": 0.2, "blocks": 1},
            "validate": {"min_train_faces": 5, "min_val_faces": 2, "min_test_faces": 2,
                         "min_relative_sharpness": 0.3, **validate},
        }
    )


@pytest.fixture(scope="module")
def faces_dir(tmp_path_factory):
    """Real aligned faces: 3 clips of the astronaut (a), 1 of Grace Hopper (b), through extract and align."""
    from faceswap.config import AlignParams
    from faceswap.data.align import align_faces
    from faceswap.data.detect import MtcnnDetector
    from faceswap.data.video import extract_frames

    root = tmp_path_factory.mktemp("validate")
    for who, n in (("a", 3), ("b", 1)):
        for k in range(n):
            face_clip(root / "raw" / who / f"walk{k}.mp4", who, seconds=2.0, fps=8, seed=10 * k + len(who))
    extract_frames(root / "raw", root / "frames", ("a", "b"), every=1)
    p = _params()
    aligned = align_faces(root / "frames", root / "faces", MtcnnDetector("cpu", min_face_size=40),
                          AlignParams(min_face_size=40), p.split, size=SIZE, progress=False)
    write_manifest(aligned.rows, root / "faces" / "manifest.parquet")  # what stage align writes
    return root / "faces"


def _paths(tmp_path, report=None) -> dict[str, str]:
    """Every path the stage writes, under ``tmp_path`` (the layout of the default params)."""
    return {"paths.accepted": str(tmp_path / "validated" / "faces.parquet"),
            "paths.quarantine": str(tmp_path / "validated" / "quarantine.parquet"),
            "paths.validation_report": str(report or tmp_path / "reports" / "validation"),
            "paths.validation_metrics": str(tmp_path / "metrics" / "validation.json")}


def _run(faces, tmp_path, params, mode, mlflow: bool | None = None, report=None):
    from faceswap.config import with_overrides
    from faceswap.stages import validate

    p = with_overrides(params, {"paths.faces": str(faces), **_paths(tmp_path, report), "validate.mode": mode,
                                "validate.mlflow": mlflow}, "test")
    return validate.run(p)


def _cli_paths(tmp_path) -> list[str]:
    return ["--accepted", str(tmp_path / "validated" / "faces.parquet"),
            "--quarantine", str(tmp_path / "validated" / "quarantine.parquet"),
            "--report", str(tmp_path / "reports"), "--metrics", str(tmp_path / "m.json")]


def _write(df: pd.DataFrame, path) -> None:
    rows = df.to_dict("records")
    for c in ARRAYS:
        for r, a in zip(rows, column_array(df, c), strict=True):
            r[c] = a
    write_manifest(rows, path)


# --- defects -------------------------------------------------------------------------------------------


def plant_defects(src, dst, too_few: bool = True) -> dict[str, set[str]]:
    """Copy the faces folder and plant one defect per expectation; return key → face ids meant to trip it."""
    shutil.copytree(src, dst)
    df = pd.read_parquet(dst / "manifest.parquet")
    planted: dict[str, set[str]] = {}

    def clip(who, video, split="train"):
        return df[(df.identity == who) & (df.video == video) & (df.split == split)].sort_values("frame_index")

    walk0 = clip("a", "walk0.mp4")
    blurred, small, missing = (walk0.iloc[k] for k in (1, 3, 5))
    img = cv2.imread(str(dst / blurred.path))
    cv2.imwrite(str(dst / blurred.path), cv2.GaussianBlur(img, (0, 0), 1.2))
    planted["relative_sharpness"] = {blurred.face_id}
    cv2.imwrite(str(dst / small.path), cv2.resize(cv2.imread(str(dst / small.path)), (48, 48)))
    planted["image_shape"] = {small.face_id}
    (dst / missing.path).unlink()
    planted["file_exists"] = {missing.face_id}

    walk1 = clip("a", "walk1.mp4")
    low = walk1.index[3]
    df.loc[low, "score"] = 0.5
    planted["score"] = {df.loc[low, "face_id"]}
    edge = walk1.index[0]  # the same matrix in a frame a fifth as wide: most of the crop is mapped from outside
    df.loc[edge, "frame_width"] = int(df.loc[edge, "frame_width"]) // 5
    planted["out_of_frame"] = {df.loc[edge, "face_id"]}
    leak = clip("a", "walk1.mp4", "val").index[0]  # the first held-out frame relabelled as training
    df.loc[leak, "split"] = "train"
    planted["split_leak"] = {df.loc[leak, "face_id"]}

    shaky = df[(df.identity == "a") & (df.video == "walk2.mp4")].sort_values("frame_index")
    lm = column_array(shaky, "landmarks_aligned")
    shake = np.where(np.arange(len(lm)) % 2 == 0, 1.2, -1.2)  # ±1.2 px frame to frame
    # ... except on frames whose landmarks already sit near the landmark tolerance (6.4 px at 64²): there the shake
    # would also trip the per-frame landmark check, and this defect is meant to trip jitter alone
    from faceswap.data.geometry import face_template

    dev = np.linalg.norm(lm - face_template(SIZE, 0.8), axis=2).max(axis=1)
    shake[dev > 0.1 * SIZE - 1.5] = 0.0
    lm[:, :, 0] += shake[:, None]
    df["landmarks_aligned"] = df["landmarks_aligned"].astype(object)
    for i, a in zip(shaky.index, lm, strict=True):
        df.at[i, "landmarks_aligned"] = a
    planted["jitter"] = set(shaky.face_id)

    if too_few:  # identity b keeps 3 training faces (and all its validation faces)
        b_train = df[(df.identity == "b") & (df.split == "train")].sort_values("face_id")
        df = df.drop(b_train.index[3:])
        planted["train_faces"] = {"b"}
    _write(df.reset_index(drop=True), dst / "manifest.parquet")
    return planted


# --- tests ---------------------------------------------------------------------------------------------


def test_validate_params_are_checked():
    with pytest.raises(ConfigError, match=r"validate.mode = 'strict': must be one of fail, filter"):
        parse_params({"validate": {"mode": "strict"}})
    with pytest.raises(ConfigError, match=r"min_brightness .* must be below max_brightness"):
        parse_params({"validate": {"min_brightness": 200, "max_brightness": 100}})
    with pytest.raises(ConfigError, match=r"validate\.min_score = 1\.5"):
        parse_params({"validate": {"min_score": 1.5}})
    assert Params().validation.mode == "filter"


def test_cli_does_not_import_great_expectations():
    code = (
        "import sys; import faceswap.cli, faceswap.validation, faceswap.validation.checks, "
        "faceswap.validation.gate, faceswap.stages.validate; "
        "heavy = [m for m in ('great_expectations', 'mlflow') if m in sys.modules]; assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_cli_without_manifest_fails_clearly(tmp_path):
    res = CliRunner().invoke(app, ["validate", str(tmp_path), *_cli_paths(tmp_path),
                                   "--params", str(REPO / "params.yaml")])
    assert res.exit_code == 1 and "run `faceswap align` first" in res.output
    assert not any(tmp_path.iterdir())  # nothing written


def test_cli_options_are_params_keys(tmp_path, monkeypatch):
    """Each option sets one params key (None: unset); a bad --mode is the params error, exit 2."""
    from faceswap.stages import validate

    seen = {}

    def run(p):  # stop before the gate: only the params matter here
        seen["p"] = p
        raise SystemExit(0)

    monkeypatch.setattr(validate, "run", run)
    res = CliRunner().invoke(app, ["validate", "f", "--accepted", "a.parquet", "--mode", "fail",
                                   "--params", str(REPO / "params.yaml")])
    assert res.exit_code == 0, res.output
    p, default = seen["p"], load_params(REPO / "params.yaml")
    assert (p.paths.faces, p.paths.accepted, p.validation.mode) == ("f", "a.parquet", "fail")
    assert (p.paths.quarantine, p.paths.validation_report) == (default.paths.quarantine,
                                                               default.paths.validation_report)
    res = CliRunner().invoke(app, ["validate", "--mode", "strict", "--params", str(REPO / "params.yaml")])
    assert res.exit_code == 2 and "validate.mode = 'strict': must be one of fail, filter" in res.output


def test_record_round_trips_through_its_json():
    from faceswap.stages.validate import ValidationRecord
    from faceswap.validation.gate import Failure

    r = ValidationRecord(False, "filter", 10, 7, 3, 84,
                         (Failure("score", "row", "detector score high enough", "score", "expected ≥ 0.95", 3,
                                  ("a__x (score = 0.5)",)),
                          Failure("train_faces", "table", "enough training faces", "train_faces", "expected ≥ 5",
                                  1, ("b (train_faces = 3)",))),
                         {"score": 3}, {"a": {"train": 5, "val": 1, "test": 1}}, None, "q.parquet", "m.json",
                         "r/index.html", {"total": 1.0})
    d = json.loads(json.dumps(r.to_json()))
    assert d["failed"]["score"]["count"] == 3 and d["failed_expectations"] == 2 and d["accepted_fraction"] == 0.7
    assert ValidationRecord.from_json(d) == r


def test_too_few_faces_names_the_levers_with_their_values():
    """The count is right but a closed gate must say what to do (issue #21: two short clips of one person)."""
    from faceswap.stages.validate import ValidationRecord, format_record
    from faceswap.validation.gate import Failure

    fails = (Failure("train_faces", "table", "enough training faces", "train_faces", "expected ≥ 50", 1,
                     ("b (train_faces = 27)",)),
             Failure("test_faces", "table", "enough test faces", "test_faces", "expected ≥ 20", 1,
                     ("b (test_faces = 4)",)))
    r = ValidationRecord(False, "fail", 60, 60, 0, 84, fails, {}, {"b": {"train": 27, "val": 10, "test": 4}},
                         None, "q.parquet", "m.json", None, {"total": 1.0})
    params = parse_params({"extract": {"every": 3}, "validate": {"min_train_faces": 50}})
    text = format_record(r, params)
    train_hint, test_hint = (ln for ln in text.splitlines() if "what to do:" in ln)
    for lever in ("add video of that person", "extract.every: 1, now 3", "extract.max_frames", "split.gap_s",
                  "split.val_fraction 0.15", "validate.min_train_faces (now 50)"):
        assert lever in train_hint, lever
    assert "split.test_fraction, now 0.25" in test_hint and "validate.min_test_faces (now 20)" in test_hint
    assert "what to do" not in format_record(r)  # without params: the plain record, as before


@pytest.mark.slow
def test_real_faces_pass_and_everything_is_written(faces_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "validate-test")
    r = _run(faces_dir, tmp_path, _params(), "fail")
    assert r.success and not r.failures, [f.key for f in r.failures]
    from dataclasses import replace

    from faceswap.stages.validate import ValidationRecord
    manifest = pd.read_parquet(faces_dir / "manifest.parquet")
    accepted = pd.read_parquet(tmp_path / "validated" / "faces.parquet")
    pd.testing.assert_frame_equal(accepted, manifest)  # every column, both splits, unchanged
    assert set(accepted["split"]) == {"train", "val", "test"}
    assert len(pd.read_parquet(tmp_path / "validated" / "quarantine.parquet")) == 0
    summary = json.loads((tmp_path / "metrics" / "validation.json").read_text())
    assert summary["success"] and summary["accepted"] == len(manifest) and summary["quarantined"] == 0
    assert set(summary["rejected_by"]) >= {"score", "relative_sharpness", "jitter", "split_leak", "near_duplicate"}
    assert ValidationRecord.from_json(summary) == replace(r, mlflow_run_id=None)  # the file is written before logging
    docs = tmp_path / "reports" / "validation"
    assert r.docs_index == str(docs / "index.html") and (docs / "index.html").is_file()
    suite_page = (docs / "expectations" / "faces.html").read_text()  # the suite, with its thresholds, is in Data Docs
    assert "crop file exists" in suite_page and "detector score high enough" in suite_page

    import mlflow

    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(r.mlflow_run_id, "validation")}
    assert {"validation/validation.json", "validation/quarantine.parquet", "validation/data_docs"} <= arts


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fail", "filter"])
def test_planted_defects_trip_exactly_their_expectation(faces_dir, tmp_path, mode):
    planted = plant_defects(faces_dir, tmp_path / "faces")
    r = _run(tmp_path / "faces", tmp_path, _params(), mode, mlflow=False)
    assert not r.success  # too few faces for b is table-level: it fails the gate in both modes
    failed = {f.key: f for f in r.failures}
    assert set(failed) == set(planted), {k: failed[k].examples for k in set(failed) - set(planted)}
    q = pd.read_parquet(tmp_path / "validated" / "quarantine.parquet")
    by_key: dict[str, set[str]] = {}
    for fid, keys in zip(q["face_id"], q["expectation"], strict=True):
        for k in keys.split(","):
            by_key.setdefault(k, set()).add(fid)
    row_planted = {k: v for k, v in planted.items() if k != "train_faces"}
    assert by_key == row_planted  # each defect only under its expectation, nothing else quarantined
    assert failed["train_faces"].level == "table" and failed["train_faces"].examples[0].startswith("b ")
    assert r.identities["b"]["train"] == 3
    assert not (tmp_path / "validated" / "faces.parquet").exists()  # a closed gate leaves no accepted list
    from faceswap.stages.validate import format_record

    text = format_record(r)
    for key, ids in planted.items():
        assert f"✗ {key}:" in text
        if len(ids) == 1:
            assert next(iter(ids)) in text
    assert "reason" in q.columns and q["reason"].str.len().min() > 10
    assert (tmp_path / "reports" / "validation" / "index.html").is_file()


@pytest.mark.slow
def test_filter_mode_quarantines_rows_and_passes(faces_dir, tmp_path):
    planted = plant_defects(faces_dir, tmp_path / "faces", too_few=False)
    res = CliRunner().invoke(app, ["validate", str(tmp_path / "faces"), *_cli_paths(tmp_path), "--mode", "filter",
                                   "--params", str(_write_params(tmp_path))])
    assert res.exit_code == 0, res.output
    bad = set().union(*planted.values())
    accepted = pd.read_parquet(tmp_path / "validated" / "faces.parquet")
    manifest = pd.read_parquet(tmp_path / "faces" / "manifest.parquet")
    assert set(accepted["face_id"]) == set(manifest["face_id"]) - bad
    assert list(accepted.columns) == list(manifest.columns)
    q = pd.read_parquet(tmp_path / "validated" / "quarantine.parquet")
    assert set(q["face_id"]) == bad and {"reason", "expectation"} <= set(q.columns)
    assert (tmp_path / "faces" / manifest.set_index("face_id").loc[next(iter(planted["image_shape"])), "path"]).exists()
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["quarantined"] == len(bad) and m["rejected_by"]["jitter"] == len(planted["jitter"])
    assert "quarantined" in res.output and "split_leak" in res.output

    # the same defects in fail mode: exit 1, nothing accepted, the quarantine still lists them
    res = CliRunner().invoke(app, ["validate", str(tmp_path / "faces"), *_cli_paths(tmp_path), "--mode", "fail",
                                   "--params", str(_write_params(tmp_path))])
    assert res.exit_code == 1 and "validation gate closed" in res.output
    assert not (tmp_path / "validated" / "faces.parquet").exists()
    assert set(pd.read_parquet(tmp_path / "validated" / "quarantine.parquet")["face_id"]) == bad


def _write_params(tmp_path):
    import yaml

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_params(mlflow=False).model_dump(by_alias=True)))
    return path


def _files(root) -> set[str]:
    return {str(f.relative_to(root)) for f in root.rglob("*") if f.is_file()}


@pytest.mark.slow
def test_a_run_writes_only_its_paths_and_no_project_file(faces_dir, tmp_path, monkeypatch):
    """No Great Expectations project in the repository: the context lives in memory, so a run rewrites no tracked
    file, two runs share no file, and each report folder gets its own Data Docs."""
    assert not (REPO / "gx").exists()  # the suite is defined in code (faceswap.validation.suite) only
    monkeypatch.chdir(REPO)  # where dvc runs the stage
    first = _run(faces_dir, tmp_path / "one", _params(), "filter", mlflow=False)
    index_one = (tmp_path / "one" / "reports" / "validation" / "index.html").read_bytes()
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    second = _run(faces_dir, tmp_path / "two", _params(), "filter", mlflow=False,
                  report=tmp_path / "two" / "docs")
    assert not any(elsewhere.iterdir())  # nothing lands in the working directory

    assert (first.success, first.accepted) == (second.success, second.accepted)
    for run, docs in ((first, "reports/validation"), (second, "docs")):
        root = tmp_path / ("one" if run is first else "two")
        assert run.docs_index == str(root / docs / "index.html")
        written = _files(root)
        assert {"validated/faces.parquet", "validated/quarantine.parquet", "metrics/validation.json",
                f"{docs}/index.html"} <= written
        assert all(f.startswith(("validated/", "metrics/", f"{docs}/")) for f in written), written
        assert len({f for f in written if f.startswith(f"{docs}/validations/")}) == 2  # this run's two results
    assert (tmp_path / "one" / "reports" / "validation" / "index.html").read_bytes() == index_one  # untouched

    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--ignored", "--", "gx"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert not [line for line in status.splitlines() if "D" not in line[:2]], status  # nothing added or modified
    assert not (REPO / "gx").exists()
