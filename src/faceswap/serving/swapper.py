"""One object that swaps faces: crops through the autoencoder, full frames through detect → align → swap →
paste back. The pyfunc (REST and in-process) and the video conversion both use it, so a frame is treated
the same way everywhere.

Detection and alignment are the data stage's own code (:mod:`faceswap.data.detect`,
:func:`faceswap.data.geometry.select_face`, :func:`~faceswap.data.geometry.umeyama` to
:func:`~faceswap.data.geometry.face_template`, :func:`~faceswap.data.geometry.warp_face`), with the align
section's detector, thresholds and template coverage: the crops match what the model was trained on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faceswap.names import DIRECTIONS  # the serving code names it from here (pyfunc, swap)

if TYPE_CHECKING:
    from faceswap.config import AlignParams, ServeParams


@dataclass(frozen=True)
class Face:
    """The face kept in a frame (frame pixels)."""

    box: np.ndarray  # (4,) x0, y0, x1, y1
    score: float
    landmarks: np.ndarray  # (5, 2)


class Swapper:
    """The trained autoencoder plus what full frames need (a detector, the template, blending settings)."""

    def __init__(self, model: Any, variant: str, serve: ServeParams, align: AlignParams, device: str) -> None:
        import torch

        from faceswap.compute import plan_compute
        from faceswap.data.geometry import face_template

        self.model = model
        self.variant = variant
        self.serve = serve
        self.align = align
        self.device = device
        self.plan = plan_compute(device, serve.precision, serve.channels_last, setting="serve")
        logging.getLogger(__name__).info("swapper model: %s", self.plan.describe())
        if self.plan.channels_last:
            model.to(memory_format=torch.channels_last)
        self.identities = tuple(model.config.identities)
        self.size = int(model.config.image_size)
        self.template = face_template(self.size, align.coverage)
        self._detector = None
        self.recorded_detector: dict = {}  # {"name", "weights_digest"} stored with the model by training
        self._lock = threading.Lock()  # the REST server predicts in threads; one model call at a time

    @classmethod
    def from_checkpoint(cls, path: str | Path, serve: ServeParams, align: AlignParams) -> Swapper:
        from faceswap.checkpoint import load_model
        from faceswap.devices import resolve_device

        device = resolve_device(serve.device, "serve.device")
        model, state = load_model(path, device)
        recorded = state.get("detector") or {}
        if align.detector == "auto" and recorded.get("name"):
            # the detector the training crops were made with, not what `auto` means on this host
            align = align.model_copy(update={"detector": recorded["name"]})
        sw = cls(model, str(state.get("variant") or model.config.decoder), serve, align, device)
        sw.recorded_detector = recorded
        return sw

    def target(self, direction: str) -> str:
        """The identity a direction renders: a2b → the second identity, b2a → the first."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
        return self.identities[1] if direction == "a2b" else self.identities[0]

    # --- crops -------------------------------------------------------------------------------------

    def swap_crops(self, crops: np.ndarray | Sequence[np.ndarray], direction: str) -> np.ndarray:
        """(N, S, S, 3) uint8 aligned crops → the same faces rendered as the direction's target identity."""
        import torch

        crops = np.asarray(crops)
        if not len(crops):
            return crops
        target = self.target(direction)
        out = []
        bs = self.serve.batch_size
        from faceswap.compute import to_layout

        with self._lock, torch.inference_mode(), self.plan.autocast():
            for i in range(0, len(crops), bs):
                x = torch.from_numpy(np.ascontiguousarray(crops[i : i + bs])).to(self.device)
                x = to_layout(x.permute(0, 3, 1, 2).float().div_(255), self.plan)  # (B, 3, S, S)
                y = self.model(x, target).float()
                out.append((y.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy())
        return np.concatenate(out)

    # --- full frames ---------------------------------------------------------------------------------

    @property
    def detector(self):
        if self._detector is None:
            from faceswap.data.detect import create_detector

            det = create_detector(
                self.align.detector, device=self.device, retinaface_weights=self.align.retinaface_weights,
                min_face_size=min(20, self.align.min_face_size),
            ).detector
            want = self.recorded_detector.get("weights_digest")
            if want and det.name == self.recorded_detector.get("name") and det.weights_digest != want:
                import warnings

                warnings.warn(f"serving detector {det.name} has weights {det.weights_digest}, but the model's "
                              f"crops were made with {want}", RuntimeWarning, stacklevel=2)
            self._detector = det
        return self._detector

    def detect(self, frames: Sequence[np.ndarray]) -> list:
        """Raw detections per frame (frames of different sizes are detected in separate calls)."""
        out: list = [None] * len(frames)
        groups: dict[tuple, list[int]] = {}
        for i, f in enumerate(frames):
            groups.setdefault(f.shape, []).append(i)
        with self._lock:
            for idx in groups.values():
                for j in range(0, len(idx), self.serve.batch_size):
                    part = idx[j : j + self.serve.batch_size]
                    for i, d in zip(part, self.detector.detect([frames[i] for i in part]), strict=True):
                        out[i] = d
        return out

    def pick(self, det, prev_box: np.ndarray | None = None, policy: str = "largest") -> tuple[Face | None, bool]:
        """The face to swap in one frame's detections (the align stage's rule), and whether it continues a track."""
        from faceswap.data.geometry import select_face

        i, _reason, continued = select_face(det, prev_box, policy, self.align.score_threshold,
                                            self.align.min_face_size, self.align.track_iou)
        if i is None:
            return None, False
        return Face(det.boxes[i].copy(), float(det.scores[i]), det.landmarks[i].copy()), continued

    def find_faces(self, frames: Sequence[np.ndarray]) -> list[Face | None]:
        """The largest qualifying face of each frame, or None."""
        return [self.pick(d)[0] for d in self.detect(frames)]

    def align_face(self, frame: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(aligned crop, 2×3 matrix frame → crop), as the align stage cuts its training crops."""
        from faceswap.data.geometry import umeyama, warp_face

        m = umeyama(landmarks, self.template)
        return warp_face(frame, m, self.size), m

    def paste(self, frame: np.ndarray, crop: np.ndarray, m: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        from faceswap.serving.blend import paste_back

        s = self.serve
        return paste_back(frame, crop, m, landmarks, mask_kind=s.blend_mask, feather=s.feather,
                          colour=s.colour_transfer, seamless=s.seamless_clone)

    def swap_frames(
        self, frames: Sequence[np.ndarray], direction: str, faces: Sequence[Face | None] | None = None
    ) -> tuple[list[np.ndarray], list[Face | None]]:
        """Swap the face in each frame (detected here unless ``faces`` is given); frames without one come back as is."""
        if faces is None:
            faces = self.find_faces(frames)
        todo = [i for i, f in enumerate(faces) if f is not None]
        out = list(frames)
        if not todo:
            return out, list(faces)
        aligned = [self.align_face(frames[i], faces[i].landmarks) for i in todo]
        swapped = self.swap_crops(np.stack([c for c, _ in aligned]), direction)
        for i, (_, m), crop in zip(todo, aligned, swapped, strict=True):
            out[i] = self.paste(frames[i], crop, m, faces[i].landmarks)
        return out, list(faces)


def runtime_params(raw: str | dict | None = None):
    """(ServeParams, AlignParams) from a JSON string or mapping holding ``serve`` and ``align`` sections."""
    import json

    from faceswap.config import parse_params

    data = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
    p = parse_params({k: v for k, v in data.items() if k in ("serve", "align")}, "serving settings")
    return p.serve, p.align
