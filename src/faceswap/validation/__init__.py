"""Great Expectations gate between ``align`` and training (``faceswap validate``).

- :mod:`.checks`: measurements on the crops and clips (no GX);
- :mod:`.suite`: the expectations, built from ``params.yaml`` (read and extend it there);
- :mod:`.stage`: :func:`run_validation`, the stage itself (GX is imported only when it runs).
"""

from faceswap.validation.stage import (
    ACCEPTED_NAME,
    QUARANTINE_NAME,
    Failure,
    ValidationResult,
    ValidationStageError,
    format_summary,
    run_validation,
)

__all__ = [
    "ACCEPTED_NAME",
    "QUARANTINE_NAME",
    "Failure",
    "ValidationResult",
    "ValidationStageError",
    "format_summary",
    "run_validation",
]
