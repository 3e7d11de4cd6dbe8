"""Stage ``register``: pick the best variant by the rule in params.yaml, register it as an MLflow pyfunc and move
the ``champion``/``challenger`` aliases (the rule and the registry calls: :mod:`faceswap.registry`).

Reads every variant's :class:`~faceswap.evaluation.record.EvaluationRecord`; writes the
:class:`~faceswap.registry.RegisterRecord` (``paths.register_record``) and the comparison table
(``paths.summary``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from faceswap.files import atomic_write, write_json
from faceswap.names import RANKABLE
from faceswap.registry import (
    CHAMPION,
    CandidateRow,
    RegisterError,
    RegisterRecord,
    caveats,
    check_rule,
    describe_rule,
    load_candidates,
    register_winner,
    select,
    summary_markdown,
    summary_table,
)

if TYPE_CHECKING:
    from faceswap.config import Params


def run(params: Params) -> RegisterRecord:
    from faceswap.tracking import tracking_uri

    rule, paths = params.registry, params.paths
    check_rule(rule)
    candidates = load_candidates(params.model.variants,
                                 {v: paths.evaluation_record(v) for v in params.model.variants})
    win, reason = select(candidates, rule)
    record = RegisterRecord(model_name=rule.model_name, rule=describe_rule(rule), reason=reason, candidates=(),
                            caveats=caveats(candidates, win, rule))
    if win is not None:
        uri = tracking_uri(params)
        logged = win.record.mlflow.tracking_uri if win.record and win.record.mlflow else None
        if logged and logged != uri:
            raise RegisterError(
                f"the evaluation of {win.variant} logged to {logged}, but the tracking URI is now {uri} "
                "($MLFLOW_TRACKING_URI, else mlflow.tracking_uri); point it back or evaluate again"
            )
        aliases, reason = register_winner(win, params, uri, reason)
        record = replace(record, reason=reason, tracking_uri=uri, variant=win.variant, version=aliases.version,
                         run_id=aliases.run_id, alias=aliases.alias, champion_version=aliases.champion_version,
                         champion_changed=aliases.champion_changed, alias_reason=aliases.why)
    record = replace(record, candidates=tuple(
        CandidateRow(c.variant, c.qualifies, c.rank, c.note, {k: c.metrics.get(k) for k in RANKABLE if k in c.metrics})
        for c in candidates), table=summary_table(candidates, record.variant))
    write_json(paths.register_record, record.to_json())
    text = summary_markdown(candidates, rule, record)
    atomic_write(paths.summary, lambda f: f.write(text.encode()))
    return record


def format_record(rec: RegisterRecord) -> str:
    lines = [rec.table, "", f"rule: {rec.rule}", f"choice: {rec.reason}"]
    if rec.version:
        lines.append(f"registered {rec.model_name} version {rec.version} (run {rec.run_id}) → @{rec.alias}; "
                     f"{rec.champion_text}")
        lines.append(f"why: {rec.alias_reason}")
        lines.append(f"load: mlflow.pyfunc.load_model('models:/{rec.model_name}@{rec.load_alias}')  "
                     f"({rec.tracking_uri})")
        if rec.load_alias != CHAMPION:
            lines.append(f"serve or swap it with --model models:/{rec.model_name}@{rec.load_alias} (the default, "
                         f"@{CHAMPION}, waits for a version that passes the gates)")
    else:
        lines.append("nothing registered")
    lines += [f"caveat: {c}" for c in rec.caveats]
    return "\n".join(lines)
