"""Test-set evaluation in small pieces, one job each; :mod:`faceswap.stages.evaluate` is the stage that joins them.

- :mod:`.faces`: the held-out (``test``) faces, through the one face loader (:func:`faceswap.data.dataset.load_faces`);
- :mod:`.metrics`: running a model on them and every number of docs/metrics.md, and the mean over seeds;
- :mod:`.pictures`: the preview grid, zoomed flat region and error spectrum people look at;
- :mod:`.runs`: where the numbers go in MLflow (through :mod:`faceswap.tracking`, like every stage);
- :mod:`.record`: the evaluation record, the typed contract between stage evaluate and stage register.
"""

from __future__ import annotations

from faceswap.errors import FaceswapError


class EvaluateError(FaceswapError, RuntimeError):
    """Evaluation inputs that are missing or inconsistent (no test faces, a model that is not two-way, …)."""
