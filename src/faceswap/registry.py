"""The registry's rule and its MLflow side; :mod:`faceswap.stages.register` is the stage that runs them.

The rule (``register`` in params.yaml), on each variant's mean over its training seeds:

1. **gates**: a variant qualifies when every gate holds (a lower-is-better metric at most its threshold, a
   higher-is-better one at least), e.g. a clean grid score and swaps that carry the target identity;
2. **primary**: among the qualifying, the best ``primary`` (e.g. the lowest ``recon_lpips``) leads;
3. **ties**: variants whose 95% CI of ``primary`` overlaps the leader's are a tie (the data cannot tell them
   apart); the tie is decided by ``prefer`` (the better of those metrics, in order), then by primary, then by
   name, so the choice is always deterministic and never made by noise.

No variant qualifies: nothing is registered, unless ``fallback: true``: then the best primary is, under the alias
``unqualified`` (a model to try, never the ``champion``: the champion alias only ever points at a version that
passed the gates).
The output says in plain words why the winner won and why each other variant did not.

The winner is logged as an MLflow pyfunc (:mod:`faceswap.serving.pyfunc`) into its evaluation's run and
registered under ``model_name``. The alias ``champion`` moves to the new version only when it beats
the current champion by the same rule on the same evaluation data (same test faces, same metric
settings); otherwise the new version gets ``challenger`` and the output says why the champion stayed. A
champion measured on other data (new faces, other settings) cannot be compared from the records, which are all
this stage reads (it runs no evaluation code): the new version, which passed the gates, takes the alias. The
first version becomes champion. A winner that is already registered (same checkpoint, same evaluation) is not
registered again.

One module for the rule and its MLflow side because every alias decision applies the rule again (the new version
against the champion), so the two change together; the summary tables are :mod:`faceswap.tables`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceswap.aliases import CHALLENGER, CHAMPION, UNQUALIFIED
from faceswap.errors import FaceswapError
from faceswap.evaluation.record import EvaluationRecord, MetricView
from faceswap.names import EVAL_METRICS, HIGHER, RANKABLE, best_word, bound_word, direction
from faceswap.tables import markdown_table

if TYPE_CHECKING:
    from faceswap.config import Params, RegisterParams

MODEL_ARTIFACT = "faceswap_model"
#: metric → (column heading, number format): the one list both tables of the summary read their columns from
COLUMNS: dict[str, tuple[str, str]] = {
    "recon_lpips": ("recon LPIPS", ".3f"),
    "recon_psnr": ("PSNR dB", ".2f"),
    "recon_ssim": ("SSIM", ".3f"),
    "recon_psnr_a": ("PSNR a dB", ".1f"), "recon_psnr_b": ("PSNR b dB", ".1f"),
    "recon_ssim_a": ("SSIM a", ".3f"), "recon_ssim_b": ("SSIM b", ".3f"),
    "swap_checkerboard_excess": ("swap grid", ".3f"),
    "recon_checkerboard_excess": ("recon grid", ".3f"),
    "swap_identity_retrieved_a2b": ("retrieved a→b", ".2f"), "swap_identity_retrieved_b2a": ("retrieved b→a", ".2f"),
    "swap_collapse_a2b": ("collapse a→b", ".2f"), "swap_collapse_b2a": ("collapse b→a", ".2f"),
    "swap_follow_structure_a2b": ("structure r a→b", ".2f"), "swap_follow_structure_b2a": ("structure r b→a", ".2f"),
    "swap_follow_mouth_a2b": ("mouth r a→b", ".2f"), "swap_follow_mouth_b2a": ("mouth r b→a", ".2f"),
    "swap_identity_verified_a2b": ("verified a→b", ".2f"), "swap_identity_verified_b2a": ("verified b→a", ".2f"),
    "cycle_lpips": ("cycle LPIPS", ".3f"),
}
#: the comparison table's columns (mean [95% CI]), each headed with its direction from the metric catalogue
SUMMARY_COLUMNS = (
    "recon_lpips", "recon_psnr", "recon_ssim", "swap_checkerboard_excess", "recon_checkerboard_excess",
    "swap_identity_retrieved_a2b", "swap_identity_retrieved_b2a", "swap_collapse_a2b", "swap_collapse_b2a",
    "swap_follow_structure_a2b", "swap_follow_structure_b2a", "swap_follow_mouth_a2b", "swap_follow_mouth_b2a",
    "swap_identity_verified_a2b", "swap_identity_verified_b2a", "cycle_lpips",
)


class RegisterError(FaceswapError, RuntimeError):
    """Missing evaluations, or a registry that cannot be reached."""


# --- the rule -----------------------------------------------------------------------------------------


@dataclass
class Candidate:
    """One variant (or a registered version) as the rule sees it: its metrics with their 95% estimates, and the
    evaluation record behind them when there is one."""

    variant: str
    view: MetricView
    record: EvaluationRecord | None = None
    qualifies: bool = False
    rank: int | None = None
    note: str = ""

    @classmethod
    def of(cls, record: EvaluationRecord) -> Candidate:
        return cls(record.variant, record.view, record)

    @property
    def metrics(self) -> dict[str, float | None]:
        return self.view.metrics


def check_rule(rule: RegisterParams) -> None:
    """Every metric the rule names is a ranked one of the catalogue (faceswap/names.py): checked by the register
    stage, which ranks, not when params load, so that no other stage depends on the metric catalogue."""
    from faceswap.config import ConfigError

    for key, names in (("gates", tuple(rule.gates)), ("primary", (rule.primary,)), ("prefer", rule.prefer)):
        unknown = [n for n in names if n not in RANKABLE]
        if unknown:
            raise ConfigError(f"register.{key}: {', '.join(map(repr, unknown))} must be a lower- or higher-is-better "
                              f"metric: {', '.join(RANKABLE)}")


def _bound(name: str, threshold: float) -> str:
    return f"{name} {bound_word(name)} {threshold:g}"


#: what a failed gate means for the swap, in words (the summary says it before the number)
GATE_WORDS = {
    "swap_checkerboard_excess": "the swaps carry a checkerboard grid",
    "swap_identity_retrieved": "the swaps are not recognised as their target, even at their own sharpness",
    "swap_identity_verified": "the swaps are not verified as their target",
    "swap_collapse": "the swaps collapse towards one image for every source",
    "swap_follow_structure": "the swaps do not change where their sources change",
    "swap_follow_mouth": "the swaps do not follow their source's mouth",
    "swap_follow_expression": "the swaps do not follow their source's expression and pose",
    "swap_expression_corr": "the swaps do not keep their source's expression",
    "recon_psnr": "the reconstructions are not sharp enough",
    "recon_ssim": "the reconstructions are not sharp enough",
}


def _gate_words(name: str) -> str:
    base = name.removesuffix("_a2b").removesuffix("_b2a").removesuffix("_a").removesuffix("_b")
    words = GATE_WORDS.get(base)
    if words is None:
        return ""
    which = {"_a2b": " (a→b)", "_b2a": " (b→a)", "_a": " (a)", "_b": " (b)"}
    return words + next((w for s, w in which.items() if name.endswith(s)), "") + ": "


def gate_failures(metrics: dict[str, float | None], rule: RegisterParams) -> list[str]:
    """Each gate the metrics miss, in words (empty: the variant qualifies)."""
    out = []
    for name, threshold in rule.gates.items():
        v = metrics.get(name)
        if v is None or not math.isfinite(float(v)):
            out.append(f"{name} missing (needs {_bound(name, threshold)})")
        elif MetricView(metrics).lower(name) > MetricView({name: threshold}).lower(name):
            out.append(f"{_gate_words(name)}{name} {float(v):.4f} fails {bound_word(name)} {threshold:g}")
    return out


def passes_gate(metrics: dict[str, float | None], rule: RegisterParams) -> bool:
    return not gate_failures(metrics, rule)


def describe_rule(rule: RegisterParams) -> str:
    fb = f"register the best primary as @{UNQUALIFIED}, never champion" if rule.fallback else "register nothing"
    gates = " and ".join(_bound(n, t) for n, t in rule.gates.items()) or "(no gate)"
    prefer = ", then ".join(f"{best_word(n)} {n}" for n in rule.prefer)
    return (f"qualify: {gates}; best: {best_word(rule.primary)} {rule.primary}; overlapping 95% CIs are a tie, "
            f"decided by {prefer}; none qualifies: {fb}")


GRID_SCORE = "swap_checkerboard_excess"
VERIFIED = "swap_identity_verified"
RETRIEVED = "swap_identity_retrieved"
#: a choice whose swaps are recognised as their target (at their own sharpness) less often than this does not swap
RETRIEVED_FLOOR = 0.8
#: ... and whose swaps are verified (a sharp real face's standard) less often than this are still blurry
VERIFIED_FLOOR = 0.5


def caveats(candidates: list[Candidate], winner: Candidate | None, rule: RegisterParams) -> tuple[str, ...]:
    """What the choice does not show, in words: a champion picked where no swap is verified as its target, or
    where no variant's grid reaches the gate, is a pick among models that do not differ in what the project is
    for (docs/results.md §2c, §3b), and whoever reads the registry should be told so."""
    out: list[str] = []
    retrieved = {c.variant: c.metrics[RETRIEVED] for c in candidates if c.metrics.get(RETRIEVED) is not None}
    verified = {c.variant: c.metrics[VERIFIED] for c in candidates if c.metrics.get(VERIFIED) is not None}
    got = retrieved.get(winner.variant) if winner is not None else None
    mine = verified.get(winner.variant, 0.0) if winner is not None else None
    if got is not None and got < RETRIEVED_FLOOR:
        out.append(f"the chosen {winner.variant}: its swaps are not recognised as their target even at their own "
                   f"sharpness ({RETRIEVED} {got:.2f}): it reconstructs best among models that do not yet swap "
                   "identities")
    elif verified and mine is not None and mine < VERIFIED_FLOOR:
        best = max(verified, key=verified.__getitem__)
        others = f"{verified[best]:.2f} at best ({best})" if verified[best] else "0.00 for every variant"
        recognised = f"recognised as their target at their own sharpness ({RETRIEVED} {got:.2f}) but " if got else ""
        out.append(f"the chosen {winner.variant}: its swaps are {recognised}not verified as their target ({VERIFIED} "
                   f"{mine:.2f}; {others}): not yet as sharp as a real face of that person")
    gate = rule.gates.get(GRID_SCORE)
    grids = [c.metrics[GRID_SCORE] for c in candidates if c.metrics.get(GRID_SCORE) is not None]
    if gate is not None and len(grids) > 1 and max(grids) <= gate:
        out.append(f"no variant's swaps reach the grid gate ({GRID_SCORE} at most {max(grids):.4f} ≤ {gate:g}): "
                   "the grid did not separate the variants here (docs/results.md §3b has a regime where it does)")
    return tuple(out)


def _fmt_est(c: Candidate, name: str, spec: str = ".4f", missing: str = "missing") -> str:
    return c.view.format(name, spec, missing)


def _tied(a: Candidate, b: Candidate, name: str) -> bool:
    """Same value, or overlapping CIs (a variant without a CI only ties on an equal value)."""
    ia, ib = a.view.interval(name), b.view.interval(name)
    if ia is None or ib is None:
        return a.view.lower(name) == b.view.lower(name)
    return ia[0] <= ib[1] and ib[0] <= ia[1]


def _order(c: Candidate, rule: RegisterParams, in_tie: bool) -> tuple:
    """The rule's order, written once: a tie on primary is decided by ``prefer`` in order, then primary, then
    name; outside a tie primary decides."""
    prefs = tuple(c.view.lower(n) for n in rule.prefer) if in_tie else ()
    return (0 if in_tie else 1, *prefs, c.view.lower(rule.primary), c.variant)


def select(candidates: list[Candidate], rule: RegisterParams) -> tuple[Candidate | None, str]:
    """Rank ``candidates`` in place (qualifies, rank, note: why it did not win) and return (winner, reason)."""
    failures = {}
    for c in candidates:
        failures[c.variant] = fails = gate_failures(c.metrics, rule)
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
        fewest = min(len(f) for f in failures.values())  # the nearest to qualifying: a gridded decoder never
        pool, fallback = [c for c in candidates if len(failures[c.variant]) == fewest], True  # wins on recon
    leader = min(pool, key=lambda c: (c.view.lower(rule.primary), c.variant))
    tied = [c for c in pool if _tied(c, leader, rule.primary)]
    ranked = sorted(pool, key=lambda c: _order(c, rule, c in tied))
    for i, c in enumerate(ranked, 1):
        c.rank = i
    win = ranked[0]
    reason = f"{win.variant} won: {rule.primary} {_fmt_est(win, rule.primary)}"
    if len(tied) > 1:
        others = [c for c in tied if c is not win]
        reason += (f"; its 95% CI overlaps {', '.join(c.variant for c in others)} (a tie the data cannot decide), "
                   f"decided by {best_word(rule.prefer[0])} {rule.prefer[0]}: {win.variant} "
                   f"{_fmt_est(win, rule.prefer[0])} vs "
                   + ", ".join(f"{c.variant} {_fmt_est(c, rule.prefer[0])}" for c in others))
    elif len(pool) > 1:
        reason += f", better than every other {'candidate' if fallback else 'qualifying variant'} beyond their 95% CIs"
    reason += f" ({sum(c.qualifies for c in candidates)} of {len(candidates)} qualify)"
    if fallback:
        reason += (f" (FALLBACK: no variant passes the gates; ranked among those that fail the fewest, {fewest} of "
                   f"{len(rule.gates)})")
    for c in ranked[1:]:
        if c in tied:
            c.note = (f"tied with {win.variant} on {rule.primary} ({_fmt_est(c, rule.primary)}), lost on "
                      + ", ".join(f"{n} {_fmt_est(c, n)}" for n in rule.prefer))
        else:
            c.note = (f"{rule.primary} {_fmt_est(c, rule.primary)}: worse than {win.variant}'s "
                      f"{_fmt_est(win, rule.primary)} beyond the CIs")
        if fallback:
            c.note = f"{'; '.join(failures[c.variant])}; {c.note}"
    win.note = f"winner, although it fails: {'; '.join(failures[win.variant])}" if fallback else "winner"
    return win, reason


def beats(new: Candidate, old: Candidate, rule: RegisterParams) -> tuple[bool, str]:
    """Whether ``new`` beats ``old`` by the same rule as :func:`select`: gates, then primary beyond overlapping
    CIs, then ``prefer``; a full tie keeps the champion."""
    gn, go = passes_gate(new.metrics, rule), passes_gate(old.metrics, rule)
    if gn != go:
        return gn, f"{'only the newcomer' if gn else 'only the champion'} passes the gates"
    name, tied = rule.primary, _tied(new, old, rule.primary)
    kn, ko = _order(new, rule, tied)[1:-1], _order(old, rule, tied)[1:-1]  # the rule's keys, without the names
    better = kn < ko
    if not tied:
        return better, (f"{name} {_fmt_est(new, name)} (new) vs {_fmt_est(old, name)} (champion): "
                        f"{'new is better' if better else 'champion is better'}")
    pref = next((p for p in rule.prefer if new.view.lower(p) != old.view.lower(p)), None)
    if pref is None:
        return False, f"{name} and {', '.join(rule.prefer)} tied: champion stays"
    return better, (f"{name} tied (overlapping CIs); {pref} {_fmt_est(new, pref)} (new) vs "
                    f"{_fmt_est(old, pref)} (champion): {'new is better' if better else 'champion stays'}")


# --- inputs -------------------------------------------------------------------------------------------


def load_candidates(variants: tuple[str, ...], records: dict[str, Path]) -> list[Candidate]:
    """Every variant's evaluation record; a clear error naming the ones that are missing."""
    missing = [v for v in variants if not records[v].is_file()]
    if missing:
        raise RegisterError(
            f"no evaluation for {', '.join(missing)} (expected {', '.join(str(records[v]) for v in missing)}); "
            "run `dvc repro evaluate` (or `faceswap evaluate --variant V`) first"
        )
    return [Candidate.of(EvaluationRecord.load(records[v])) for v in variants]


# --- summary ------------------------------------------------------------------------------------------


def _fmt(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def _by_rank(candidates: list[Candidate]) -> list[Candidate]:
    return sorted(candidates, key=lambda c: (c.rank is None, c.rank or 0, c.variant))


def summary_table(candidates: list[Candidate], winner: str | None) -> str:
    arrows = {name: "↑" if direction(name) == HIGHER else "↓" for name in SUMMARY_COLUMNS}
    head = ["variant", "qualifies", "rank", *(f"{COLUMNS[k][0]} {arrows[k]}" for k in SUMMARY_COLUMNS)]
    rows = [[f"**{c.variant}**" if c.variant == winner else c.variant, "yes" if c.qualifies else f"no ({c.note})",
             c.rank or "–", *(_fmt_est(c, k, COLUMNS[k][1], "–") for k in SUMMARY_COLUMNS)]
            for c in _by_rank(candidates)]
    return markdown_table(head, rows)


#: what a user of a face swap asks of it, per identity and per direction: the columns of the summary's second table,
#: each beside the bar it is read against (the showcase's targets, issue #31; verified ≥ 0.5: as sharp as a real face)
QUALITY_BARS: dict[str, float] = {
    "recon_psnr_a": 25.0, "recon_psnr_b": 25.0, "recon_ssim_a": 0.80, "recon_ssim_b": 0.80,
    "swap_identity_retrieved_a2b": 0.9, "swap_identity_retrieved_b2a": 0.9,
    "swap_collapse_a2b": 0.5, "swap_collapse_b2a": 0.5, "swap_follow_mouth_a2b": 0.5, "swap_follow_mouth_b2a": 0.5,
    "swap_identity_verified_a2b": 0.5, "swap_identity_verified_b2a": 0.5,
}


def quality_table(candidates: list[Candidate]) -> str:
    """Each variant against the quality bars of a real face swap (a ✓ where the mean reaches the bar)."""

    def cell(name: str, bar: float, v: float | None) -> str:
        return "–" if v is None else f"{float(v):{COLUMNS[name][1]}}{' ✓' if float(v) >= bar else ''}"

    head = ["variant", *(f"{COLUMNS[k][0]} (≥ {bar:g})" for k, bar in QUALITY_BARS.items()), "recon expression r"]
    rows = [[c.variant, *(cell(k, bar, c.metrics.get(k)) for k, bar in QUALITY_BARS.items()),
             _fmt(c.metrics.get("recon_expression_corr"), ".2f")] for c in _by_rank(candidates)]
    return markdown_table(head, rows)


def summary_markdown(candidates: list[Candidate], rule: RegisterParams, result: RegisterRecord) -> str:
    """The summary page (``paths.summary``): every variant's table, the rule, the choice and why not the others."""
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
        summary_table(candidates, result.variant),
        "",
        f"**Rule**: {describe_rule(rule)}.",
        "",
        f"**Choice**: {result.reason}",
        "",
        "**Why not the others**:",
        "",
        *[f"- {c.variant}: {c.note}" for c in candidates if c.variant != result.variant],
        "",
        *([f"**What this choice does not show**: {'; '.join(result.caveats)}.", ""] if result.caveats else []),
        "**Against the bars of a real face swap** (per identity and direction; ✓ = reached; the reconstructions' "
        "expression r is the ceiling a swap's is read against; docs/results.md §2d):",
        "",
        quality_table(candidates),
        "",
    ]
    if result.version:
        lines.append(f"**Registry**: `{result.model_name}` version {result.version} → alias "
                     f"`{result.alias}`; {result.champion_text}. {result.alias_reason}")
    else:
        lines.append("**Registry**: nothing registered.")
    return "\n".join(lines) + "\n"


# --- registry -----------------------------------------------------------------------------------------


def _metric_tags(c: Candidate) -> dict[str, str]:
    """Metrics (and the CIs of the ranked ones) as version tags, so a later run can compare with this one."""
    tags = {f"metric.{k}": repr(float(v)) for k, v in c.metrics.items() if v is not None and k in EVAL_METRICS}
    for k, e in c.view.estimates.items():
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
    return Candidate(variant, MetricView(metrics, estimates))


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


def log_and_register(win: Candidate, rule: RegisterParams, tracking_uri: str, reason: str,
                     params: Params | None = None) -> Any:
    """Log the winner as a pyfunc into its evaluation run (else a new run of the project experiment) and register
    it; returns the ModelVersion."""
    import mlflow

    from faceswap.imageio import read_rgb
    from faceswap.serving import pyfunc
    from faceswap.tracking import connect, ensure_experiment

    ev = win.record
    if ev is None:
        raise RegisterError(f"{win.variant} has no evaluation record to register")
    ckpt = Path(ev.checkpoint)
    if not ckpt.is_file():
        raise RegisterError(f"checkpoint of {win.variant} not found: {ckpt}")
    from faceswap.files import file_sha256

    if file_sha256(ckpt) != ev.checkpoint_sha256:
        raise RegisterError(f"{ckpt} changed since it was evaluated; run `dvc repro evaluate@{win.variant}` again")
    client = connect(tracking_uri)
    run_id = ev.mlflow.run_id if ev.mlflow else None
    if not run_id:
        exp_id = ensure_experiment(client, params, tracking_uri)
        run = client.create_run(exp_id, run_name=f"{win.variant}-register", tags={"variant": win.variant})
        run_id = run.info.run_id
    example = _example_faces(ev, read_rgb)
    tags = {
        "variant": win.variant,
        "data_version": str(ev.data_version or "unknown"),
        "git_commit": str(ev.git_commit or "unknown"),
        "eval_fingerprint": ev.eval_fingerprint,
        "checkpoint_sha256": ev.checkpoint_sha256,
        "step": str(ev.step),
        "rule": describe_rule(rule),
        "selection": reason,
        **_metric_tags(win),
    }
    with mlflow.start_run(run_id=run_id):
        info = pyfunc.log_pyfunc(ckpt, MODEL_ARTIFACT, pyfunc.input_example(*example) if example else None,
                                 tags={"variant": win.variant})
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


def _example_faces(ev: EvaluationRecord, read_rgb: Any) -> tuple | None:
    """The first held-out crop of each identity, for the model's input example (None if unavailable)."""
    from faceswap.data.dataset import resolve_crop
    from faceswap.data.manifest import read_manifest

    try:
        manifest = Path(ev.manifest)
        faces_dir = Path(ev.faces_dir) if ev.faces_dir else None
        df = read_manifest(manifest)
        faces = []
        for ident in ev.identities:
            rel = df.loc[df["face_id"] == ev.face_ids[ident][0], "path"].iloc[0]
            faces.append(read_rgb(resolve_crop(rel, manifest, faces_dir)))
        return tuple(faces)
    except (KeyError, IndexError, OSError, ValueError):
        return None


@dataclass(frozen=True)
class CandidateRow:
    """One variant's line in the register record."""

    variant: str
    qualifies: bool
    rank: int | None
    note: str
    metrics: dict[str, float | None]


@dataclass(frozen=True)
class RegisterRecord:
    """What stage ``register`` decided: the rule, the choice and why, and where the aliases point (the flow and
    the README read it)."""

    model_name: str
    rule: str
    reason: str
    candidates: tuple[CandidateRow, ...]
    version: str | None = None
    run_id: str | None = None
    variant: str | None = None
    alias: str | None = None
    champion_version: str | None = None
    champion_changed: bool = False
    alias_reason: str = ""
    tracking_uri: str | None = None
    caveats: tuple[str, ...] = ()
    table: str = ""  # the printed comparison (with CIs); not part of the file

    @property
    def load_alias(self) -> str | None:
        """The alias to load: the champion's, else (no version passed the gates yet) the one just registered."""
        return CHAMPION if self.champion_version else self.alias

    @property
    def champion_text(self) -> str:
        if not self.champion_version:
            return "no champion yet (no registered version has passed the gates)"
        return f"champion is version {self.champion_version}{' (moved)' if self.champion_changed else ' (unchanged)'}"

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self) | {"candidates": [asdict(c) for c in self.candidates]}
        d.pop("table")
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RegisterRecord:
        return cls(**{**d, "candidates": tuple(CandidateRow(**c) for c in d.get("candidates", [])),
                      "caveats": tuple(d.get("caveats", ()))})


@dataclass(frozen=True)
class Aliases:
    """Where the registry's aliases point after a registration, and why."""

    version: str
    run_id: str
    alias: str
    champion_version: str | None  # None: no version has passed the gates yet
    champion_changed: bool
    why: str


def register_winner(win: Candidate, params: Params, uri: str, reason: str) -> tuple[Aliases, str]:
    """Register ``win`` (unless the same checkpoint and evaluation already are) and move the aliases by the rule;
    returns the aliases and the reason, extended when nothing new was registered."""
    from faceswap.tracking import connect

    rule, ev = params.registry, win.record
    assert ev is not None  # candidates from evaluation records always carry one
    client = connect(uri)
    champ = _champion(client, rule.model_name)
    mv = _existing_version(client, rule.model_name, ev.checkpoint_sha256, ev.eval_fingerprint)
    if mv is None:
        mv = log_and_register(win, rule, uri, reason, params)
    else:
        reason += f" (already registered as version {mv.version}; not registered again)"
    if not passes_gate(win.metrics, rule):
        client.set_registered_model_alias(rule.model_name, UNQUALIFIED, mv.version)
        held = f"champion stays version {champ.version}" if champ is not None else "there is no champion"
        return Aliases(
            version=str(mv.version), run_id=mv.run_id, alias=UNQUALIFIED,
            champion_version=str(champ.version) if champ is not None else None, champion_changed=False,
            why=(f"it fails the gates ({'; '.join(gate_failures(win.metrics, rule))}): registered as "
                 f"@{UNQUALIFIED} by register.fallback, never as champion; {held}"),
        ), reason
    if champ is None:
        alias, why = CHAMPION, "first registered model: it becomes champion"
    elif str(champ.version) == str(mv.version):
        alias, why = CHAMPION, f"version {mv.version} already holds the champion alias"
    else:
        if champ.tags.get("eval_fingerprint") == ev.eval_fingerprint:
            champ_c = _candidate_from_tags(champ.tags.get("variant", "champion"), champ.tags)
            better, why = beats(win, champ_c, rule)
            alias = CHAMPION if better else CHALLENGER
            why = (f"beats champion version {champ.version} (same evaluation data): {why}" if better
                   else f"champion version {champ.version} stays (same evaluation data): {why}")
        else:  # the records hold no numbers of the old champion on these faces: the current evaluation decides
            alias = CHAMPION
            why = (f"champion version {champ.version} was measured on other test faces or settings, so the two "
                   "cannot be compared; the current evaluation decides, and this version passes the gates")
    client.set_registered_model_alias(rule.model_name, alias, mv.version)
    if alias == CHAMPION:
        from mlflow.exceptions import MlflowException

        try:  # a version cannot usefully be both; the old challenger alias may point at it
            if str(client.get_model_version_by_alias(rule.model_name, CHALLENGER).version) == str(mv.version):
                client.delete_registered_model_alias(rule.model_name, CHALLENGER)
        except MlflowException:  # no challenger alias yet: nothing to remove
            pass
    return Aliases(
        version=str(mv.version), run_id=mv.run_id, alias=alias,
        champion_version=str(mv.version) if alias == CHAMPION else str(champ.version),
        champion_changed=alias == CHAMPION and (champ is None or str(champ.version) != str(mv.version)), why=why,
    ), reason
