"""Evaluation of real tiny models on real face crops, MLflow logging, registration and the pyfunc.

Everything is real: LPIPS-alex weights, MTCNN, an sqlite MLflow store and artifacts in tmp_path, and
models saved through ``faceswap.checkpoint.save_checkpoint`` as the training stage writes them.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest

from faceswap.evaluation.metrics import landmark_errors
from faceswap.names import EVAL_METRICS
from faceswap.pictures import evenly_spaced, flattest_window

from ._eval_fixtures import eval_params, make_face_set, make_identity_reference, train_tiny
from .conftest import repo_paths

VARIANTS = ("convtranspose", "resize_nearest")


def test_evenly_spaced_and_landmark_failures_count():
    assert evenly_spaced(10, None).tolist() == list(range(10))
    assert evenly_spaced(10, 3).tolist() == [0, 4, 9]
    src = np.array([[10, 10], [20, 10], [15, 15], [11, 20], [19, 20]], float)
    le = landmark_errors([src, src, None, src], [src + np.array([1.0, 0.0]), None, src, src])
    assert le["checked"] == 3 and le["failures"] == 1 and le["source_misses"] == 1
    assert le["failure_rate"] == pytest.approx(1 / 3)
    assert le["nme"] == pytest.approx((0.1 + 0.0) / 2)  # 1 px off at a 10 px inter-ocular distance, and exact
    assert landmark_errors([None], [None])["failure_rate"] is None


def test_flattest_window_finds_the_flat_patch():
    rng = np.random.default_rng(0)
    im = rng.integers(0, 255, (64, 64, 3)).astype(np.uint8)
    im[30:50, 20:40] = 128
    y, x = flattest_window(im, 16)
    assert 30 <= y <= 34 and 20 <= x <= 24


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Faces, two tiny untrained models (one with a pre-made MLflow run in run.json) and a tracking store."""
    import mlflow

    root = tmp_path_factory.mktemp("eval")
    make_face_set(root, train=4, val=2, test=10)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("faceswap", artifact_location=(root / "mlruns").as_uri())
    run = client.create_run(exp, run_name="resize_nearest-train")
    train_tiny(root, "convtranspose", run_json={"tracking_uri": uri})
    train_tiny(root, "resize_nearest", run_json={"tracking_uri": uri, "mlflow_run_id": run.info.run_id,
                                                 "mlflow_experiment_id": exp})
    return {"root": root, "uri": uri, "train_run": run.info.run_id}


@pytest.fixture(scope="module")
def evaluated(world):
    from faceswap.config import MlflowParams
    from faceswap.stages import evaluate

    root = world["root"]
    params = eval_params(root, mlflow=True, landmark_faces=4)
    make_identity_reference(root, params)
    params = params.model_copy(update={"mlflow": MlflowParams(tracking_uri=world["uri"])})
    # Untrained models: convtranspose's swaps carry a lattice (excess ≈ 0.65–0.8), resize_nearest's none (0.0);
    # untrained swaps carry no identity, so only the grid is gated here (at 0.5, between the two).
    params = params.model_copy(update={
        "model": params.model.model_copy(update={"variants": VARIANTS}),
        "registry": params.registry.model_copy(update={"gates": {"swap_checkerboard_excess": 0.5}}),
    })
    results = {v: evaluate.run(params, v) for v in VARIANTS}
    return {**world, "params": params, "results": results}


@pytest.mark.slow
def test_metrics_json_has_every_key_in_sane_ranges(evaluated):
    root = evaluated["root"]
    for v in VARIANTS:
        m = json.loads((root / "metrics" / f"{v}.json").read_text())
        assert m["variant"] == v
        assert set(EVAL_METRICS) <= set(m), set(EVAL_METRICS) - set(m)
        assert m["faces_a"] == m["faces_b"] == 10
        for k in ("recon_lpips", "cycle_lpips", "recon_ssim"):
            assert 0.0 < m[k] < 1.0, (v, k, m[k])
        assert 3.0 < m["recon_psnr"] < 40.0
        assert 0.0 <= m["landmark_failure_rate"] <= 1.0
        assert m["landmark_source_misses"] == 0  # MTCNN finds every real held-out face
        worse = max(m["swap_checkerboard_excess_a2b"], m["swap_checkerboard_excess_b2a"])
        assert m["swap_checkerboard_excess"] == worse
        for pic in ("preview.png", "zoom.png", "spectrum.png"):
            assert (root / "reports" / v / pic).stat().st_size > 1000
        rec = json.loads((root / "reports" / "evaluations" / f"{v}.json").read_text())
        assert len(rec["per_image"]["0"]["recon_lpips_a"]) == 10 and rec["eval_fingerprint"]
        assert rec["seeds"] == [0] and m["seeds"] == 1
        # identity transfer is measured in both directions against centroids of the training crops; real test
        # faces sit nearer their own centroid (the metric works on these crops)
        assert m["truth_identity_success"] == 1.0
        for d in ("a2b", "b2a"):
            assert 0.0 <= m[f"swap_identity_success_{d}"] <= 1.0 and m[f"swap_identity_distance_{d}"] > 0.0
            assert len(rec["per_image"]["0"][f"swap_identity_success_{d}"]) == 10
            # verified needs the success *and* the calibrated floor; untrained swaps are nobody: never verified
            assert m[f"swap_identity_verified_{d}"] == 0.0 <= m[f"swap_identity_success_{d}"]
            assert m[f"swap_identity_distance_{d}"] > m["identity_threshold"] + 0.2
        # truth, recon and swap distances on one footing: real faces sit within the threshold on average, an
        # untrained model's reconstructions far beyond it; each per-face metric carries its bootstrap CI
        ident = json.loads((root / "metrics" / "identity.json").read_text())
        assert m["identity_threshold"] == ident["verify_threshold"]
        assert m["truth_identity_distance"] < m["identity_threshold"] < m["recon_identity_distance"] - 0.2
        for k in ("swap_identity_verified", "truth_identity_distance", "recon_identity_distance"):
            assert rec["estimates"][k]["kind"] == "bootstrap" and rec["estimates"][k]["faces"] == 20, k
            assert len(rec["per_image"]["0"][f"{k}_{'a2b' if k.startswith('swap') else 'a'}"]) == 10
        # expression and pose (metrics/expression.py): untrained swaps and reconstructions are no face, so their
        # landmarks mostly cannot be fitted, and what is fitted does not follow the source
        assert m["swap_expression_unfitted"] > 0.5, m["swap_expression_unfitted"]
        assert -1.0 <= m["swap_expression_corr"] <= 1.0 and abs(m["recon_expression_corr"]) < 0.5
        assert m["swap_expression_corr"] == pytest.approx((m["swap_expression_corr_a2b"]
                                                           + m["swap_expression_corr_b2a"]) / 2)
        from faceswap.stages.evaluate import format_record

        line = next(x for x in format_record(evaluated["results"][v], evaluated["params"]).splitlines()
                    if x.strip().startswith("identity"))
        assert all(w in line for w in ("truth", "recon", "swap", "verified"))
        # every reported number carries its 95% interval (one seed: over the test faces only)
        for k in ("recon_lpips", "recon_psnr", "recon_ssim", "cycle_lpips"):
            assert m[f"{k}_ci_lo"] <= m[k] <= m[f"{k}_ci_hi"] and m[f"{k}_ci_lo"] < m[f"{k}_ci_hi"], k
            assert rec["estimates"][k]["kind"] == "bootstrap" and rec["estimates"][k]["faces"] == 20
    # The seed's claim, measured: transposed conv leaves a grid that resize-then-convolve does not.
    conv = evaluated["results"]["convtranspose"].metrics
    near = evaluated["results"]["resize_nearest"].metrics
    assert {type(r).__name__ for r in evaluated["results"].values()} == {"EvaluationRecord"}
    assert conv["recon_checkerboard_excess"] > near["recon_checkerboard_excess"] + 0.1
    assert conv["swap_checkerboard_excess"] > near["swap_checkerboard_excess"] + 0.1
    assert conv["recon_checkerboard_image"] > near["recon_checkerboard_image"]  # per image too
    # the flat-field probe reads the same lattice where no face texture can hide it, and none from resize-conv
    assert conv["flat_grid_score"] > 0.3 and near["flat_grid_score"] < 0.02
    assert conv["flat_lattice_share"] > 100 * near["flat_lattice_share"]
    assert conv["flat_grid_score"] == max(conv[f"flat_grid_score_{i}"] for i in ("skin", "grey", "mean_code"))
    # Same faces, same settings → same fingerprint (the registry compares only such evaluations).
    fps = {json.loads((root / "reports" / "evaluations" / f"{v}.json").read_text())["eval_fingerprint"]
           for v in VARIANTS}
    assert len(fps) == 1


@pytest.mark.slow
def test_logged_into_the_seed_runs_and_a_variant_summary_run(evaluated):
    import mlflow

    client = mlflow.MlflowClient(evaluated["uri"])
    # the seed's own numbers go into its training run (named in run.json) ...
    seed_run = client.get_run(evaluated["train_run"])
    assert seed_run.data.metrics["eval/recon_lpips"] > 0
    # ... and the variant's summary (mean ± CI, pictures) into a run named after the variant, its parent
    near = evaluated["results"]["resize_nearest"].mlflow.__dict__
    assert near["run_id"] != evaluated["train_run"]
    assert seed_run.data.tags["mlflow.parentRunId"] == near["run_id"]
    conv = evaluated["results"]["convtranspose"].mlflow.__dict__
    for v, where in (("resize_nearest", near), ("convtranspose", conv)):
        run = client.get_run(where["run_id"])
        assert run.info.run_name == v and run.data.tags["variant"] == v
        m = run.data.metrics
        assert m["eval/recon_lpips_ci_lo"] <= m["eval/recon_lpips"] <= m["eval/recon_lpips_ci_hi"]
        assert "eval/swap_checkerboard_excess" in m
        names = {a.path for a in client.list_artifacts(where["run_id"], "evaluation")}
        assert {"evaluation/preview.png", "evaluation/zoom.png", "evaluation/spectrum.png"} <= names
        assert f"evaluation/{v}.json" in names  # the evaluation record itself
        # the UI's Dataset column: the accepted manifest it was measured on, by its DVC md5, in context evaluation
        (inp,) = run.inputs.dataset_inputs
        from faceswap.files import file_digest

        assert inp.dataset.digest == file_digest(evaluated["params"].paths.accepted)
        assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "evaluation"


@pytest.mark.slow
def test_register_champion_challenger_and_pyfunc(evaluated):
    import mlflow
    import pandas as pd

    from faceswap.imageio import read_rgb
    from faceswap.serving.pyfunc import encode_png
    from faceswap.stages import evaluate, register

    def register_best():
        return register.run(params).to_json()

    root, params, uri = evaluated["root"], evaluated["params"], evaluated["uri"]
    out, summary = Path(params.paths.register_record), Path(params.paths.summary)

    # 1. First registration: convtranspose fails the grid gate, resize_nearest wins and becomes champion.
    rec = register_best()
    assert rec["variant"] == "resize_nearest" and rec["version"] == "1"
    assert rec["alias"] == "champion" and rec["champion_changed"] and rec["champion_version"] == "1"
    assert rec["run_id"] == evaluated["results"]["resize_nearest"].mlflow.run_id  # the variant's summary run
    assert json.loads(out.read_text())["candidates"][0]["variant"] == "convtranspose"
    text = summary.read_text()
    assert "**resize_nearest**" in text and "no (the swaps carry a checkerboard grid: swap_checkerboard_excess" in text
    client = mlflow.MlflowClient(uri)
    mv = client.get_model_version("faceswap", "1")
    assert mv.tags["variant"] == "resize_nearest" and mv.tags["data_version"] == "test-data"
    assert mv.tags["git_commit"] == "0" * 40 and float(mv.tags["metric.recon_lpips"]) > 0

    # 2. Same winner again: not registered twice, champion unchanged.
    rec = register_best()
    assert rec["version"] == "1" and not rec["champion_changed"] and "not registered again" in rec["reason"]
    assert rec["alias"] == "champion" and "already holds the champion alias" in rec["alias_reason"]

    # 3. A retrained resize_nearest that is worse: new version, challenger; the champion stays.
    train_tiny(root, "resize_nearest", init_seed=1, run_json={"tracking_uri": uri})
    evaluate.run(params, "resize_nearest")
    path = root / "reports" / "evaluations" / "resize_nearest.json"
    record = json.loads(path.read_text())
    champ_lpips = float(mv.tags["metric.recon_lpips"])
    def plant(v: float) -> None:  # a planted recon_lpips with a narrow interval: clearly better or worse
        record["metrics"]["recon_lpips"] = v
        record["estimates"]["recon_lpips"] = {"mean": v, "ci_lo": v - 0.001, "ci_hi": v + 0.001}
        path.write_text(json.dumps(record))

    plant(champ_lpips + 0.05)
    rec = register_best()
    assert rec["version"] == "2" and rec["alias"] == "challenger" and not rec["champion_changed"]
    assert rec["champion_version"] == "1" and "champion version 1 stays" in rec["alias_reason"]
    assert str(client.get_model_version_by_alias("faceswap", "champion").version) == "1"

    # 4. The same version measured better (planted): the champion moves to it.
    plant(champ_lpips - 0.05)
    rec = register_best()
    assert rec["version"] == "2" and rec["alias"] == "champion" and rec["champion_changed"]
    assert str(client.get_model_version_by_alias("faceswap", "champion").version) == "2"
    assert "challenger" not in client.get_registered_model("faceswap").aliases  # v2 was challenger: cleared

    # 4b. Measured on other faces (a planted fingerprint) and worse: the records cannot compare it with the champion
    # and register runs no evaluation code, so the new version, which passes the gates, takes the alias, saying why.
    record["eval_fingerprint"] = "0" * 64
    plant(champ_lpips + 0.05)
    rec = register_best()
    assert rec["version"] == "3" and rec["alias"] == "champion" and rec["champion_changed"]
    assert "champion version 2 was measured on other test faces" in rec["alias_reason"]

    # 5. The champion loads by alias and swaps a real held-out face; a bad row gets its own error.
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/faceswap@champion")
    assert model.metadata.signature.inputs.input_names() == ["image", "direction", "aligned"]
    face = read_rgb(root / "faces" / "a" / "0010.png")
    req = pd.DataFrame({"image": [encode_png(face), "%%%", encode_png(face), encode_png(face[:, :40])],
                        "direction": ["a2b", "a2b", "b2a", "b2a"], "aligned": [True, True, False, True]})
    res = model.predict(req)
    assert len(res) == 4
    assert pd.isna(res.loc[0, "error"]) and res.loc[0, "identity"] == "b" and res.loc[0, "variant"] == "resize_nearest"
    from PIL import Image

    swapped = np.asarray(Image.open(io.BytesIO(base64.b64decode(res.loc[0, "image"]))))
    assert swapped.shape == (64, 64, 3) and swapped.std() > 1
    assert "base64" in res.loc[1, "error"] and pd.isna(res.loc[1, "image"])
    assert res.loc[2, "error"] is None and res.loc[2, "aligned"] is False  # a full frame: served, face or not
    assert (res.loc[2, "width"], res.loc[2, "height"]) == (64, 64) and res.loc[2, "face_found"] in (True, False)
    assert "square" in res.loc[3, "error"]


@pytest.mark.slow
def test_cli_register_with_nothing_qualifying(evaluated, tmp_path):
    import shutil

    import yaml
    from typer.testing import CliRunner

    from faceswap.cli import app

    reports = tmp_path / "reports"
    shutil.copytree(evaluated["root"] / "reports" / "evaluations", reports / "evaluations")
    params = tmp_path / "params.yaml"
    out = tmp_path / "register.json"
    paths = repo_paths(tmp_path, evaluations=str(reports / "evaluations"), register_record=str(out),
                       summary=str(tmp_path / "summary.md"))
    params.write_text(yaml.safe_dump({"model": {"variants": list(VARIANTS)}, "paths": paths,
                                      "register": {"gates": {"swap_checkerboard_excess": -1.0}, "fallback": False}}))
    r = CliRunner().invoke(app, ["register", "--params", str(params)])
    assert r.exit_code == 0, r.output
    assert "nothing registered" in r.output
    rec = json.loads(out.read_text())
    assert rec["version"] is None and "no variant qualifies" in rec["reason"]

    # fallback: the best primary is registered as @unqualified, and the champion alias is never given to it
    params.write_text(yaml.safe_dump({
        "model": {"variants": list(VARIANTS)}, "paths": paths, "mlflow": {"tracking_uri": evaluated["uri"]},
        "register": {"gates": {"swap_checkerboard_excess": -1.0}, "fallback": True, "model_name": "fallback-model"}}))
    r = CliRunner().invoke(app, ["register", "--params", str(params)])
    assert r.exit_code == 0, r.output
    rec = json.loads(out.read_text())
    assert rec["version"] == "1" and rec["alias"] == "unqualified" and rec["champion_version"] is None
    assert "FALLBACK" in rec["reason"] and "never as champion" in rec["alias_reason"]
    assert "models:/fallback-model@unqualified" in r.output and "no champion yet" in r.output
    assert "no champion yet" in (tmp_path / "summary.md").read_text()
    import mlflow

    assert set(mlflow.MlflowClient(evaluated["uri"]).get_registered_model("fallback-model").aliases) == {"unqualified"}
    from faceswap.aliases import alias_problem

    problem = alias_problem("models:/fallback-model@champion", evaluated["uri"])
    assert "has no @champion" in problem and "@unqualified → version 1" in problem
    assert "--model models:/fallback-model@unqualified" in problem
    assert alias_problem("models:/fallback-model@unqualified", evaluated["uri"]) is None
    assert "no registered model 'nobody'" in alias_problem("models:/nobody@champion", evaluated["uri"])
    shutil.copyfile(evaluated["root"] / "faces" / "a" / "0010.png", tmp_path / "x.png")
    r = CliRunner().invoke(app, ["swap", str(tmp_path / "x.png"), "-o", str(tmp_path / "y.png"), "--params",
                                 str(params), "--model", "models:/fallback-model@champion"])
    assert r.exit_code != 0 and "has no @champion" in r.output
    r = CliRunner().invoke(app, ["evaluate", "--variant", "nope", "--params", str(params)])
    assert r.exit_code == 2 and "unknown variant" in r.output
