"""Face detectors with 5 landmarks, behind one small interface.

A detector takes a batch of RGB uint8 frames of one size and returns, per frame, the boxes
``(K, 4)`` as x0, y0, x1, y1, the scores ``(K,)`` and the landmarks ``(K, 5, 2)`` in the order
left eye, right eye, nose, left mouth corner, right mouth corner (left/right as seen in the image).

- ``mtcnn``: facenet-pytorch's MTCNN; its weights ship inside the wheel, so it works offline.
- ``retinaface``: the ResNet-50 RetinaFace of ``retinaface-pytorch`` (weights ``resnet50_2020-07-20``),
  loaded from the torch hub cache or an explicit path with ``torch.load(weights_only=True)``; batched
  inference at the frames' own resolution (longest side capped), float landmarks.
- ``auto``: RetinaFace when its weights are present *and* a GPU is, MTCNN otherwise (RetinaFace-R50
  on a CPU is several times slower than MTCNN; this is what deepfakes/faceswap does too).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from faceswap.config import DETECTORS
from faceswap.devices import resolve_device
from faceswap.errors import FaceswapError

RETINAFACE_MODEL = "resnet50_2020-07-20"
RETINAFACE_URL = (
    "https://github.com/ternaus/retinaface/releases/download/0.01/retinaface_resnet50_2020-07-20-f168fae3c.zip"
)


class DetectorError(FaceswapError, RuntimeError):
    """A detector that cannot be built (unknown name, missing weights, missing package)."""


class RetinaFaceWeightsError(DetectorError):
    """RetinaFace's weights are not where we look for them."""


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
    device: str

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """Faces in each of ``frames`` (RGB uint8, all the same size)."""
        ...


def _as_float_array(x, shape: tuple[int, ...]) -> np.ndarray:
    """facenet-pytorch under numpy 2 may hand back object arrays: rebuild a float array."""
    if x is None:
        return np.zeros((0, *shape))
    return np.asarray(np.asarray(x).tolist(), dtype=np.float64).reshape(-1, *shape)


class MtcnnDetector:
    """MTCNN (facenet-pytorch 2.6, weights in the wheel)."""

    name = "mtcnn"

    def __init__(self, device: str = "cpu", min_face_size: int = 20) -> None:
        from facenet_pytorch import MTCNN

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
        f"align.retinaface_weights in params.yaml; or use --detector mtcnn (weights ship with facenet-pytorch)."
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


class RetinaFaceDetector:
    """RetinaFace ResNet-50 (retinaface-pytorch 0.0.7 network), batched, float landmarks."""

    name = "retinaface"
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
        import torch

        self.device, self.max_size, self.confidence, self.nms_iou = device, max_size, confidence, nms_iou
        net = build_retinaface_network()
        state = _load_state_dict(path)
        state = {k.removeprefix("module."): v for k, v in state.items()}
        try:
            net.load_state_dict(state)
        except RuntimeError as err:
            raise DetectorError(f"{path} does not hold RetinaFace {RETINAFACE_MODEL} weights: {err}") from None
        self.net = net.to(device).eval()
        self.weights = path
        self._priors: dict[tuple[int, int], torch.Tensor] = {}

    def _prior_boxes(self, h: int, w: int):
        from retinaface.prior_box import priorbox

        if (h, w) not in self._priors:
            self._priors[(h, w)] = priorbox(
                min_sizes=[[16, 32], [64, 128], [256, 512]], steps=[8, 16, 32], clip=False, image_size=(h, w)
            ).to(self.device)
        return self._priors[(h, w)]

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        import torch
        import torch.nn.functional as F
        from retinaface.box_utils import decode, decode_landm
        from torchvision.ops import nms

        if not len(frames):
            return []
        h0, w0 = frames[0].shape[:2]
        scale = min(1.0, self.max_size / max(h0, w0))
        x = torch.from_numpy(np.stack(frames)).to(self.device).permute(0, 3, 1, 2).float()  # (B, 3, H, W)
        if scale < 1.0:
            x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1) * 255
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1) * 255
        x = (x - mean) / std
        h, w = x.shape[2:]
        hp, wp = -(-h // 32) * 32, -(-w // 32) * 32
        x = F.pad(x, (0, wp - w, 0, hp - h))  # pad right/bottom: coordinates stay put
        priors = self._prior_boxes(hp, wp)
        with torch.inference_mode():
            loc, conf, land = self.net(x)
        scores_all = F.softmax(conf, dim=-1)[..., 1]
        to_px = torch.tensor([wp, hp], device=self.device, dtype=torch.float32) / scale
        out = []
        for i in range(len(frames)):
            keep = scores_all[i] > self.confidence
            if not keep.any():
                out.append(Detections.empty())
                continue
            boxes = decode(loc[i][keep], priors[keep], [0.1, 0.2]) * to_px.repeat(2)
            lms = decode_landm(land[i][keep], priors[keep], [0.1, 0.2]).view(-1, 5, 2) * to_px
            scores = scores_all[i][keep]
            k = nms(boxes, scores, self.nms_iou)
            out.append(
                Detections(
                    boxes[k].double().cpu().numpy(),
                    scores[k].double().cpu().numpy(),
                    lms[k].double().cpu().numpy(),
                )
            )
        return out


@dataclass(frozen=True)
class DetectorChoice:
    detector: Detector
    reason: str  # why this backend (matters for `auto`)


def create_detector(
    name: str = "auto",
    *,
    device: str = "auto",
    retinaface_weights: str | Path | None = None,
    min_face_size: int = 20,
) -> DetectorChoice:
    """Build a detector by name; ``auto`` prefers RetinaFace with weights on a GPU, else MTCNN."""
    if name not in DETECTORS:
        raise DetectorError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
    dev = resolve_device(device)
    if name == "mtcnn":
        return DetectorChoice(MtcnnDetector(dev, min_face_size), "asked for")
    if name == "retinaface":
        return DetectorChoice(RetinaFaceDetector(retinaface_weights, dev), "asked for")
    try:
        find_retinaface_weights(retinaface_weights)
        have_weights = True
    except RetinaFaceWeightsError:
        have_weights = False
    if have_weights and dev == "cuda":
        return DetectorChoice(RetinaFaceDetector(retinaface_weights, dev), "auto: RetinaFace weights and a GPU")
    why = "no RetinaFace weights" if not have_weights else "no GPU"
    return DetectorChoice(MtcnnDetector(dev, min_face_size), f"auto: MTCNN ({why})")
