"""The held-out faces an evaluation measures: the ``test`` split of both identities, through the one face loader."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceswap.evaluation import EvaluateError


@dataclass
class EvalFaces:
    """The held-out faces of the two identities, in a fixed order, and a fingerprint of exactly them."""

    identities: tuple[str, str]
    face_ids: dict[str, list[str]]
    images: dict[str, np.ndarray]  # identity → (N, H, W, 3) uint8
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if not self.fingerprint:
            h = hashlib.sha256()
            for ident in self.identities:
                h.update(ident.encode())
                for fid in self.face_ids[ident]:
                    h.update(fid.encode())
                h.update(np.ascontiguousarray(self.images[ident]).tobytes())
            self.fingerprint = h.hexdigest()


def load_eval_faces(
    manifest: str | Path,
    identities: tuple[str, str],
    image_size: int,
    faces_dir: str | Path | None = None,
    max_faces: int | None = None,
) -> EvalFaces:
    """The ``split == 'test'`` crops of each identity, sorted by face id, at most ``max_faces`` evenly spaced
    (:func:`faceswap.data.dataset.load_faces`, the loader training uses, with its one policy).

    Test, not val: val chose the checkpoint, so a number measured on it would flatter the model.
    """
    from faceswap.data.dataset import FaceDataError, load_faces

    try:
        sets = load_faces(manifest, identities, "test", image_size, faces_dir, max_faces=max_faces, min_faces=2)
    except FaceDataError as err:
        raise EvaluateError(str(err)) from None
    return EvalFaces(identities, {i: list(s.face_ids) for i, s in sets.items()},
                     {i: s.images for i, s in sets.items()})
