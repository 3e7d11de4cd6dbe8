"""The validation gate (``faceswap validate``): run the suite, quarantine, write the outputs.

Steps:

1. read ``<faces_dir>/manifest.parquet`` and measure the crops (:mod:`faceswap.validation.checks`);
2. open the file-mode Great Expectations project (``gx/`` under ``project_dir``), write the suites,
   validation definitions and checkpoints built from ``params.yaml`` (:mod:`faceswap.validation.suite`)
   and run the ``faces`` checkpoint over the measured manifest;
3. count, per identity and split, the faces no row-level expectation rejected, and run the
   ``identities`` checkpoint over those counts;
4. mode ``fail``: any failed expectation fails the gate. Mode ``filter``: row-level failures are
   quarantined and only table-level failures (schema, too few faces) fail it. Nothing is deleted:
   ``faces.parquet`` lists the accepted rows (written only when the gate passes), ``quarantine.parquet``
   the rejected rows with ``reason`` and ``expectation``; the JSON summary and Data Docs are always written;
5. if MLflow tracking is configured, log the summary, the quarantine list and Data Docs as artifacts.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from faceswap.config import Params
from faceswap.data.manifest import MANIFEST_NAME
from faceswap.errors import FaceswapError

ACCEPTED_NAME = "faces.parquet"
QUARANTINE_NAME = "quarantine.parquet"
DOCS_SITE = "faceswap"
FACES_CHECKPOINT = "validate_faces"
IDENTITIES_CHECKPOINT = "validate_identities"


class ValidationStageError(FaceswapError, RuntimeError):
    """The gate cannot run at all (no manifest, unreadable manifest)."""


@dataclass
class Failure:
    """One failed expectation."""

    key: str
    level: str  # row | table
    description: str
    column: str | None
    expected: str
    count: int  # rows (row level) or identities / 1 (table level)
    examples: list[str] = field(default_factory=list)  # face ids or identities, with the value found


@dataclass
class ValidationResult:
    success: bool
    mode: str
    faces: int
    accepted: int
    quarantined: int
    expectations: int
    failures: list[Failure]
    rejected_by: dict[str, int]  # row-level key → faces it rejected (0 for those that passed)
    identities: dict[str, dict[str, int]]  # identity → accepted train / val faces
    accepted_path: str | None
    quarantine_path: str
    metrics_path: str | None
    docs_index: str | None
    seconds: dict[str, float]
    mlflow_run_id: str | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        d["failed"] = {f.key: {"level": f.level, "count": f.count, "examples": f.examples} for f in self.failures}
        d["failed_expectations"] = len(self.failures)
        d["accepted_fraction"] = round(self.accepted / self.faces, 4) if self.faces else 0.0
        del d["failures"]
        return d


# --- Great Expectations project ------------------------------------------------------------------------


def _site_config(base_directory: str) -> dict:
    return {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": base_directory},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }


def _open_project(project_dir: Path, report_dir: Path, suites: dict[str, list]):
    """The file-mode context with our data source, suites, validation definitions and checkpoints in place."""
    import great_expectations as gx

    ctx = gx.get_context(mode="file", project_root_dir=str(project_dir))
    bars = ctx.variables.progress_bars
    if (bars.get("globally") if isinstance(bars, dict) else getattr(bars, "globally", None)) is not False:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)  # no "Calculating Metrics" bars
        ctx.variables.save()
    base = os.path.relpath(report_dir.resolve(), Path(ctx.root_directory).resolve()) + "/"
    site = _site_config(base)
    sites = ctx.list_data_docs_sites()
    if DOCS_SITE not in sites:
        ctx.add_data_docs_site(DOCS_SITE, site)
    elif sites[DOCS_SITE] != site:
        ctx.update_data_docs_site(DOCS_SITE, site)

    try:
        ds = ctx.data_sources.get("faceswap")
    except (KeyError, ValueError, LookupError):
        ds = ctx.data_sources.add_pandas("faceswap")
    checkpoints = {}
    for name, expectations in suites.items():
        asset = ds.get_asset(name) if name in {a.name for a in ds.assets} else ds.add_dataframe_asset(name)
        batch = (
            asset.get_batch_definition("all")
            if "all" in {b.name for b in asset.batch_definitions}
            else asset.add_batch_definition_whole_dataframe("all")
        )
        # configurations (not Expectation objects) keep the stable ids given in suite.py
        suite = gx.ExpectationSuite(name=name, expectations=[e.configuration for e in expectations])
        new = name not in {x.name for x in ctx.suites.all()}
        suite = ctx.suites.add_or_update(suite)
        if new:  # GX gives a new suite's expectations random ids; an update keeps ours (stable files)
            suite = ctx.suites.add_or_update(
                gx.ExpectationSuite(name=name, expectations=[e.configuration for e in expectations])
            )
        vd = ctx.validation_definitions.add_or_update(gx.ValidationDefinition(name=name, data=batch, suite=suite))
        key_col = "row" if name == "faces" else "identity"
        cp_name = FACES_CHECKPOINT if name == "faces" else IDENTITIES_CHECKPOINT
        checkpoints[name] = ctx.checkpoints.add_or_update(
            gx.Checkpoint(
                name=cp_name,
                validation_definitions=[vd],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=[DOCS_SITE])],
                result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [key_col]},
            )
        )
    return ctx, checkpoints


# --- results -------------------------------------------------------------------------------------------


def _fmt(value) -> str:
    if isinstance(value, float | np.floating):
        return "null" if math.isnan(value) else f"{value:.4g}"
    return repr(value) if isinstance(value, str) else str(value)


def _expected_text(kwargs: dict) -> str:
    lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
    if lo is not None and hi is not None:
        return f"expected in [{_fmt(lo)}, {_fmt(hi)}]"
    if lo is not None:
        return f"expected {'>' if kwargs.get('strict_min') else '≥'} {_fmt(lo)}"
    if hi is not None:
        return f"expected {'<' if kwargs.get('strict_max') else '≤'} {_fmt(hi)}"
    if "value_set" in kwargs:
        return f"expected one of {list(kwargs['value_set'])}"
    if "type_" in kwargs:
        return f"expected type {kwargs['type_']}"
    return ""


def _collect(checkpoint_result, key_col: str) -> list[tuple[dict, list[dict], str]]:
    """(config info, unexpected rows as dicts, error message) of each failed expectation."""
    failed = []
    for vr in checkpoint_result.run_results.values():
        for er in vr.results:
            if er.success:
                continue
            cfg = er.expectation_config
            meta = dict(cfg.meta or {})
            kwargs = dict(cfg.kwargs)
            result = er.result or {}
            rows = list(result.get("unexpected_index_list") or [])
            exc = er.exception_info or {}
            error = exc.get("exception_message") if isinstance(exc, dict) and exc.get("raised_exception") else ""
            level = meta.get("level") or ("row" if rows and key_col == "row" else "table")
            if error:
                level = "table"  # it could not be evaluated at all (a missing column): not a face's fault
            info = {
                "key": meta.get("key") or f"{cfg.type}:{kwargs.get('column', '')}",
                "level": level,
                "description": cfg.description or cfg.type,
                "column": kwargs.get("column"),
                "expected": _expected_text(kwargs),
                "observed": result.get("observed_value"),
            }
            failed.append((info, rows, error or ""))
    return failed


# --- the stage -----------------------------------------------------------------------------------------


def _read_manifest_table(faces_dir: Path):
    import pyarrow.parquet as pq

    path = faces_dir / MANIFEST_NAME
    if not path.is_file():
        raise ValidationStageError(f"no manifest at {path}: run `faceswap align` first")
    try:
        return pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise ValidationStageError(f"cannot read {path}: {err}") from None


def run_validation(
    faces_dir: str | Path,
    out_dir: str | Path,
    params: Params,
    *,
    report_dir: str | Path = "reports/validation",
    metrics_path: str | Path | None = "metrics/validation.json",
    project_dir: str | Path = ".",
    mode: str | None = None,
    log_mlflow: bool | None = None,
) -> ValidationResult:
    """Validate ``<faces_dir>/manifest.parquet`` and its crops; see the module docstring.

    ``project_dir`` holds the Great Expectations project (``<project_dir>/gx``; created if missing).
    ``mode`` overrides ``params.validation.mode``. ``log_mlflow``: None follows ``validate.mlflow``,
    True/False force it on/off.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from faceswap.data.geometry import face_template
    from faceswap.validation.checks import measure
    from faceswap.validation.suite import FACES_SUITE, IDENTITIES_SUITE, face_expectations, identity_expectations

    t_start = time.perf_counter()
    v = params.validation
    mode = mode or v.mode
    if mode not in ("fail", "filter"):
        raise ValueError(f"mode must be 'fail' or 'filter', got {mode!r}")
    faces_dir, out_dir, report_dir = Path(faces_dir), Path(out_dir), Path(report_dir)
    size = params.align.size or params.base.image_size
    guard = params.split.gap_s if v.split_guard_s is None else v.split_guard_s

    table = _read_manifest_table(faces_dir)
    df = table.to_pandas()
    measured = measure(df, faces_dir, template=face_template(size, params.align.coverage),
                       duplicate_max_diff=v.duplicate_max_diff)
    t_measured = time.perf_counter()

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no usage statistics (no network here)
    import great_expectations as gx  # noqa: F401  (slow import: only in this stage)

    t_imported = time.perf_counter()
    suites = {
        FACES_SUITE: face_expectations(v, size=size, identities=params.base.identities, split_guard_s=guard),
        IDENTITIES_SUITE: identity_expectations(v),
    }
    report_dir.mkdir(parents=True, exist_ok=True)
    _, checkpoints = _open_project(Path(project_dir), report_dir, suites)

    # 1) faces: schema, per-row checks
    faces_failed = _collect(checkpoints[FACES_SUITE].run(batch_parameters={"dataframe": measured}), "row")
    n = len(measured)
    face_ids = measured["face_id"].astype(str).to_numpy() if "face_id" in measured.columns else np.arange(n).astype(str)
    reasons: dict[int, list[tuple[str, str]]] = {}
    failures: list[Failure] = []
    for info, rows, error in faces_failed:
        examples = []
        row_ids = []
        for d in rows:
            i = int(d["row"])
            value = d.get(info["column"]) if info["column"] else None
            why = f"{info['description']}: {info['column']} = {_fmt(value)} ({info['expected']})"
            if info["level"] == "row":
                reasons.setdefault(i, []).append((info["key"], why))
            row_ids.append(i)
            if len(examples) < v.examples:
                examples.append(f"{face_ids[i]} ({info['column']} = {_fmt(value)})")
        if info["level"] == "table" and not rows:
            examples = [error or f"observed {_fmt(info['observed'])}"]
        failures.append(Failure(info["key"], info["level"], info["description"], info["column"], info["expected"],
                                len(set(row_ids)) or 1, examples))

    # 2) identities: accepted faces per split (after quarantine)
    rejected = np.zeros(n, bool)
    rejected[list(reasons)] = True
    kept = measured.loc[~rejected]
    counts = {}
    for ident in params.base.identities:
        mine = kept[kept["identity"] == ident] if "identity" in kept.columns else kept.iloc[:0]
        split = mine["split"] if "split" in mine.columns else pd.Series([], dtype=object)
        counts[ident] = {s: int((split == s).sum()) for s in ("train", "val", "test")}
    ident_df = pd.DataFrame(
        {"identity": list(counts), "train_faces": [c["train"] for c in counts.values()],
         "val_faces": [c["val"] for c in counts.values()], "test_faces": [c["test"] for c in counts.values()]}
    )
    ident_failed = _collect(checkpoints[IDENTITIES_SUITE].run(batch_parameters={"dataframe": ident_df}), "identity")
    for info, rows, error in ident_failed:
        examples = [f"{d['identity']} ({info['column']} = {_fmt(d.get(info['column']))})" for d in rows]
        failures.append(Failure(info["key"], "table", info["description"], info["column"], info["expected"],
                                len(rows) or 1, examples or [error]))
    t_gx = time.perf_counter()

    # 3) the gate
    table_failed = any(f.level == "table" for f in failures)
    success = not failures if mode == "fail" else not table_failed
    out_dir.mkdir(parents=True, exist_ok=True)
    accepted_path = out_dir / ACCEPTED_NAME
    quarantine_path = out_dir / QUARANTINE_NAME
    rej_idx = np.flatnonzero(rejected)
    quarantine = table.take(pa.array(rej_idx, pa.int64()))
    quarantine = quarantine.append_column(
        "reason", pa.array(["; ".join(r for _, r in reasons[i]) for i in rej_idx], pa.string())
    ).append_column("expectation", pa.array([",".join(k for k, _ in reasons[i]) for i in rej_idx], pa.string()))
    pq.write_table(quarantine, quarantine_path)
    if success:
        pq.write_table(table.take(pa.array(np.flatnonzero(~rejected), pa.int64())), accepted_path)
    elif accepted_path.exists():
        accepted_path.unlink()  # a failed gate leaves no accepted list that training could read by mistake

    row_keys = [e.meta["key"] for e in suites[FACES_SUITE] if e.meta.get("level") == "row"]
    rejected_by = dict.fromkeys(row_keys, 0)
    for f in failures:
        if f.level == "row":
            rejected_by[f.key] = f.count
    docs_index = report_dir / "index.html"
    result = ValidationResult(
        success=success,
        mode=mode,
        faces=n,
        accepted=int(n - rejected.sum()),
        quarantined=int(rejected.sum()),
        expectations=sum(len(s) for s in suites.values()),
        failures=failures,
        rejected_by=rejected_by,
        identities=counts,
        accepted_path=str(accepted_path) if success else None,
        quarantine_path=str(quarantine_path),
        metrics_path=str(metrics_path) if metrics_path else None,
        docs_index=str(docs_index) if docs_index.exists() else None,
        seconds={
            "measure": round(t_measured - t_start, 3),
            "gx_import": round(t_imported - t_measured, 3),
            "gx_run": round(t_gx - t_imported, 3),
            "total": round(time.perf_counter() - t_start, 3),
        },
    )
    if metrics_path:
        Path(metrics_path).parent.mkdir(parents=True, exist_ok=True)
        Path(metrics_path).write_text(json.dumps(result.to_json(), indent=2) + "\n")
    if log_mlflow or (log_mlflow is None and v.mlflow):
        result.mlflow_run_id = log_to_mlflow(result, report_dir, params)
    return result


def log_to_mlflow(result: ValidationResult, report_dir: Path, params: Params) -> str:
    """Log the summary, the quarantine list and Data Docs to a run ``validate`` of the project experiment (the
    store and experiment of :mod:`faceswap.tracking`, like every stage), or to the run ``MLFLOW_RUN_ID`` names."""
    import tempfile

    from faceswap.tracking import open_run

    given = os.environ.get("MLFLOW_RUN_ID")
    tracker = open_run(params, "validate", given, {"faceswap.kind": "validation"})
    tracker.log_metrics(
        {
            "validation_faces": result.faces,
            "validation_accepted": result.accepted,
            "validation_quarantined": result.quarantined,
            "validation_failed_expectations": len(result.failures),
            "validation_success": float(result.success),
            **{f"validation_rejected_{k}": c for k, c in result.rejected_by.items()},
        },
        step=0,
    )
    with tempfile.TemporaryDirectory() as tmp:
        summary = Path(tmp) / "validation.json"
        summary.write_text(json.dumps(result.to_json(), indent=2) + "\n")
        tracker.log_artifact(summary, "validation")
    tracker.log_artifact(result.quarantine_path, "validation")
    if report_dir.is_dir():
        tracker.log_artifacts(report_dir, "validation/data_docs")
    run_id = tracker.run_id
    if run_id != given:  # our own run ends here; a given one belongs to whoever started it
        tracker.end()
    return run_id


def format_summary(r: ValidationResult) -> str:
    verdict = "PASSED" if r.success else "FAILED"
    lines = [
        f"validate ({r.mode} mode): {verdict}: {r.faces} faces, {r.accepted} accepted, {r.quarantined} quarantined;"
        f" {len(r.failures)} of {r.expectations} expectations failed ({r.seconds['total']:.1f} s)"
    ]
    for f in r.failures:
        unit = "rows" if f.level == "row" else ("identities" if f.key.endswith("_faces") else "table")
        action = "quarantined" if f.level == "row" and r.mode == "filter" else "fails the stage"
        lines.append(f"  ✗ {f.key}: {f.count} {unit} ({action}): {f.description}, {f.expected}")
        for ex in f.examples:
            lines.append(f"      {ex}")
    idents = ", ".join(f"{i}: train {c['train']}, val {c['val']}, test {c.get('test', 0)}"
                       for i, c in r.identities.items())
    lines.append(f"  accepted per identity: {idents}")
    if r.accepted_path:
        lines.append(f"  accepted faces → {r.accepted_path}")
    lines.append(f"  quarantine → {r.quarantine_path}")
    if r.docs_index:
        lines.append(f"  Data Docs → {r.docs_index}")
    if r.mlflow_run_id:
        lines.append(f"  logged to MLflow run {r.mlflow_run_id}")
    return "\n".join(lines)
