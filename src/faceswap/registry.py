"""Pick the best variant by the rule in params.yaml and register it (``faceswap register``, stage ``register``).

The rule (``register`` in params.yaml), on each variant's mean over its training seeds:

1. **gates**: a variant qualifies when every gate holds (a lower-is-better metric at most its threshold, a
   higher-is-better one at least), e.g. a clean grid score and swaps that carry the target identity;
2. **primary**: among the qualifying, the best ``primary`` (e.g. the lowest ``recon_lpips``) leads;
3. **ties**: variants whose 95% CI of ``primary`` overlaps the leader's are a tie (the data cannot tell them
   apart); the tie is decided by ``prefer`` (the better of those metrics, in order), then by primary, then by
   name, so the choice is always deterministic and never made by noise.

No variant qualifies: nothing is registered (unless ``fallback: true``: then the best primary is).
The output says in plain words why the winner won and why each other variant did not.

The winner is logged as an MLflow pyfunc (:mod:`faceswap.serving.pyfunc`) into its evaluation's run and
registered under ``model_name``. The alias ``champion`` moves to the new version only when it beats
the current champion by the same rule on the same evaluation data (same test faces, same metric
settings; if the champion was measured on other data it is re-evaluated now); otherwise the new
version gets ``challenger`` and the output says why the champion stayed. The first version becomes
champion. A winner that is already registered (same checkpoint, same evaluation) is not registered again.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceswap.errors import FaceswapError
from faceswap.metrics.catalog import EVAL_METRICS, HIGHER, RANKABLE

if TYPE_CHECKING:
    from faceswap.config import Params, RegisterParams

CHAMPION, CHALLENGER = "champion", "challenger"
MODEL_ARTIFACT = "faceswap_model"
SUMMARY_COLUMNS = (
    ("recon_lpips", "recon LPIPS ↓", ".3f"),
    ("recon_psnr", "PSNR dB ↑", ".2f"),
    ("recon_ssim", "SSIM ↑", ".3f"),
    ("swap_checkerboard_excess", "swap grid ↓", ".3f"),
    ("recon_checkerboard_excess", "recon grid ↓", ".3f"),
    ("swap_identity_success_a2b", "identity a→b ↑", ".2f"),
    ("swap_identity_success_b2a", "identity b→a ↑", ".2f"),
    ("cycle_lpips", "cycle LPIPS ↓", ".3f"),
    ("landmark_nme", "landmark NME ↓", ".3f"),
)


class RegisterError(FaceswapError, RuntimeError):
    """Missing evaluations, or a registry that cannot be reached."""


# --- the rule -----------------------------------------------------------------------------------------


@dataclass
class Candidate:
    variant: str
    metrics: dict[str, float | None]
    evaluation: dict[str, Any] = field(default_factory=dict)  # reports/evaluations/<variant>.json
    qualifies: bool = False
    rank: int | None = None
    note: str = ""

    def interval(self, name: str) -> tuple[float, float] | None:
        """The 95% CI of ``name`` as 'lower is better' numbers (None when the evaluation has none)."""
        e = self.evaluation.get("estimates", {}).get(name)
        if not e:
            return None
        lo, hi = float(e["ci_lo"]), float(e["ci_hi"])
        return (-hi, -lo) if EVAL_METRICS[name][0] == HIGHER else (lo, hi)


def _value(metrics: dict[str, float | None], name: str) -> float:
    """The metric as a 'lower is better' number; a missing or non-finite value ranks last."""
    v = metrics.get(name)
    if v is None or not math.isfinite(float(v)):
        return math.inf
    return -float(v) if EVAL_METRICS[name][0] == HIGHER else float(v)


def _bound(name: str, threshold: float) -> str:
    return f"{name} {'≥' if EVAL_METRICS[name][0] == HIGHER else '≤'} {threshold:g}"


def gate_failures(metrics: dict[str, float | None], rule: RegisterParams) -> list[str]:
    """Each gate the metrics miss, in words (empty: the variant qualifies)."""
    out = []
    for name, threshold in rule.gates.items():
        v = metrics.get(name)
        if v is None or not math.isfinite(float(v)):
            out.append(f"{name} missing (needs {_bound(name, threshold)})")
        elif _value(metrics, name) > _value({name: threshold}, name):
            out.append(f"{name} {float(v):.4f} fails {_bound(name, threshold)}")
    return out


def passes_gate(metrics: dict[str, float | None], rule: RegisterParams) -> bool:
    return not gate_failures(metrics, rule)


def describe_rule(rule: RegisterParams) -> str:
    fb = "register the best primary anyway" if rule.fallback else "register nothing"
    gates = " and ".join(_bound(n, t) for n, t in rule.gates.items()) or "(no gate)"
    prefer = ", then ".join(f"{_dir_word(n)} {n}" for n in rule.prefer)
    return (f"qualify: {gates}; best: {_dir_word(rule.primary)} {rule.primary}; overlapping 95% CIs are a tie, "
            f"decided by {prefer}; none qualifies: {fb}")


def _dir_word(name: str) -> str:
    return "highest" if EVAL_METRICS[name][0] == HIGHER else "lowest"


def _fmt_est(c: Candidate, name: str, spec: str = ".4f", missing: str = "missing") -> str:
    """``mean [lo, hi]`` (the 95% CI; a range over seeds for set scores), or the mean alone."""
    v = c.metrics.get(name)
    if v is None:
        return missing
    e = c.evaluation.get("estimates", {}).get(name)
    return f"{format(v, spec)} [{format(e['ci_lo'], spec)}, {format(e['ci_hi'], spec)}]" if e else format(v, spec)


def _tied(a: Candidate, b: Candidate, name: str) -> bool:
    """Same value, or overlapping CIs (a variant without a CI only ties on an equal value)."""
    ia, ib = a.interval(name), b.interval(name)
    if ia is None or ib is None:
        return _value(a.metrics, name) == _value(b.metrics, name)
    return ia[0] <= ib[1] and ib[0] <= ia[1]


def select(candidates: list[Candidate], rule: RegisterParams) -> tuple[Candidate | None, str]:
    """Rank ``candidates`` in place (qualifies, rank, note: why it did not win) and return (winner, reason)."""
    for c in candidates:
        fails = gate_failures(c.metrics, rule)
        c.qualifies, c.note = not fails, "; ".join(fails)
    pool = [c for c in candidates if c.qualifies]
    fallback = False
    if not pool:
        if not rule.fallback or not candidates:
            return None, (
                "no variant qualifies (" + " and ".join(_bound(n, t) for n, t in rule.gates.items()) + "): "
                + "; ".join(f"{c.variant}: {c.note}" for c in candidates)
                + "; nothing registered (set register.fallback: true to register the best anyway)"
            )
        pool, fallback = list(candidates), True
    leader = min(pool, key=lambda c: (_value(c.metrics, rule.primary), c.variant))
    tied = [c for c in pool if _tied(c, leader, rule.primary)]

    def key(c: Candidate) -> tuple:
        in_tie = c in tied
        prefs = tuple(_value(c.metrics, n) for n in rule.prefer) if in_tie else ()
        return (0 if in_tie else 1, *prefs, _value(c.metrics, rule.primary), c.variant)

    ranked = sorted(pool, key=key)
    for i, c in enumerate(ranked, 1):
        c.rank = i
    win = ranked[0]
    reason = f"{win.variant} won: {rule.primary} {_fmt_est(win, rule.primary)}"
    if len(tied) > 1:
        others = [c for c in tied if c is not win]
        reason += (f"; its 95% CI overlaps {', '.join(c.variant for c in others)} (a tie the data cannot decide), "
                   f"decided by {_dir_word(rule.prefer[0])} {rule.prefer[0]}: {win.variant} "
                   f"{_fmt_est(win, rule.prefer[0])} vs "
                   + ", ".join(f"{c.variant} {_fmt_est(c, rule.prefer[0])}" for c in others))
    else:
        reason += ", better than every other qualifying variant beyond their 95% CIs"
    reason += f" ({len(pool)} of {len(candidates)} qualify)"
    if fallback:
        reason += " (FALLBACK: no variant passes the gates)"
    for c in ranked[1:]:
        if c in tied:
            c.note = (f"tied with {win.variant} on {rule.primary} ({_fmt_est(c, rule.primary)}), lost on "
                      + ", ".join(f"{n} {_fmt_est(c, n)}" for n in rule.prefer))
        else:
            c.note = (f"{rule.primary} {_fmt_est(c, rule.primary)}: worse than {win.variant}'s "
                      f"{_fmt_est(win, rule.primary)} beyond the CIs")
    win.note = "winner"
    return win, reason


def beats(new: Candidate, old: Candidate, rule: RegisterParams) -> tuple[bool, str]:
    """Whether ``new`` beats ``old`` by the rule: gates, then primary beyond overlapping CIs, then preference."""
    gn, go = passes_gate(new.metrics, rule), passes_gate(old.metrics, rule)
    if gn != go:
        return gn, f"{'only the newcomer' if gn else 'only the champion'} passes the gates"
    name = rule.primary
    if not _tied(new, old, name):
        better = _value(new.metrics, name) < _value(old.metrics, name)
        return better, (f"{name} {_fmt_est(new, name)} (new) vs {_fmt_est(old, name)} (champion): "
                        f"{'new is better' if better else 'champion is better'}")
    for pref in rule.prefer:
        pn, po = _value(new.metrics, pref), _value(old.metrics, pref)
        if pn != po:
            better = pn < po
            return better, (f"{name} tied (overlapping CIs); {pref} {_fmt_est(new, pref)} (new) vs "
                            f"{_fmt_est(old, pref)} (champion): {'new is better' if better else 'champion stays'}")
    return False, f"{name} and {', '.join(rule.prefer)} tied: champion stays"


# --- inputs -------------------------------------------------------------------------------------------


def load_candidates(variants: tuple[str, ...], reports_dir: str | Path) -> list[Candidate]:
    """Every variant's evaluation record (``reports/evaluations/<variant>.json``); a clear error if one is missing."""
    from faceswap.evaluate import evaluation_record_path

    out, missing = [], []
    for v in variants:
        path = evaluation_record_path(reports_dir, v)
        if not path.is_file():
            missing.append(v)
            continue
        evaluation = json.loads(path.read_text())
        metrics = {k: val for k, val in evaluation.get("metrics", {}).items() if k in EVAL_METRICS}
        out.append(Candidate(v, metrics, evaluation))
    if missing:
        raise RegisterError(
            f"no evaluation for {', '.join(missing)} (expected {evaluation_record_path(reports_dir, '<variant>')}); "
            f"run `dvc repro evaluate` (or `faceswap evaluate --variant V`) first"
        )
    return out


# --- summary ------------------------------------------------------------------------------------------


def _fmt(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def summary_table(candidates: list[Candidate], winner: str | None) -> str:
    head = "| variant | qualifies | rank | " + " | ".join(t for _, t, _ in SUMMARY_COLUMNS) + " |"
    sep = "|" + "---|" * (3 + len(SUMMARY_COLUMNS))
    lines = [head, sep]
    for c in sorted(candidates, key=lambda c: (c.rank is None, c.rank or 0, c.variant)):
        name = f"**{c.variant}**" if c.variant == winner else c.variant
        q = "yes" if c.qualifies else f"no ({c.note})"
        cells = [_fmt_est(c, k, spec, "–") for k, _, spec in SUMMARY_COLUMNS]
        lines.append(f"| {name} | {q} | {c.rank or '–'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_summary(path: Path, candidates: list[Candidate], rule: RegisterParams, result: dict[str, Any]) -> None:
    faces = next((c.metrics for c in candidates), {})
    lines = [
        "# Variant comparison",
        "",
        f"Test faces: {_fmt(faces.get('faces_a'), '.0f')} (a) + {_fmt(faces.get('faces_b'), '.0f')} (b); "
        f"training seeds per variant: {_fmt(faces.get('seeds'), '.0f')}. Each cell: mean over seeds [95% CI: "
        "bootstrap over seeds and test faces; for the grid scores the range over seeds]. ↓ lower is better, "
        "↑ higher is better; definitions in docs/metrics.md. Real test faces read as their own identity: "
        f"{_fmt(faces.get('truth_identity_success'), '.2f')}.",
        "",
        summary_table(candidates, result.get("variant")),
        "",
        f"**Rule**: {describe_rule(rule)}.",
        "",
        f"**Choice**: {result['reason']}",
        "",
        "**Why not the others**:",
        "",
        *[f"- {c.variant}: {c.note}" for c in candidates if c.variant != result.get("variant")],
        "",
    ]
    if result.get("version"):
        lines.append(f"**Registry**: `{result['model_name']}` version {result['version']} → alias "
                     f"`{result['alias']}`; champion is version {result['champion_version']}"
                     f"{' (moved)' if result['champion_changed'] else ' (unchanged)'}. {result['alias_reason']}")
    else:
        lines.append("**Registry**: nothing registered.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


# --- registry -----------------------------------------------------------------------------------------


def _metric_tags(c: Candidate) -> dict[str, str]:
    """Metrics (and the CIs of the ranked ones) as version tags, so a later run can compare with this one."""
    tags = {f"metric.{k}": repr(float(v)) for k, v in c.metrics.items() if v is not None and k in EVAL_METRICS}
    for k, e in c.evaluation.get("estimates", {}).items():
        if k in RANKABLE:
            tags[f"ci.{k}"] = f"{float(e['ci_lo'])!r},{float(e['ci_hi'])!r}"
    return tags


def _candidate_from_tags(variant: str, tags: dict[str, str]) -> Candidate:
    metrics: dict[str, float | None] = {}
    estimates: dict[str, dict[str, float]] = {}
    for k, v in tags.items():
        if k.startswith("metric."):
            try:
                metrics[k.removeprefix("metric.")] = float(v)
            except ValueError:
                metrics[k.removeprefix("metric.")] = None
        elif k.startswith("ci."):
            try:
                lo, hi = (float(x) for x in v.split(","))
            except ValueError:
                continue
            estimates[k.removeprefix("ci.")] = {"ci_lo": lo, "ci_hi": hi}
    return Candidate(variant, metrics, {"estimates": estimates})


def _champion(client: Any, name: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        return None
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def _existing_version(client: Any, name: str, sha: str, fingerprint: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    for mv in sorted(versions, key=lambda m: int(m.version)):
        if mv.tags.get("checkpoint_sha256") == sha and mv.tags.get("eval_fingerprint") == fingerprint:
            return mv
    return None


def reevaluate_version(tracking_uri: str, name: str, version: str, params: Params) -> Candidate:
    """Measure a registered version again on the current test faces with the current settings (its one
    checkpoint: the CIs cover the faces, not retraining)."""
    import mlflow

    from faceswap.checkpoint import load_model
    from faceswap.devices import resolve_device
    from faceswap.evaluation.faces import load_eval_faces
    from faceswap.evaluation.metrics import SeedRun, aggregate, evaluate_model
    from faceswap.tracking import connect

    connect(tracking_uri)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}"))
    found = sorted(local.rglob("model.pt"))
    if not found:
        raise RegisterError(f"registered version {name}/{version} holds no checkpoint (model.pt)")
    device = resolve_device(params.evaluate.device, "evaluate.device")
    model, _ = load_model(found[0], device)
    cfg = params.evaluate
    faces = load_eval_faces(cfg.data, tuple(model.config.identities), model.config.image_size, cfg.faces_dir,
                            cfg.max_faces)
    ev = evaluate_model(model, faces, cfg, params.metrics.checkerboard.periods, device)
    metrics, estimates = aggregate([SeedRun(0, found[0], {}, {}, ev)])
    return Candidate(f"version {version}", metrics, {"estimates": estimates})


def log_and_register(win: Candidate, rule: RegisterParams, tracking_uri: str, reason: str,
                     params: Params | None = None) -> Any:
    """Log the winner as a pyfunc into its evaluation run (else a new run of the project experiment) and register
    it; returns the ModelVersion."""
    import mlflow

    from faceswap.imageio import read_rgb
    from faceswap.serving import pyfunc
    from faceswap.tracking import connect, ensure_experiment

    ev = win.evaluation
    ckpt = Path(ev["checkpoint"])
    if not ckpt.is_file():
        raise RegisterError(f"checkpoint of {win.variant} not found: {ckpt}")
    from faceswap.files import file_sha256

    if file_sha256(ckpt) != ev["checkpoint_sha256"]:
        raise RegisterError(f"{ckpt} changed since it was evaluated; run `dvc repro evaluate@{win.variant}` again")
    client = connect(tracking_uri)
    run_id = (ev.get("mlflow") or {}).get("run_id")
    if not run_id:
        exp_id = ensure_experiment(client, params, tracking_uri)
        run = client.create_run(exp_id, run_name=f"{win.variant}-register", tags={"variant": win.variant})
        run_id = run.info.run_id
    example = _example_faces(ev, read_rgb)
    tags = {
        "variant": win.variant,
        "data_version": str(ev.get("data_version") or "unknown"),
        "git_commit": str(ev.get("git_commit") or "unknown"),
        "eval_fingerprint": ev["eval_fingerprint"],
        "checkpoint_sha256": ev["checkpoint_sha256"],
        "step": str(ev.get("step")),
        "rule": describe_rule(rule),
        "selection": reason,
        **_metric_tags(win),
    }
    import faceswap

    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=pyfunc.FaceSwapModel(),
            artifacts={"checkpoint": str(ckpt)},
            code_paths=[str(Path(faceswap.__file__).parent)],
            signature=pyfunc.signature(),
            input_example=pyfunc.input_example(*example) if example else None,
            pip_requirements=pyfunc.pip_requirements(),
            tags={"variant": win.variant},
        )
        mlflow.set_tags({"registered_as": rule.model_name, "variant": win.variant})
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(rule.model_name)
    except MlflowException:  # the registry answers RESOURCE_DOES_NOT_EXIST for a first registration
        client.create_registered_model(
            rule.model_name, description="Face-swap autoencoder (3×3 bottleneck); pyfunc: aligned crops in, swaps out."
        )
    mv = mlflow.register_model(info.model_uri, rule.model_name, tags=tags)
    client.update_model_version(rule.model_name, mv.version, description=f"{win.variant}: {reason}")
    return client.get_model_version(rule.model_name, mv.version)


def _example_faces(ev: dict[str, Any], read_rgb: Any) -> tuple | None:
    """The first held-out crop of each identity, for the model's input example (None if unavailable)."""
    from faceswap.data.dataset import resolve_crop
    from faceswap.data.manifest import read_manifest

    try:
        manifest = Path(ev["manifest"])
        faces_dir = Path(ev["faces_dir"]) if ev.get("faces_dir") else None
        df = read_manifest(manifest)
        faces = []
        for ident in ev["identities"]:
            rel = df.loc[df["face_id"] == ev["face_ids"][ident][0], "path"].iloc[0]
            faces.append(read_rgb(resolve_crop(rel, manifest, faces_dir)))
        return tuple(faces)
    except (KeyError, IndexError, OSError, ValueError):
        return None


@dataclass
class RegisterResult:
    record: dict[str, Any]
    table: str


def register_best(
    params: Params,
    reports_dir: str | Path = "reports",
    out_json: str | Path = "metrics/register.json",
    summary_md: str | Path = "reports/summary.md",
) -> RegisterResult:
    """The ``register`` stage: rank, register the winner, move the aliases, write register.json + summary.md."""
    from faceswap.tracking import connect, tracking_uri

    rule = params.registry
    candidates = load_candidates(params.model.variants, reports_dir)
    win, reason = select(candidates, rule)
    record: dict[str, Any] = {
        "model_name": rule.model_name, "version": None, "run_id": None, "variant": None, "alias": None,
        "champion_version": None, "champion_changed": False, "reason": reason, "alias_reason": "",
        "rule": describe_rule(rule), "tracking_uri": None,
        "candidates": [],
    }
    if win is not None:
        uri = tracking_uri(params)
        logged = (win.evaluation.get("mlflow") or {}).get("tracking_uri")
        if logged and logged != uri:
            raise RegisterError(
                f"the evaluation of {win.variant} logged to {logged}, but the tracking URI is now {uri} "
                "($MLFLOW_TRACKING_URI, else mlflow.tracking_uri); point it back or evaluate again"
            )
        record["tracking_uri"] = uri
        client = connect(uri)
        ev = win.evaluation
        champ = _champion(client, rule.model_name)
        mv = _existing_version(client, rule.model_name, ev["checkpoint_sha256"], ev["eval_fingerprint"])
        if mv is None:
            mv = log_and_register(win, rule, uri, reason, params)
        else:
            reason += f" (already registered as version {mv.version}; not registered again)"
            record["reason"] = reason
        if champ is None:
            alias, why = CHAMPION, "first registered model: it becomes champion"
        elif str(champ.version) == str(mv.version):
            alias, why = CHAMPION, f"version {mv.version} already holds the champion alias"
        else:
            if champ.tags.get("eval_fingerprint") == ev["eval_fingerprint"]:
                champ_c = _candidate_from_tags(champ.tags.get("variant", "champion"), champ.tags)
                basis = "same evaluation data"
            else:
                champ_c = reevaluate_version(uri, rule.model_name, champ.version, params)
                basis = "champion re-evaluated on the current test faces"
            better, why = beats(win, champ_c, rule)
            alias = CHAMPION if better else CHALLENGER
            why = (f"beats champion version {champ.version} ({basis}): {why}" if better
                   else f"champion version {champ.version} stays ({basis}): {why}")
        client.set_registered_model_alias(rule.model_name, alias, mv.version)
        if alias == CHAMPION:
            from mlflow.exceptions import MlflowException

            try:  # a version cannot usefully be both; the old challenger alias may point at it
                if str(client.get_model_version_by_alias(rule.model_name, CHALLENGER).version) == str(mv.version):
                    client.delete_registered_model_alias(rule.model_name, CHALLENGER)
            except MlflowException:  # no challenger alias yet: nothing to remove
                pass
        record.update(
            version=str(mv.version), run_id=mv.run_id, variant=win.variant, alias=alias,
            champion_version=str(mv.version) if alias == CHAMPION else str(champ.version),
            champion_changed=alias == CHAMPION and (champ is None or str(champ.version) != str(mv.version)),
            alias_reason=why,
        )
    record["candidates"] = [
        {"variant": c.variant, "qualifies": c.qualifies, "rank": c.rank, "note": c.note,
         "metrics": {k: c.metrics.get(k) for k in RANKABLE if k in c.metrics}}
        for c in candidates
    ]
    out_json = Path(out_json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(record, indent=2) + "\n")
    write_summary(Path(summary_md), candidates, rule, record)
    return RegisterResult(record, summary_table(candidates, record["variant"]))


def format_register(r: RegisterResult) -> str:
    rec = r.record
    lines = [r.table, "", f"rule: {rec['rule']}", f"choice: {rec['reason']}"]
    if rec["version"]:
        lines.append(f"registered {rec['model_name']} version {rec['version']} (run {rec['run_id']}) → "
                     f"@{rec['alias']}; champion: version {rec['champion_version']}"
                     f"{' (moved)' if rec['champion_changed'] else ' (unchanged)'}")
        lines.append(f"why: {rec['alias_reason']}")
        lines.append(f"load: mlflow.pyfunc.load_model('models:/{rec['model_name']}@champion')  ({rec['tracking_uri']})")
    else:
        lines.append("nothing registered")
    return "\n".join(lines)
