"""What a face detector returns, and the interface every detector offers: the shared types, without any detector.

Geometry, validation, serving and evaluation read detections; only the align stage (and serving, which finds
faces in frames) builds a detector (:mod:`faceswap.data.detect`). Keeping the types here keeps the detectors'
code, and its weights, out of the stages that detect nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Detections:
    """The faces found in one frame."""

    boxes: np.ndarray  # (K, 4) float64 x0, y0, x1, y1
    scores: np.ndarray  # (K,) float64
    landmarks: np.ndarray  # (K, 5, 2) float64

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)))

    def __len__(self) -> int:
        return len(self.scores)


class Detector(Protocol):
    name: str  # recorded with every face
    weights_digest: str  # "sha256:<hex>" of the weights, recorded with every face
    device: str

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """Faces in each of ``frames`` (RGB uint8, all the same size)."""
        ...
