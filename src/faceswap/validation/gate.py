"""The gate itself: measure the crops, run the suites in an in-memory Great Expectations context, collect.

1. read ``<faces_dir>/manifest.parquet`` and measure the crops (:mod:`faceswap.validation.checks`);
2. open an *ephemeral* Great Expectations context (nothing on disk: no ``gx/`` project, no config file), add the
   suites built from ``params.yaml`` (:mod:`faceswap.validation.suite`), their validation definitions and
   checkpoints, and run the ``faces`` checkpoint over the measured manifest;
3. count, per identity and split, the faces no row-level expectation rejected, and run the ``identities``
   checkpoint over those counts;
4. mode ``fail``: any failed expectation closes the gate. Mode ``filter``: row-level failures are quarantined
   and only table-level failures (schema, too few faces) close it.

:func:`check_faces` returns a :class:`GateResult` in memory (the accepted rows, the quarantined rows with
``reason`` and ``expectation``, the failures); it writes nothing. :func:`build_data_docs` writes the run's Data
Docs into the folder it is given. Which files the stage writes, and where, is :mod:`faceswap.stages.validate`'s
business (``params.paths``). Great Expectations is imported only when the gate runs.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faceswap.data.manifest import MANIFEST_NAME
from faceswap.errors import FaceswapError

if TYPE_CHECKING:
    import pyarrow as pa

    from faceswap.config import Params

DOCS_SITE = "faceswap"
FACES_CHECKPOINT = "validate_faces"
IDENTITIES_CHECKPOINT = "validate_identities"


class ValidationStageError(FaceswapError, RuntimeError):
    """The gate cannot run at all (no manifest, unreadable manifest)."""


@dataclass(frozen=True)
class Failure:
    """One failed expectation."""

    key: str
    level: str  # row | table
    description: str
    column: str | None
    expected: str
    count: int  # rows (row level) or identities / 1 (table level)
    examples: tuple[str, ...] = ()  # face ids or identities, with the value found


@dataclass(frozen=True)
class GateResult:
    """What the gate decided, in memory: the stage writes the tables and the record."""

    success: bool
    mode: str
    faces: int
    expectations: int
    failures: tuple[Failure, ...]
    rejected_by: dict[str, int]  # row-level key → faces it rejected (0 for those that passed)
    identities: dict[str, dict[str, int]]  # identity → accepted train / val / test faces
    accepted: pa.Table  # the manifest's rows no row-level expectation rejected, every column unchanged
    quarantine: pa.Table  # the rejected rows + ``reason`` (readable) + ``expectation`` (keys, comma-separated)
    seconds: dict[str, float]  # measure, gx_import, gx_run (the checks; Data Docs are built afterwards)
    context: Any = field(default=None, repr=False, compare=False)  # the ephemeral GX context (Data Docs)

    @property
    def quarantined(self) -> int:
        return self.quarantine.num_rows


# --- Great Expectations context --------------------------------------------------------------------------


def _site_config(base_directory: str) -> dict:
    return {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": base_directory},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }


def _open_context(suites: dict[str, list]):
    """An ephemeral context with our data source, suites, validation definitions and checkpoints in place.

    Everything lives in memory for this run only: nothing in the repository is read or written, so two runs
    never share (or race on) a project file. The Data Docs site is added per run by :func:`build_data_docs`.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)  # no "Calculating Metrics" bars
    ds = ctx.data_sources.add_pandas("faceswap")
    checkpoints = {}
    for name, expectations in suites.items():
        batch = ds.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
        # configurations (not Expectation objects) keep the stable ids given in suite.py; GX gives a new
        # suite's expectations random ids, an update keeps ours (the same ids in every run's results)
        configs = [e.configuration for e in expectations]
        ctx.suites.add(gx.ExpectationSuite(name=name, expectations=configs))
        suite = ctx.suites.add_or_update(gx.ExpectationSuite(name=name, expectations=configs))
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
        key_col = "row" if name == "faces" else "identity"
        cp_name = FACES_CHECKPOINT if name == "faces" else IDENTITIES_CHECKPOINT
        checkpoints[name] = ctx.checkpoints.add(
            gx.Checkpoint(
                name=cp_name,
                validation_definitions=[vd],
                actions=[],  # Data Docs: build_data_docs, into the folder the stage names
                result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [key_col]},
            )
        )
    return ctx, checkpoints


def build_data_docs(result: GateResult, report_dir: str | Path) -> Path | None:
    """Write the run's Data Docs (both suites and both results) into ``report_dir``; the index, or None.

    The site is added to the run's own in-memory context, so the folder is chosen per run and no project file
    records it."""
    ctx = result.context
    if ctx is None:
        return None
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    site = _site_config(str(report_dir.resolve()) + os.sep)
    if DOCS_SITE in ctx.list_data_docs_sites():
        ctx.update_data_docs_site(DOCS_SITE, site)
    else:
        ctx.add_data_docs_site(DOCS_SITE, site)
    ctx.build_data_docs(site_names=[DOCS_SITE])
    index = report_dir / "index.html"
    return index if index.is_file() else None


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


# --- the gate ------------------------------------------------------------------------------------------


def read_manifest(faces_dir: str | Path) -> pa.Table:
    """``<faces_dir>/manifest.parquet`` (what ``align`` wrote), or a one-line error."""
    import pyarrow.parquet as pq

    path = Path(faces_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ValidationStageError(f"no manifest at {path}: run `faceswap align` first")
    try:
        return pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise ValidationStageError(f"cannot read {path}: {err}") from None


def _split_guard(params: Params) -> tuple[Callable[[float], float], str]:
    """The least time between a clip's train and held-out frames, as a function of the clip's length, and in words:
    ``validate.split_guard_s`` when set, else the gap the split keeps in such a clip (``split.gap_s``, or less in a
    short clip under ``split.blocks: auto``)."""
    from faceswap.data.split import clip_guard_s

    fixed = params.validation.split_guard_s
    if fixed is not None:
        return (lambda seconds: fixed), f"≥ {fixed:g} s"
    split = params.split
    words = f"≥ split.gap_s {split.gap_s:g} s" + (", at most 1/20 of the clip" if split.blocks == "auto" else "")
    return (lambda seconds: clip_guard_s(seconds, split)), words


def check_faces(faces_dir: str | Path, params: Params) -> GateResult:
    """Run the gate over ``<faces_dir>/manifest.parquet`` and its crops (``params.validation.mode``); see the
    module docstring. Writes nothing."""
    import pandas as pd
    import pyarrow as pa

    from faceswap.data.geometry import face_template
    from faceswap.validation.checks import measure
    from faceswap.validation.suite import FACES_SUITE, IDENTITIES_SUITE, face_expectations, identity_expectations

    t_start = time.perf_counter()
    v = params.validation
    mode = v.mode  # fail | filter (checked when params load)
    faces_dir = Path(faces_dir)
    size = params.align.size or params.base.image_size
    guard_s, guard = _split_guard(params)

    table = read_manifest(faces_dir)
    df = table.to_pandas()
    measured = measure(df, faces_dir, template=face_template(size, params.align.coverage),
                       duplicate_max_diff=v.duplicate_max_diff, guard_s=guard_s)
    t_measured = time.perf_counter()

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no usage statistics (no network here)
    import great_expectations as gx  # noqa: F401  (slow import: only in this stage)

    t_imported = time.perf_counter()
    suites = {
        FACES_SUITE: face_expectations(v, size=size, identities=params.base.identities, split_guard=guard),
        IDENTITIES_SUITE: identity_expectations(v),
    }
    ctx, checkpoints = _open_context(suites)

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
                                len(set(row_ids)) or 1, tuple(examples)))

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
                                len(rows) or 1, tuple(examples or [error])))
    t_gx = time.perf_counter()

    # 3) the verdict and the two tables (nothing is deleted: the quarantine lists every rejected row, with why)
    table_failed = any(f.level == "table" for f in failures)
    success = not failures if mode == "fail" else not table_failed
    rej_idx = np.flatnonzero(rejected)
    quarantine = table.take(pa.array(rej_idx, pa.int64()))
    quarantine = quarantine.append_column(
        "reason", pa.array(["; ".join(r for _, r in reasons[i]) for i in rej_idx], pa.string())
    ).append_column("expectation", pa.array([",".join(k for k, _ in reasons[i]) for i in rej_idx], pa.string()))
    accepted = table.take(pa.array(np.flatnonzero(~rejected), pa.int64()))

    row_keys = [e.meta["key"] for e in suites[FACES_SUITE] if e.meta.get("level") == "row"]
    rejected_by = dict.fromkeys(row_keys, 0)
    for f in failures:
        if f.level == "row":
            rejected_by[f.key] = f.count
    return GateResult(
        success=success,
        mode=mode,
        faces=n,
        expectations=sum(len(s) for s in suites.values()),
        failures=tuple(failures),
        rejected_by=rejected_by,
        identities=counts,
        accepted=accepted,
        quarantine=quarantine,
        seconds={
            "measure": round(t_measured - t_start, 3),
            "gx_import": round(t_imported - t_measured, 3),
            "gx_run": round(t_gx - t_imported, 3),
        },
        context=ctx,
    )
