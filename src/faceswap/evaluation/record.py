"""The evaluation record: what stage ``evaluate@<variant>`` writes and stage ``register`` reads.

One typed contract instead of a JSON dict read by key in two places: the provenance of the evaluated
checkpoint (so the registry can verify it by sha256 and say what data it saw), every metric's mean over seeds
with its 95% estimate, and the per-seed and per-face values behind them. ``to_json``/``from_json`` keep the
file's layout; a record that lacks a field names it and says how to rebuild it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from faceswap.evaluation import EvaluateError
from faceswap.names import EVAL_METRICS, as_lower


@dataclass(frozen=True)
class MlflowRef:
    """Where the variant's summary run lives."""

    tracking_uri: str
    run_id: str
    experiment_id: str | None = None


@dataclass(frozen=True)
class MetricView:
    """Metrics with their 95% estimates: what the registry's rule ranks (a record, or a registered version's tags)."""

    metrics: dict[str, float | None]
    estimates: dict[str, dict[str, Any]] = field(default_factory=dict)

    def lower(self, name: str) -> float:
        """The metric as a lower-is-better number; missing or non-finite ranks last."""
        v = self.metrics.get(name)
        if v is None or not math.isfinite(float(v)):
            return math.inf
        return as_lower(name, float(v))

    def interval(self, name: str) -> tuple[float, float] | None:
        """The 95% CI of ``name`` as lower-is-better numbers (None without one)."""
        e = self.estimates.get(name)
        if not e:
            return None
        lo, hi = as_lower(name, float(e["ci_lo"])), as_lower(name, float(e["ci_hi"]))
        return (min(lo, hi), max(lo, hi))

    def format(self, name: str, spec: str = ".4f", missing: str = "missing") -> str:
        """``mean [lo, hi]`` (the 95% CI; a range over seeds for set scores), or the mean alone."""
        v = self.metrics.get(name)
        if v is None:
            return missing
        e = self.estimates.get(name)
        return f"{format(v, spec)} [{format(e['ci_lo'], spec)}, {format(e['ci_hi'], spec)}]" if e else format(v, spec)


@dataclass(frozen=True)
class EvaluationRecord:
    variant: str
    seeds: list[int]
    representative_seed: int
    checkpoint: str
    checkpoint_sha256: str
    step: int
    val_loss: float | None
    data_version: str | None
    git_commit: str | None
    eval_fingerprint: str
    eval_data: str
    manifest: str
    faces_dir: str | None
    identities: list[str]
    face_ids: dict[str, list[str]]
    device: str
    metrics: dict[str, float | None]
    estimates: dict[str, dict[str, Any]]
    per_seed: dict[str, dict[str, float | None]]
    landmarks: dict[str, Any]
    per_image: dict[str, dict[str, Any]]
    mlflow: MlflowRef | None = None

    @property
    def view(self) -> MetricView:
        """The catalogued metrics and their estimates, as the registry's rule reads them."""
        return MetricView({k: v for k, v in self.metrics.items() if k in EVAL_METRICS}, self.estimates)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any], source: str = "evaluation record") -> EvaluationRecord:
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in d and n != "mlflow"]
        if missing:
            raise EvaluateError(f"{source} lacks {', '.join(missing)} (written by an older version?); rerun "
                                "`dvc repro evaluate` to rebuild it")
        where = d.get("mlflow")
        return cls(**{n: d[n] for n in names if n != "mlflow"},
                   mlflow=MlflowRef(**where) if where else None)

    def save(self, path: str | Path) -> Path:
        from faceswap.files import write_json

        return write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> EvaluationRecord:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except OSError as err:
            raise EvaluateError(f"cannot read evaluation record {path}: {err.strerror}") from None
        except ValueError as err:
            raise EvaluateError(f"{path} is not valid JSON ({err}); rerun `dvc repro evaluate`") from None
        return cls.from_json(d, str(path))
