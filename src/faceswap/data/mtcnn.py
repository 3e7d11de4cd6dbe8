"""MTCNN (facenet-pytorch), the detector that needs no download: its weights ship inside the wheel.

Its own module so that what only needs MTCNN (evaluation's landmark check) does not depend on the RetinaFace code
of :mod:`faceswap.data.detect`, which builds every detector by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from faceswap.detections import Detections
from faceswap.files import file_sha256


def _as_float_array(x, shape: tuple[int, ...]) -> np.ndarray:
    """facenet-pytorch under numpy 2 may hand back object arrays: rebuild a float array."""
    if x is None:
        return np.zeros((0, *shape))
    return np.asarray(np.asarray(x).tolist(), dtype=np.float64).reshape(-1, *shape)


class MtcnnDetector:
    """MTCNN (facenet-pytorch 2.6, weights in the wheel)."""

    name = "mtcnn"

    def __init__(self, device: str = "cpu", min_face_size: int = 20) -> None:
        import hashlib

        import facenet_pytorch
        from facenet_pytorch import MTCNN

        data = Path(facenet_pytorch.__file__).parent / "data"
        parts = "".join(file_sha256(data / f"{n}net.pt") for n in "pro")  # digest of the three digests
        self.weights_digest = "sha256:" + hashlib.sha256(parts.encode()).hexdigest()
        self.device = device
        self.model = MTCNN(keep_all=True, min_face_size=min_face_size, device=device, select_largest=False)

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        import torch

        if not len(frames):
            return []
        batch = np.stack(frames) if len(frames) > 1 else frames[0][None]
        with torch.inference_mode():
            boxes, probs, points = self.model.detect(batch, landmarks=True)
        out = []
        for b, p, pts in zip(boxes, probs, points, strict=True):
            if b is None or p is None or pts is None:
                out.append(Detections.empty())
                continue
            out.append(
                Detections(_as_float_array(b, (4,)), _as_float_array(p, ()).ravel(), _as_float_array(pts, (5, 2)))
            )
        return out
