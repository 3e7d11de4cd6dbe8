"""Expression and pose preservation: does a swap follow its source's mouth, eyes and head? (issue #21)

A swap a→b should show b's face making a's expression in a's pose. Per aligned crop, from dlib's 68-point
shape predictor (``shape_predictor_68_face_landmarks.dat``, iBUG 300-W order; see :mod:`dlib_models`):

- **mouth opening** (``mouth``): inner-lip height (mean of the three vertical inner-lip gaps 61–67, 62–66,
  63–65) over mouth width (outer corners 48–54); 0 when the lips are closed;
- **eye opening** (``eyes``): the eye aspect ratio (Soukupová & Čech 2016: (|p2−p6| + |p3−p5|) / 2|p1−p4|),
  mean of both eyes; ≈ 0.3 open, → 0 closed;
- **head pose** (``yaw``, ``pitch``, ``roll``, degrees): ``cv2.solvePnP`` of the rigid points (brows, nose,
  eyes, upper lip and mouth corners; not the jaw contour, which slides with yaw, nor the lower lip, which
  moves with the jaw) against the generic 3D face :data:`MODEL_3D`, camera focal length = crop side, principal
  point = crop centre. Signs as the viewer sees the crop: yaw > 0 turned towards the crop's right, pitch > 0
  looking up, roll > 0 turned counter-clockwise (the sense of ``cv2.getRotationMatrix2D``'s angle).

The crops are aligned (5-point similarity to :func:`faceswap.data.geometry.face_template`), so roll here is
what is left of the head's roll after alignment (small), while yaw and pitch survive alignment. A swap comes
out of the decoder in its source's frame, so by default the predictor runs inside the face box the template
implies (:func:`faceswap.metrics.identity.face_rectangle`, where dlib's HOG detector puts its box on such
crops), after upscaling the crop to ≥ 192² (bicubic), as :func:`~faceswap.metrics.identity.landmarks68` does.
Measured on real talking-head crops at 64² (bench/expression_validation.py): that box and the detector's give
landmarks 0.17 px apart on clean crops, and the template's box keeps the measures steadier on blurred crops
(blur σ 1.5 px: mouth r 0.77 vs 0.65 against the sharp crop), so ``box="detector"`` is kept for comparison only.

The predictor returns a face shape inside any box, even on noise or a flat grey crop, so a fit alone cannot say
"no face here". Two tests, kept apart: a face's landmarks are *usable* (``fitted``) when the five anchors of
the fit (eye centres, nose tip, mouth corners) lie where an aligned face's do: their similarity fit to the
template leaves an RMS misfit ≤ :data:`MAX_MISFIT` of the crop side, with plausible scale and shift
(:func:`_fit_ok`); and a face is *found* (``face_found``) when dlib's HOG face detector sees a face overlapping
the template's box (IoU ≥ :data:`MIN_IOU`, on the same upscaled crop; measured: every clean, JPEG or σ ≤ 2.5
blurred real crop, 12% at σ 3.5, no noise or grey crop). ``unfitted`` counts a face failing either. The
correlations use every pair with usable landmarks (``require_face=True``: found faces only): the demo's blurry
64² swaps are mostly not found by the detector (79-100% after 1,000 training steps), and a swap that is not a
face gives landmarks that do not follow the source, so its correlation falls to ≈ 0 by itself.

:func:`preservation` correlates each measure between source faces and their swaps (Pearson over the faces
where both have usable landmarks), with a bootstrap 95% interval over face pairs. A swap that ignores its source (always
the same face: the "mean face" baseline) has a constant series; its correlation is reported as 0 with a note,
not as NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from faceswap.stats import BOOTSTRAP_SAMPLES, LEVEL

__all__ = [
    "MAX_MISFIT",
    "MEASURES",
    "MODEL_3D",
    "Expressions",
    "correlation",
    "eye_opening",
    "head_pose",
    "measure_expressions",
    "mouth_opening",
    "preservation",
]

MEASURES = ("mouth", "eyes", "yaw", "pitch", "roll")
MAX_MISFIT = 0.05  # RMS misfit of the 5 anchors to the template, share of the crop side (real: p99 0.028 a, 0.037 b)
SCALE_RANGE = (0.75, 1.33)  # the anchors' scale against the template's (real faces: 0.91-1.03)
MAX_SHIFT = 0.1  # the anchors' centre off the template's, share of the crop side (real faces: p99 0.027)
MIN_IOU = 0.3  # the HOG detection must overlap the template's face box this much (real faces: 0.78-0.85)
CONSTANT_STD = 1e-9  # a series whose standard deviation is below this is constant (correlation 0, noted)

# iBUG-68 mirror map: the landmark on the other side of the face (jaw, brows, nose, eyes, outer and inner lips)
FLIP = (list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
        + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
        + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])


def _model_3d() -> np.ndarray:
    """The generic 3D face of the 68-point layout, (68, 3) millimetres: x right, y down, z away from the camera.

    x, y: the mean of dlib's 68-point fit on 1,109 real aligned 64² crops of the talking-head demo (two men,
    bench/expression_validation.py) and on the two public-domain stills, each face scaled to 63 mm between
    its eye centres (the adult mean interpupillary distance), origin between the eyes, then made symmetric
    (mean with its mirror image). z: depth behind the nose tip (z = 0), hand-set from typical adult facial
    proportions (tip 20-30 mm ahead of the upper lip and chin, ~35-45 mm ahead of the eye corners, ~85 mm
    ahead of the jaw's contour at the ears), rounded: a generic head, not a fit, which is what a model for
    pose *changes* needs (an error in depth scales yaw and pitch, it does not reorder them).
    """
    # the left half of the face and the midline, (index, x, y, z); the right half is its mirror image
    half = [
        (0, -68.5, 9.6, 85), (1, -67.3, 27.5, 83), (2, -65.3, 44.6, 80), (3, -62.4, 61.6, 75), (4, -56.9, 78.0, 67),
        (5, -47.6, 92.6, 55), (6, -34.3, 103.7, 42), (7, -18.6, 112.4, 32), (8, 0.0, 115.1, 28),  # jaw
        (17, -57.9, -9.3, 58), (18, -50.9, -19.9, 45), (19, -38.7, -24.7, 36), (20, -25.3, -24.4, 30),
        (21, -13.3, -19.6, 27),  # brow
        (27, 0.0, -4.7, 22), (28, 0.0, 6.9, 15), (29, 0.0, 18.1, 8), (30, 0.0, 30.1, 0),  # nose bridge, tip
        (31, -14.3, 40.6, 18), (32, -7.4, 42.7, 13), (33, 0.0, 44.7, 11),  # nostrils
        (36, -43.2, 1.0, 47), (37, -36.2, -4.4, 38), (38, -27.3, -4.5, 36), (39, -18.8, 1.5, 35),
        (40, -27.3, 2.9, 37), (41, -36.1, 3.4, 39),  # eye
        (48, -27.8, 64.8, 35), (49, -17.8, 59.9, 25), (50, -7.6, 57.5, 20), (51, 0.0, 59.4, 18),  # upper lip
        (57, 0.0, 77.6, 21), (58, -7.9, 76.6, 23), (59, -18.2, 72.9, 28),  # lower lip
        (60, -23.7, 64.8, 34), (61, -7.6, 63.8, 24), (62, 0.0, 64.5, 21),  # inner upper lip
        (66, 0.0, 69.2, 22), (67, -7.7, 68.3, 24),  # inner lower lip
    ]
    out = np.full((68, 3), np.nan)
    for i, x, y, z in half:
        out[i] = (x, y, z)
        out[FLIP[i]] = (-x, y, z)
    assert not np.isnan(out).any()
    return out


MODEL_3D = _model_3d()
# Rigid points for the pose: brows 17-26, nose 27-35, eyes 36-47, upper outer lip 49-53 and the mouth corners
POSE_POINTS = np.array([*range(17, 48), 48, 49, 50, 51, 52, 53, 54])


@dataclass(frozen=True)
class Expressions:
    """Per face of a batch: the measures (``mouth``, ``eyes``, ``yaw``, ``pitch``, ``roll``; NaN where not
    usable), ``fitted`` (bool: the landmarks are usable, their anchors lie where an aligned face's do),
    ``misfit`` (RMS misfit of the 5 anchors, share of the crop side), ``face_found`` (bool: dlib's HOG
    detector saw a face in the crop's face box; all True without the check) and the
    ``landmarks`` (N, 68, 2) in crop pixels (NaN where the detector placed the box and found none)."""

    mouth: np.ndarray
    eyes: np.ndarray
    yaw: np.ndarray
    pitch: np.ndarray
    roll: np.ndarray
    fitted: np.ndarray
    misfit: np.ndarray
    face_found: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return len(self.fitted)

    def measure(self, name: str) -> np.ndarray:
        if name not in MEASURES:
            raise KeyError(f"unknown measure {name!r}; known: {list(MEASURES)}")
        return getattr(self, name)

    @property
    def unfitted(self) -> float | None:
        """Share of faces whose landmarks could not be fitted to a face: not usable, or no face found (None for an
        empty batch)."""
        return float(1.0 - (self.fitted & self.face_found).mean()) if len(self) else None

    @property
    def no_face(self) -> float | None:
        """Share of faces in which the detector found no face (None for an empty batch)."""
        return float(1.0 - self.face_found.mean()) if len(self) else None

    def take(self, idx: np.ndarray | Sequence[int]) -> Expressions:
        """The faces ``idx`` (an index array or boolean mask), in that order."""
        idx = np.asarray(idx)
        return Expressions(*(getattr(self, f)[idx] for f in
                             ("mouth", "eyes", "yaw", "pitch", "roll", "fitted", "misfit", "face_found",
                              "landmarks")))


def _dist(p: np.ndarray, i: int, j: int) -> np.ndarray:
    return np.linalg.norm(p[..., i, :] - p[..., j, :], axis=-1)


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """Inner-lip height over mouth width, per face of (N, 68, 2) landmarks."""
    height = (_dist(landmarks, 61, 67) + _dist(landmarks, 62, 66) + _dist(landmarks, 63, 65)) / 3
    return height / np.maximum(_dist(landmarks, 48, 54), 1e-9)


def eye_opening(landmarks: np.ndarray) -> np.ndarray:
    """Mean eye aspect ratio of both eyes (36-41 and 42-47), per face of (N, 68, 2) landmarks."""
    ears = []
    for o in (36, 42):  # p1..p6 = o..o+5
        ears.append((_dist(landmarks, o + 1, o + 5) + _dist(landmarks, o + 2, o + 4))
                    / np.maximum(2 * _dist(landmarks, o, o + 3), 1e-9))
    return (ears[0] + ears[1]) / 2


def anchors(landmarks: np.ndarray) -> np.ndarray:
    """The 5 template points (eye centres, nose tip, mouth corners) of (N, 68, 2) landmarks: (N, 5, 2)."""
    p = np.asarray(landmarks, float)
    return np.stack([p[:, 36:42].mean(1), p[:, 42:48].mean(1), p[:, 30], p[:, 48], p[:, 54]], axis=1)


def _fit_ok(points5: np.ndarray, side: int, coverage: float) -> tuple[bool, float]:
    """(fitted, misfit): do the 5 anchors lie where an aligned crop's face is? Misfit: the RMS residual of their
    similarity fit to the template, share of the crop side; the fit's scale and shift must also be plausible."""
    from faceswap.data.geometry import apply_affine, face_template, rms_residual, umeyama

    tpl = face_template(side, coverage)
    if not np.isfinite(points5).all():
        return False, math.inf
    m = umeyama(tpl, points5)
    misfit = rms_residual(m, tpl, points5) / side
    scale = math.sqrt(abs(np.linalg.det(m[:, :2])))
    shift = float(np.linalg.norm(apply_affine(m, tpl).mean(0) - tpl.mean(0))) / side
    ok = misfit <= MAX_MISFIT and SCALE_RANGE[0] <= scale <= SCALE_RANGE[1] and shift <= MAX_SHIFT
    return bool(ok), float(misfit)


def _euler(rvec: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) degrees of a camera-from-model rotation, R = Rz·Ry·Rx, signs as the module says."""
    import cv2

    r, _ = cv2.Rodrigues(rvec)
    ry = math.degrees(math.asin(max(-1.0, min(1.0, -r[2, 0]))))
    rx = math.degrees(math.atan2(r[2, 1], r[2, 2]))
    rz = math.degrees(math.atan2(r[1, 0], r[0, 0]))
    return -ry, -rx, -rz


def head_pose(landmarks: np.ndarray, side: int) -> np.ndarray:
    """(N, 3) yaw, pitch, roll in degrees of (N, 68, 2) landmarks in ``side``² crops (see the module docstring)."""
    import cv2

    f = float(side)
    cam = np.array([[f, 0, side / 2], [0, f, side / 2], [0, 0, 1]], np.float64)
    obj = MODEL_3D[POSE_POINTS].astype(np.float64)
    model_eyes = float(np.linalg.norm(MODEL_3D[42:48].mean(0) - MODEL_3D[36:42].mean(0)))
    out = np.full((len(landmarks), 3), np.nan)
    for i, p in enumerate(np.asarray(landmarks, np.float64)):
        if not np.isfinite(p).all():
            continue
        img = p[POSE_POINTS]
        eyes = float(np.linalg.norm(p[42:48].mean(0) - p[36:42].mean(0)))
        if eyes <= 1e-6:
            continue
        z = f * model_eyes / eyes  # a frontal start at the distance that gives the observed eye spacing
        centre = (p[36:48].mean(0) - cam[:2, 2]) * z / f - MODEL_3D[36:48].mean(0)[:2]
        rvec, tvec = np.zeros((3, 1)), np.array([[centre[0]], [centre[1]], [z]])
        ok, rvec, tvec = cv2.solvePnP(obj, img, cam, None, rvec, tvec, useExtrinsicGuess=True,
                                      flags=cv2.SOLVEPNP_ITERATIVE)
        if ok:
            out[i] = _euler(rvec)
    return out


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def _face_found(big: np.ndarray, template_box: tuple[int, int, int, int], detector: Any) -> Any:
    """dlib's HOG detection on the upscaled crop that overlaps the template's face box most (IoU ≥
    :data:`MIN_IOU`), else None. Looks again with the image upsampled once when nothing is found."""
    for upsample in (0, 1):
        boxes = list(detector(big, upsample))
        if boxes:
            break
    best, best_iou = None, 0.0
    for r in boxes:
        iou = _iou((r.left(), r.top(), r.right(), r.bottom()), template_box)
        if iou > best_iou:
            best, best_iou = r, iou
    return best if best_iou >= MIN_IOU else None


def measure_expressions(images: np.ndarray | Sequence[np.ndarray], coverage: float, *, box: str = "template",
                        face_check: bool = True, require_fit: bool = True,
                        names: Sequence[str] | None = None) -> Expressions:
    """The measures of every aligned crop ((N, H, H, 3) uint8 RGB, cut with ``coverage``; see the module).

    ``box="template"`` (default) fits the 68 points inside the face box the alignment implies;
    ``box="detector"`` inside the box dlib's HOG face detector finds (the one overlapping the template's box
    most). ``fitted``: the landmarks' anchors lie where an aligned face's do (the measures are NaN elsewhere);
    ``face_found``: with ``face_check`` (default; always with ``box="detector"``) the detector finds a face
    there (the predictor itself returns a face shape even on noise). Crops of one batch may differ in size.
    ``require_fit=False`` measures every crop whatever its anchors' misfit (``fitted`` then means "pose solved"):
    how a swap is measured, so that no swap goes unmeasured and a smear reads as the landmarks it gets, which do
    not follow the source (the instruments' "every swap" expression, docs/metrics.md).
    """
    import dlib

    from faceswap.metrics.identity import as_images, check_coverage, dlib_model, face_rectangle, upscaled

    if box not in ("template", "detector"):
        raise ValueError(f"box must be 'template' or 'detector', got {box!r}")
    coverage = check_coverage(coverage)
    items = as_images(images, names)
    n = len(items)
    sp = dlib_model("shape68")
    detector = dlib.get_frontal_face_detector() if face_check or box == "detector" else None
    lms = np.full((n, 68, 2), np.nan)
    found = np.ones(n, bool)
    for i, im in enumerate(items):
        big, k = upscaled(im, 192)
        rect = face_rectangle(big.shape[0], coverage)
        hit = _face_found(big, rect, detector) if detector is not None else None
        found[i] = detector is None or hit is not None
        if box == "detector" and hit is None:
            continue
        shape = sp(big, hit if box == "detector" else dlib.rectangle(*rect))
        pts = np.array([(q.x, q.y) for q in shape.parts()], np.float64)
        lms[i] = (pts + 0.5) / k - 0.5  # pixel centres of the upscaled image back to the crop's
    fitted, misfit = np.zeros(n, bool), np.full(n, np.inf)
    pose = np.full((n, 3), np.nan)
    five = anchors(lms) if n else np.empty((0, 5, 2))
    for i, im in enumerate(items):
        ok, misfit[i] = _fit_ok(five[i], im.shape[0], coverage)
        fitted[i] = ok or (not require_fit and bool(np.isfinite(five[i]).all()))
        if fitted[i]:
            pose[i] = head_pose(lms[i : i + 1], im.shape[0])[0]
    fitted &= np.isfinite(pose).all(axis=1)
    mouth, eyes = (mouth_opening(lms), eye_opening(lms)) if n else (np.empty(0), np.empty(0))
    nan = np.where(fitted, 0.0, np.nan)
    return Expressions(mouth=mouth + nan, eyes=eyes + nan, yaw=pose[:, 0] + nan, pitch=pose[:, 1] + nan,
                       roll=pose[:, 2] + nan, fitted=fitted, misfit=misfit, face_found=found, landmarks=lms)


def correlation(x: np.ndarray, y: np.ndarray) -> tuple[float, str | None]:
    """(Pearson r, note). A constant series (std < :data:`CONSTANT_STD`) or fewer than 3 pairs gives r = 0 and a
    note saying which: a swap that never changes does not follow its source, and 0 says so without a NaN."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 3:
        return 0.0, f"{len(x)} face pair(s): too few for a correlation"
    sx, sy = x.std(), y.std()
    if sx < CONSTANT_STD or sy < CONSTANT_STD:
        which = " and ".join(w for w, s in (("source", sx), ("swap", sy)) if s < CONSTANT_STD)
        return 0.0, f"{which} series constant: correlation undefined, reported as 0"
    return float(np.clip(((x - x.mean()) * (y - y.mean())).mean() / (sx * sy), -1.0, 1.0)), None


def _bootstrap(x: np.ndarray, y: np.ndarray, samples: int, level: float, seed: int) -> tuple[float, float]:
    """Percentile interval of Pearson r over face pairs resampled with replacement (constant resamples: 0)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), (samples, len(x)))
    xs, ys = x[idx], y[idx]
    xc, yc = xs - xs.mean(1, keepdims=True), ys - ys.mean(1, keepdims=True)
    den = np.sqrt((xc**2).mean(1) * (yc**2).mean(1))
    r = np.where(den > CONSTANT_STD**2, (xc * yc).mean(1) / np.maximum(den, 1e-300), 0.0)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(np.clip(r, -1, 1), [tail, 100 - tail])
    return float(lo), float(hi)


def preservation(source_faces: np.ndarray | Sequence[np.ndarray] | Expressions,
                 swapped_faces: np.ndarray | Sequence[np.ndarray] | Expressions, *, coverage: float,
                 require_face: bool = False, samples: int = BOOTSTRAP_SAMPLES, level: float = LEVEL,
                 seed: int = 0) -> dict[str, Any]:
    """How well swaps follow their sources: face i of ``swapped_faces`` is the swap of face i of ``source_faces``
    (aligned crops, or their :class:`Expressions` when already measured).

    Returns, per measure m of :data:`MEASURES`: ``m`` = {``corr`` (Pearson r over the pairs where both faces have
    usable landmarks, and with ``require_face`` where the detector found both), ``ci_lo``, ``ci_hi`` (bootstrap
    ``level`` interval over face pairs), ``mean_abs_diff`` (mean |source − swap|, the measure's units), ``note``
    (why r is 0 by rule, else None)}; ``m_corr`` (= ``m["corr"]``); ``corr_mean`` (mean r of the five);
    ``per_face``: m → the pairs' standardised products z_source·z_swap, whose mean is r (for a per-face
    bootstrap across seeds, :func:`faceswap.stats.hierarchical_bootstrap`); ``pairs``; ``faces``; ``unfitted``
    (share of swaps whose landmarks could not be fitted to a face: :attr:`Expressions.unfitted`), ``no_face``
    (share of swaps in which the detector found no face) and ``source_unfitted``.
    """
    src = source_faces if isinstance(source_faces, Expressions) else measure_expressions(source_faces, coverage)
    swp = swapped_faces if isinstance(swapped_faces, Expressions) else measure_expressions(swapped_faces, coverage)
    if len(src) != len(swp):
        raise ValueError(f"{len(src)} source faces but {len(swp)} swaps: they must be paired one to one")
    both = src.fitted & swp.fitted
    if require_face:
        both &= src.face_found & swp.face_found
    out: dict[str, Any] = {"faces": len(src), "pairs": int(both.sum()), "unfitted": swp.unfitted,
                           "no_face": swp.no_face, "source_unfitted": src.unfitted, "per_face": {}}
    for name in MEASURES:
        x, y = src.measure(name)[both], swp.measure(name)[both]
        r, note = correlation(x, y)
        lo, hi = _bootstrap(x, y, samples, level, seed) if note is None else (0.0, 0.0)
        out[name] = {"corr": r, "ci_lo": min(lo, r), "ci_hi": max(hi, r),
                     "mean_abs_diff": float(np.abs(x - y).mean()) if len(x) else None, "note": note}
        out[f"{name}_corr"] = r
        if note is None:
            out["per_face"][name] = ((x - x.mean()) / x.std() * (y - y.mean()) / y.std()).tolist()
        else:
            out["per_face"][name] = [0.0] * len(x)
    out["corr_mean"] = float(np.mean([out[f"{m}_corr"] for m in MEASURES]))
    return out
