"""The registry's aliases, and why one cannot be loaded: what serving and the register stage share.

The register stage moves the aliases (:mod:`faceswap.registry`, which logs models with :mod:`faceswap.serving`);
serving and ``faceswap swap`` only load them. Both read the names from here, so neither imports the other.
"""

from __future__ import annotations

CHAMPION, CHALLENGER = "champion", "challenger"
#: the alias of a version registered by ``fallback`` although it fails the gates: usable, never the champion
UNQUALIFIED = "unqualified"


def alias_problem(model_uri: str, tracking_uri: str) -> str | None:
    """Why ``models:/<name>@<alias>`` cannot be loaded, in words that name the way out (None: it can, or the URI
    is not an alias). The usual case: ``@champion`` before any version passed the gates, when the registry holds
    only an ``@unqualified`` fallback."""
    from mlflow.exceptions import MlflowException

    from faceswap.tracking import connect

    if not model_uri.startswith("models:/") or "@" not in model_uri:
        return None
    name, alias = model_uri.removeprefix("models:/").split("@", 1)
    client = connect(tracking_uri)
    try:
        aliases = client.get_registered_model(name).aliases or {}
    except MlflowException:
        return (f"no registered model {name!r} in {tracking_uri}: run the pipeline (`dvc repro`) or "
                "`faceswap register` first, or pass --model with a checkpoint .pt")
    if alias in aliases:
        return None
    held = ", ".join(f"@{a} → version {v}" for a, v in sorted(aliases.items())) or "no alias at all"
    hint = (f"; --model models:/{name}@{UNQUALIFIED} loads the best one registered without passing them"
            if UNQUALIFIED in aliases else "")
    why = " (no version has passed the register gates yet: metrics/register.json says why)" if alias == CHAMPION else ""
    return f"{name} has no @{alias}{why}; it holds {held}{hint}"
