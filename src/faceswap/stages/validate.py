"""Stage ``validate``: the Great Expectations gate between ``align`` and training.

Reads ``paths.faces`` (``manifest.parquet`` and the crops ``align`` wrote) and runs the gate
(:func:`faceswap.validation.gate.check_faces`; the checks are listed in :mod:`faceswap.validation.suite`, their
thresholds in ``params.yaml`` → ``validate``). Writes:

- ``paths.quarantine``: the rejected rows with ``reason`` and ``expectation`` (always);
- ``paths.accepted``: the accepted rows, every column unchanged (only when the gate passes; a closed gate removes
  an older one, so training never reads a stale list);
- ``paths.validation_report``: the run's Data Docs (HTML), always;
- ``paths.validation_metrics``: the :class:`ValidationRecord` (DVC metrics), always;

and, when ``validate.mlflow`` is on, logs the record, the quarantine and Data Docs to a run ``validate`` of the
project experiment (or to the run ``MLFLOW_RUN_ID`` names). Nothing outside these paths is written: the Great
Expectations context lives in memory for the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceswap.files import atomic_write, write_json
from faceswap.validation.gate import Failure, ValidationStageError, build_data_docs, check_faces

if TYPE_CHECKING:
    import pyarrow as pa

    from faceswap.config import Params


@dataclass(frozen=True)
class ValidationRecord:
    """The gate's verdict and counts: ``paths.validation_metrics`` (DVC metrics) and the MLflow summary."""

    success: bool
    mode: str
    faces: int
    accepted: int
    quarantined: int
    expectations: int
    failures: tuple[Failure, ...]
    rejected_by: dict[str, int]  # row-level key → faces it rejected (0 for those that passed)
    identities: dict[str, dict[str, int]]  # identity → accepted train / val / test faces
    accepted_path: str | None  # None: the gate is closed and no accepted list exists
    quarantine_path: str
    metrics_path: str
    docs_index: str | None
    seconds: dict[str, float]
    mlflow_run_id: str | None = None  # set after the metrics file is written (the file holds null)

    def to_json(self) -> dict[str, Any]:
        """The metrics file's layout: the fields, with ``failures`` as ``failed`` (key → level, count,
        examples, description, column, expected), plus ``failed_expectations`` and ``accepted_fraction``."""
        d = asdict(self)
        d["failed"] = {f.key: {"level": f.level, "count": f.count, "examples": list(f.examples),
                               "description": f.description, "column": f.column, "expected": f.expected}
                       for f in self.failures}
        d["failed_expectations"] = len(self.failures)
        d["accepted_fraction"] = round(self.accepted / self.faces, 4) if self.faces else 0.0
        del d["failures"]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], source: str = "validation record") -> ValidationRecord:
        names = [f.name for f in fields(cls) if f.name != "failures"]
        missing = [n for n in [*names, "failed"] if n not in d and n != "mlflow_run_id"]
        if missing:
            raise ValidationStageError(f"{source} lacks {', '.join(missing)} (written by an older version?); "
                                       "rerun `dvc repro validate`")
        failures = tuple(
            Failure(key, f["level"], f.get("description", ""), f.get("column"), f.get("expected", ""), f["count"],
                    tuple(f.get("examples", ())))
            for key, f in d["failed"].items()
        )
        return cls(**{n: d[n] for n in names if n in d}, failures=failures)


def _write_parquet(table: pa.Table, path: str | Path) -> None:
    import pyarrow.parquet as pq

    atomic_write(path, lambda f: pq.write_table(table, f))


def run(params: Params) -> ValidationRecord:
    """Validate ``paths.faces``; write the quarantine, the accepted faces (gate open), Data Docs and the record;
    log to MLflow when ``validate.mlflow``."""
    paths = params.paths
    t_start = time.perf_counter()
    gate = check_faces(paths.faces, params)
    t_docs = time.perf_counter()
    docs_index = build_data_docs(gate, paths.validation_report)
    docs_s = time.perf_counter() - t_docs

    _write_parquet(gate.quarantine, paths.quarantine)
    if gate.success:
        _write_parquet(gate.accepted, paths.accepted)
    else:
        with contextlib.suppress(FileNotFoundError):
            Path(paths.accepted).unlink()  # a closed gate leaves no accepted list that training could read

    record = ValidationRecord(
        success=gate.success,
        mode=gate.mode,
        faces=gate.faces,
        accepted=gate.faces - gate.quarantined,
        quarantined=gate.quarantined,
        expectations=gate.expectations,
        failures=gate.failures,
        rejected_by=gate.rejected_by,
        identities=gate.identities,
        accepted_path=paths.accepted if gate.success else None,
        quarantine_path=paths.quarantine,
        metrics_path=paths.validation_metrics,
        docs_index=str(docs_index) if docs_index else None,
        seconds={**gate.seconds, "gx_run": round(gate.seconds["gx_run"] + docs_s, 3),
                 "total": round(time.perf_counter() - t_start, 3)},
    )
    write_json(paths.validation_metrics, record.to_json())
    if params.validation.mlflow:
        record = replace(record, mlflow_run_id=log_to_mlflow(record, Path(paths.validation_report), params))
    return record


def log_to_mlflow(record: ValidationRecord, report_dir: Path, params: Params) -> str:
    """Log the record, the quarantine list and Data Docs to a run ``validate`` of the project experiment (the
    store and experiment of :mod:`faceswap.tracking`, like every stage), or to the run ``MLFLOW_RUN_ID`` names."""
    from faceswap.tracking import open_run

    given = os.environ.get("MLFLOW_RUN_ID")
    tracker = open_run(params, "validate", given, {"faceswap.kind": "validation"})
    tracker.log_metrics(
        {
            "validation_faces": record.faces,
            "validation_accepted": record.accepted,
            "validation_quarantined": record.quarantined,
            "validation_failed_expectations": len(record.failures),
            "validation_success": float(record.success),
            **{f"validation_rejected_{k}": c for k, c in record.rejected_by.items()},
        },
        step=0,
    )
    with tempfile.TemporaryDirectory() as tmp:
        summary = Path(tmp) / "validation.json"
        summary.write_text(json.dumps(record.to_json(), indent=2) + "\n")
        tracker.log_artifact(summary, "validation")
    tracker.log_artifact(record.quarantine_path, "validation")
    if report_dir.is_dir():
        tracker.log_artifacts(report_dir, "validation/data_docs")
    run_id = tracker.run_id
    if run_id != given:  # our own run ends here; a given one belongs to whoever started it
        tracker.end()
    return run_id


def too_few_faces_levers(key: str, params: Params) -> str:
    """What a user can change when an identity has too few faces in a split (the gate's count is right, but a
    closed gate should say what to do): the levers, with their current values."""
    ex, sp, v = params.extract, params.split, params.validation
    held_out = f"split.val_fraction {sp.val_fraction:g} + split.test_fraction {sp.test_fraction:g}"
    gaps = f"split.gap_s {sp.gap_s:g} s before each held-out part, × split.blocks {sp.blocks}" + (
        "; split.blocks: auto fits both to each clip" if sp.blocks != "auto" else "")
    more_video = (f"add video of that person; keep more frames (extract.every: 1, now {ex.every}; extract.max_frames:"
                  f" null, now {ex.max_frames})")
    if key == "train_faces":
        return (f"{more_video}; hold out less of each clip ({held_out}) or drop fewer frames at the split "
                f"({gaps}; a short clip loses most to these); or lower validate.min_train_faces (now "
                f"{v.min_train_faces}) if fewer faces are enough")
    split, floor = ("val", v.min_val_faces) if key == "val_faces" else ("test", v.min_test_faces)
    return (f"{more_video}; or give the {split} split a larger share (split.{split}_fraction, now "
            f"{getattr(sp, f'{split}_fraction'):g}); or lower validate.min_{split}_faces (now {floor})")


def format_record(r: ValidationRecord, params: Params | None = None) -> str:
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
        if params is not None and f.key in ("train_faces", "val_faces", "test_faces"):
            lines.append(f"    what to do: {too_few_faces_levers(f.key, params)}")
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


def closed_line(r: ValidationRecord, report_dir: str) -> str:
    """The one line the CLI fails with when the gate is closed."""
    why = "failed expectations" if r.mode == "fail" else "table-level expectations failed"
    return f"validation gate closed ({r.mode} mode: {why}); see {r.quarantine_path} and {report_dir}"
