"""Markdown for the Prefect artifacts a user sees after each run, built from the pipeline's own files.

The builders are plain functions of the repository folder (no Prefect import): a file that is missing (a run
that skipped registering, a stage that failed) is reported in the artifact instead of raising.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from faceswap.tables import markdown_table
from faceswap.tracking import ui_url

KEYS = {  # Prefect artifact keys (lower case, digits, dashes): each run adds a version under the same key
    "metrics": "faceswap-variant-metrics",
    "validation": "faceswap-validation",
    "champion": "faceswap-champion",
    "mlflow": "faceswap-mlflow-runs",
    "stages": "faceswap-stages",
}


def _read_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(content, None) or (None, why it is unusable)."""
    if not path.is_file():
        return None, f"`{path.as_posix()}` does not exist"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return None, f"`{path.as_posix()}` is unreadable: {err}"
    if not isinstance(data, dict):
        return None, f"`{path.as_posix()}` does not hold a JSON object"
    return data, None


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "—" if v is None else ("yes" if v else "no")
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _scalars(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into dotted keys; keep scalars only."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_scalars(v, f"{prefix}{k}."))
        elif v is None or isinstance(v, str | int | float | bool):
            out[f"{prefix}{k}"] = v
    return out


def _table(header: list[str], rows: Iterable[list[Any]]) -> str:
    return markdown_table(header, ([_fmt(c) for c in row] for row in rows))


def variant_metrics_markdown(root: Path, files: dict[str, str | Path]) -> str:
    """Every variant's held-out metrics side by side (``files``: variant → its metrics file); a variant without
    a metrics file says so."""
    found, missing = {}, {}
    for v, path in files.items():
        data, why = _read_json(root / path)
        if data is None:
            missing[v] = why
        else:
            found[v] = {k: x for k, x in _scalars(data).items() if k != "variant"}
    out = ["# Held-out metrics per variant", ""]
    if found:
        columns = list(dict.fromkeys(k for m in found.values() for k in m))
        out.append(_table(["variant", *columns], ([v, *(found[v].get(c) for c in columns)] for v in found)))
    else:
        out.append("No variant has evaluation metrics yet.")
    if missing:
        out += ["", "Not evaluated in this workspace (stage excluded, skipped or failed):", ""]
        out += [f"- **{v}**: {why}" for v, why in missing.items()]
    return "\n".join(out) + "\n"


def validation_markdown(root: Path, path: str) -> str:
    """The validation gate's verdict and counts."""
    data, why = _read_json(root / path)
    if data is None:
        return f"# Validation summary\n\nNo validation summary: {why} (the validate stage has not run here).\n"
    rows = [[k, v] for k, v in _scalars(data).items() if not k.endswith("_path")]
    verdict = {True: "**passed**", False: "**failed**"}.get(data.get("success"), "unknown")
    return f"# Validation summary\n\nGate {verdict}.\n\n" + _table(["check", "value"], rows) + "\n"


def _mlflow_ui(tracking_uri: str | None, ui: str | None) -> str | None:
    base = ui or os.environ.get("MLFLOW_UI_URL")
    if not base and tracking_uri and tracking_uri.startswith(("http://", "https://")):
        base = tracking_uri  # an MLflow tracking server serves its UI at the same address
    return base.rstrip("/") if base else None


def champion_markdown(root: Path, path: str | Path, ui: str | None = None) -> str:
    """Which version holds ``champion`` now, whether this run moved it, and why (from the register record)."""
    from faceswap.registry import RegisterRecord

    data, why = _read_json(root / path)
    if data is None:
        return (f"# Champion\n\nNo register record: {why}. Registering was skipped (register=false) or the "
                "register stage has not run; the champion alias was not touched by this run.\n")
    try:
        rec = RegisterRecord.from_json(data)
    except TypeError as err:
        return f"# Champion\n\nThe register record {path} is not one this version writes ({err}); rerun register.\n"
    name = rec.model_name
    out = ["# Champion", ""]
    if rec.version:
        moved = "**moved** to this version" if rec.champion_changed else "unchanged"
        champ = (f"champion is version **{rec.champion_version}** ({moved})" if rec.champion_version
                 else "**no champion yet**: no registered version has passed the gates")
        out.append(f"`{name}` version **{rec.version}** ({rec.variant}) registered as `@{rec.alias}`; {champ}.")
        base = _mlflow_ui(rec.tracking_uri, ui)
        uri = f"models:/{name}@{rec.load_alias}"
        out += ["", f"- load: `{uri}`" + (f" (tracking `{rec.tracking_uri}`)" if rec.tracking_uri else "")]
        if base and rec.champion_version:
            out.append(f"- model page: [{name} v{rec.champion_version}]"
                       f"({base}/#/models/{name}/versions/{rec.champion_version})")
    else:
        out.append(f"Nothing registered by the last register run; champion unchanged "
                   f"(version {rec.champion_version or '—'}).")
    out += ["", f"Reason: {rec.reason or '—'}"]
    if rec.alias_reason:
        out.append(f"Alias: {rec.alias_reason}")
    if rec.candidates:
        metric_keys = list(dict.fromkeys(k for c in rec.candidates for k in c.metrics))
        out += ["", _table(["variant", "qualifies", "rank", *metric_keys, "note"],
                           ([c.variant, c.qualifies, c.rank, *(c.metrics.get(k) for k in metric_keys), c.note]
                            for c in rec.candidates))]
    return "\n".join(out) + "\n"


def mlflow_runs_markdown(root: Path, files: dict[str, str | Path], ui: str | None = None) -> str:
    """Each variant's MLflow run (``files``: variant → its evaluation or run record): a link when a UI address is
    known, else the ``runs:/`` URI and its store."""
    rows = []
    for v, path in files.items():
        info, why = _read_json(root / path)
        if info is None:
            rows.append([v, "—", f"no run record: {why}"])
            continue
        if "mlflow" in info:  # an evaluation record: the variant's summary run (parent of its seed runs)
            m = info["mlflow"] or {}
            info = {"mlflow_run_id": m.get("run_id"), "tracking_uri": m.get("tracking_uri"),
                    "mlflow_experiment_id": m.get("experiment_id")}
        run_id, uri = info.get("mlflow_run_id"), info.get("tracking_uri")
        if not run_id:
            rows.append([v, "—", "trained without MLflow (no run id in the run record)"])
            continue
        base = _mlflow_ui(uri, ui)
        exp = info.get("mlflow_experiment_id")
        link = f"[{run_id[:12]}]({ui_url(base, exp, run_id)})" if base and exp else f"`runs:/{run_id}`"
        rows.append([v, link, f"tracking `{uri}`" if uri else "default tracking store"])
    lines = ["# MLflow runs", "", markdown_table(["variant", "run", "where"], rows)]
    if not any(r[1].startswith("[") for r in rows):
        lines += ["", "Set `flow.mlflow_ui` (or `$MLFLOW_UI_URL`) to the MLflow UI address to get clickable links."]
    return "\n".join(lines) + "\n"


def stages_markdown(outcomes: list[dict[str, Any]], overlay: list[str], excluded: list[str]) -> str:
    """What this run did per stage (ran / skipped by DVC / failed), with wall time."""
    out = ["# Stages", ""]
    if overlay:
        out += ["Params overlay: " + ", ".join(f"`{o}`" for o in overlay), ""]
    out.append(_table(["stage", "status", "seconds", "detail"],
                      ([o["stage"], o["status"], round(o.get("seconds", 0.0), 2), o.get("detail", "")]
                       for o in outcomes)))
    if excluded:
        out += ["", "Excluded by the run's parameters: " + ", ".join(f"`{e}`" for e in excluded)]
    return "\n".join(out) + "\n"
