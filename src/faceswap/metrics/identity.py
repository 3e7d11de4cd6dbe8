"""Identity transfer: does a swap look like the target person rather than the source?

One module for the descriptor, its chip geometry and the three readings built on it (distance to centroids,
verification, gallery retrieval), because all three must cut the chip and batch the network the same way.

The judge is dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1``: 128-D, 99.38% on LFW;
two photos of one person are usually < 0.6 apart in Euclidean distance). It wants a 150² chip aligned the way
dlib aligns faces. Our crops are already aligned by the data stages (5-point Umeyama to
:func:`faceswap.data.geometry.face_template`), and a swap comes out of the decoder in the same frame, so by
default the chip is taken straight from that geometry: the similarity that maps the crop's template points onto
the same five points of dlib's mean face (eye centres, nose tip, mouth corners; padding 0.25, as
``dlib.get_face_chip``). No detector and no landmark fit runs on the swap, which matters because swaps are
often too blurry to detect. ``landmarks="shape5"`` instead fits dlib's 5-point predictor inside the known face
rectangle of the crop and lets dlib cut the chip; both were measured on the demo crops (docs/metrics.md).

A swap a→b counts as a *success* when its descriptor is closer to the centroid of b's training crops than to
the centroid of a's. That test is relative and has no floor: a face that is nobody (a heavy blur, ≈ 0.6 from
both centroids) still "succeeds" if it leans the right way. A swap is *verified* as b when it is also within the
calibrated threshold of b's centroid (:func:`calibrate_verification`: the 95th percentile of real test faces'
distances to their own centroid, issue #21), i.e. as close to b as b's own real faces are. Per-face values are
returned so the caller can bootstrap over faces.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "CHIP_SIZE",
    "SAME_PERSON_THRESHOLD",
    "VERIFY_QUANTILE",
    "IdentityEncoder",
    "Verification",
    "calibrate_verification",
    "face_rectangle",
    "identity_centroids",
    "identity_transfer",
    "landmarks68",
    "transfer_scores",
]

CHIP_SIZE = 150  # dlib's descriptor input side
CHIP_PADDING = 0.25  # dlib.get_face_chip's default, used by dlib's own examples for the descriptor
SAME_PERSON_THRESHOLD = 0.6  # dlib's pairwise threshold (LFW); a face is nearer its own centroid than that
MIN_SIDE = 16
DIM = 128
# The verification threshold is this quantile of real test faces' distances to their own identity's centroid
# (both identities pooled): a swap verified as t is as close to t's centroid as 95% of t's real faces are, so
# real faces are rejected 5% of the time by construction (issue #21; docs/metrics.md).
VERIFY_QUANTILE = 0.95

# Eye centres (mean of landmarks 36-41 and 42-47), nose tip (30) and mouth corners (48, 54) of the mean face
# that dlib's get_face_chip_details aligns to (dlib/image_transforms/interpolation.h, landmarks 17-67 on [0, 1]):
# the same five points, in the same order, as the ArcFace template our crops are aligned to.
DLIB_MEAN_FACE_5 = np.array(
    [[0.225492, 0.215990], [0.754761, 0.215990], [0.490127, 0.515625], [0.254149, 0.780233], [0.726104, 0.780233]]
)
# Where dlib's HOG face detector puts its box, in template units (crop side 1, coverage 1): centre x, centre y,
# side. Measured on 117 demo frames (x 0.492 ± 0.032, y 0.651 ± 0.022, side 0.750 ± 0.061); the shape
# predictors were trained on boxes like these.
HOG_BOX = (0.5, 0.65, 0.75)


def _chip_points() -> np.ndarray:
    return (DLIB_MEAN_FACE_5 + CHIP_PADDING) / (1 + 2 * CHIP_PADDING) * CHIP_SIZE


def check_coverage(coverage: float) -> float:
    if not (isinstance(coverage, int | float) and 0.2 <= float(coverage) <= 1.5):
        raise ValueError(f"coverage must be a number in [0.2, 1.5] (params align.coverage), got {coverage!r}")
    return float(coverage)


def as_images(images: np.ndarray | Sequence[np.ndarray], names: Sequence[str] | None) -> list[np.ndarray]:
    """Validate a batch of square RGB uint8 crops; errors name the offending crop (index, and name if given)."""
    if isinstance(images, np.ndarray) and images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, 3) uint8 crops or a list of (H, W, 3); got shape {images.shape}")
    items = list(images)
    if names is not None and len(names) != len(items):
        raise ValueError(f"{len(names)} names for {len(items)} images")
    for i, im in enumerate(items):
        which = f"crop {i}" + (f" ({names[i]})" if names is not None else "")
        if not isinstance(im, np.ndarray):
            raise ValueError(f"{which} is a {type(im).__name__}, not a numpy array")
        if im.dtype != np.uint8:
            raise ValueError(f"{which} has dtype {im.dtype}; expected uint8 RGB")
        if im.ndim != 3 or im.shape[2] != 3 or im.shape[0] != im.shape[1]:
            raise ValueError(f"{which} has shape {im.shape}; expected a square (H, H, 3) RGB crop")
        if im.shape[0] < MIN_SIDE:
            raise ValueError(f"{which} is {im.shape[0]}² (empty or too small); need at least {MIN_SIDE}²")
    return items


def face_rectangle(side: int, coverage: float) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the box dlib's face detector would draw on an aligned ``side``² crop."""
    cx, cy, s = HOG_BOX
    scale = side * coverage
    x, y, half = side * 0.5 + scale * (cx - 0.5), side * 0.5 + scale * (cy - 0.5), scale * s / 2
    return round(x - half), round(y - half), round(x + half), round(y + half)


_models: dict[str, Any] = {}
_models_lock = threading.Lock()


def dlib_model(key: str) -> Any:
    """dlib model objects, loaded once per process from the verified cache (see :mod:`dlib_models`)."""
    import dlib

    from faceswap.metrics.dlib_models import DlibModelsError, model_path

    with _models_lock:
        if key not in _models:
            path = model_path(key)
            try:
                _models[key] = (dlib.face_recognition_model_v1 if key == "resnet" else dlib.shape_predictor)(
                    str(path)
                )
            except RuntimeError as err:
                raise DlibModelsError(f"dlib cannot load {path}: {err}") from None
        return _models[key]


def upscaled(im: np.ndarray, min_side: int) -> tuple[np.ndarray, float]:
    import cv2

    k = max(1, int(np.ceil(min_side / im.shape[0])))
    if k == 1:
        return np.ascontiguousarray(im), 1.0
    return cv2.resize(im, (im.shape[1] * k, im.shape[0] * k), interpolation=cv2.INTER_CUBIC), float(k)


def _fit_shape(predictor: Any, im: np.ndarray, coverage: float) -> tuple[Any, np.ndarray, float]:
    """Run a dlib shape predictor inside the known face box of an aligned crop, upscaled to ≥ 192² first."""
    import dlib

    big, k = upscaled(im, 192)
    shape = predictor(big, dlib.rectangle(*face_rectangle(big.shape[0], coverage)))
    return shape, big, k


class IdentityEncoder:
    """dlib's 128-D face descriptor for aligned crops (see the module docstring for the two landmark modes)."""

    def __init__(self, landmarks: str = "template", batch_size: int = 32) -> None:
        if landmarks not in ("template", "shape5"):
            raise ValueError(f"landmarks must be 'template' or 'shape5', got {landmarks!r}")
        self.landmarks = landmarks
        self.batch_size = batch_size
        self._rec = dlib_model("resnet")
        self._sp5 = dlib_model("shape5") if landmarks == "shape5" else None

    def chips(self, images: np.ndarray | Sequence[np.ndarray], coverage: float,
              names: Sequence[str] | None = None) -> np.ndarray:
        """The (N, 150, 150, 3) uint8 chips the descriptor sees (template geometry; for inspection and tests)."""
        import cv2

        from faceswap.data.geometry import face_template, umeyama, warp_face

        coverage = check_coverage(coverage)
        out = np.empty((len(items := as_images(images, names)), CHIP_SIZE, CHIP_SIZE, 3), np.uint8)
        for i, im in enumerate(items):
            m = umeyama(face_template(im.shape[0], coverage), _chip_points())
            if abs(np.linalg.det(m[:, :2])) >= 1:  # enlarging (small crops): bicubic
                out[i] = cv2.warpAffine(im, m, (CHIP_SIZE, CHIP_SIZE), flags=cv2.INTER_CUBIC,
                                        borderMode=cv2.BORDER_REFLECT)
            else:  # shrinking (256² crops and up): supersample and area-average, as the align stage
                out[i] = warp_face(im, m, CHIP_SIZE)
        return out

    def describe(self, images: np.ndarray | Sequence[np.ndarray], coverage: float,
                 names: Sequence[str] | None = None) -> np.ndarray:
        """(N, 128) float32 descriptors of aligned crops ((N, H, H, 3) uint8, cut with ``coverage``)."""
        coverage = check_coverage(coverage)
        items = as_images(images, names)
        if not items:
            return np.empty((0, DIM), np.float32)
        if self.landmarks == "template":
            chips = self.chips(items, coverage)
            batches = [chips[s : s + self.batch_size] for s in range(0, len(chips), self.batch_size)]
            pool = _descriptor_pool() if len(batches) > 1 else None
            if pool is None:
                return np.concatenate([_describe_chips(b, self._rec) for b in batches])
            return np.concatenate(list(pool.map(_describe_chips, batches)))
        out = np.empty((len(items), DIM), np.float32)
        for i, im in enumerate(items):
            shape, big, _ = _fit_shape(self._sp5, im, coverage)
            out[i] = np.asarray(self._rec.compute_face_descriptor(big, shape))
        return out


def _describe_chips(chips: np.ndarray, rec: Any = None) -> np.ndarray:
    """(N, 128) descriptors of 150² chips; in a pool worker ``rec`` is that process's own model."""
    rec = rec if rec is not None else dlib_model("resnet")
    return np.asarray([np.asarray(v) for v in rec.compute_face_descriptor(list(chips))], np.float32).reshape(-1, DIM)


#: worker processes for the descriptor (dlib holds the GIL while it computes, so threads do not help);
#: $FACESWAP_IDENTITY_WORKERS overrides, 0 or 1 = in this process
_pool: dict[str, Any] = {}


def _descriptor_workers() -> int:
    import os

    env = os.environ.get("FACESWAP_IDENTITY_WORKERS")
    if env is not None and env.strip().isdigit():
        return int(env)
    return min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _descriptor_pool() -> Any | None:
    """One pool per process, started on first need and reused. Forked, not spawned: a spawned worker re-imports
    the caller's ``__main__`` (a ``python -c`` or stdin script, an unguarded bench), a forked one inherits the model
    already loaded and runs only dlib in it. None where one core is all there is or fork is missing (Windows):
    then the descriptor runs here."""
    workers = _descriptor_workers()
    if workers < 2:
        return None
    with _models_lock:
        if "pool" not in _pool:
            import atexit
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            try:
                _pool["pool"] = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
            except (OSError, ValueError):
                _pool["pool"] = None
            if _pool["pool"] is not None:
                atexit.register(_pool["pool"].shutdown, wait=False, cancel_futures=True)
        return _pool["pool"]


_default: dict[str, IdentityEncoder] = {}
_default_lock = threading.Lock()


def shared_encoder(encoder: IdentityEncoder | None = None) -> IdentityEncoder:
    """The given encoder, else one shared template-mode encoder per process."""
    if encoder is not None:
        return encoder
    with _default_lock:
        if "template" not in _default:
            _default["template"] = IdentityEncoder()
        return _default["template"]


def identity_centroids(
    images_by_identity: Mapping[str, np.ndarray | Sequence[np.ndarray]],
    coverage: float,
    encoder: IdentityEncoder | None = None,
) -> dict[str, np.ndarray]:
    """Mean descriptor (128,) per identity, from its (training) crops: the reference each swap is judged against."""
    enc = shared_encoder(encoder)
    out = {}
    for ident, images in images_by_identity.items():
        d = enc.describe(images, coverage)
        if len(d) == 0:
            raise ValueError(f"identity {ident!r} has no crops to build its centroid from")
        out[ident] = d.mean(axis=0)
    return out


def transfer_scores(
    descriptors: np.ndarray, source_identity: str, target_identity: str, centroids: Mapping[str, np.ndarray],
    threshold: float | None = None,
) -> dict[str, Any]:
    """:func:`identity_transfer` on precomputed (N, 128) descriptors; with ``threshold`` (the calibrated
    :attr:`Verification.threshold`) also ``verified`` and ``verified_per_face``: nearer the target than the
    source *and* within ``threshold`` of the target's centroid."""
    for ident in (source_identity, target_identity):
        if ident not in centroids:
            raise KeyError(f"no centroid for identity {ident!r}; have {sorted(centroids)}")
    if source_identity == target_identity:
        raise ValueError(f"source and target identity are both {source_identity!r}")
    d = np.asarray(descriptors, np.float64)
    if d.ndim != 2 or d.shape[1] != DIM:
        raise ValueError(f"descriptors must be (N, {DIM}), got shape {d.shape}")
    to_target = np.linalg.norm(d - np.asarray(centroids[target_identity], np.float64), axis=1)
    to_source = np.linalg.norm(d - np.asarray(centroids[source_identity], np.float64), axis=1)
    success = to_target < to_source
    n = len(d)
    out: dict[str, Any] = {}
    if threshold is not None:
        if not (isinstance(threshold, int | float) and math.isfinite(threshold) and threshold > 0):
            raise ValueError(f"threshold must be a positive distance, got {threshold!r}")
        verified = success & (to_target <= threshold)
        out = {"verified": float(verified.mean()) if n else None, "verified_per_face": verified}
    return out | {
        "success": float(success.mean()) if n else None,
        "distance": float(to_target.mean()) if n else None,
        "distance_source": float(to_source.mean()) if n else None,
        "margin": float((to_source - to_target).mean()) if n else None,
        "n": n,
        "success_per_face": success,
        "distance_per_face": to_target,
        "distance_source_per_face": to_source,
        "margin_per_face": to_source - to_target,
    }


def gallery_retrieval(queries: np.ndarray, source_gallery: np.ndarray, target_gallery: np.ndarray,
                      margin: float = 0.0, leave_out: bool = False) -> dict[str, Any]:
    """Identity at the query's own sharpness: is each query (N, 128) nearer the target's gallery than the source's?

    A gallery is a set of descriptors of one person *as sharp as the queries*: in evaluation, the model's own
    reconstructions of each person's test faces (same decoders, same blur), so a swap is compared with faces of its
    own sharpness, not with sharp real faces that a blur is never near (dlib's descriptor reads a 1-px blur as
    nobody). Score = distance to the source gallery's centroid − distance to the target's; ``retrieved`` = score >
    ``margin``, the margin calibrated on real faces so that the other person passes ≤ 1% of the time
    (bench/swap_instruments.py, docs/metrics.md). ``leave_out``: query i is also gallery item i of the source
    gallery (calibration on real faces), which is then left out of that centroid."""
    q = np.asarray(queries, np.float64)
    gs, gt = np.asarray(source_gallery, np.float64), np.asarray(target_gallery, np.float64)
    if q.ndim != 2 or len(gs) < 2 or len(gt) < 1:
        raise ValueError(f"need (N, {DIM}) queries and galleries of ≥ 2 / ≥ 1 faces, got {q.shape}, {gs.shape}, "
                         f"{gt.shape}")
    if leave_out:
        if len(gs) != len(q):
            raise ValueError("leave_out needs one source gallery item per query")
        centres = (gs.sum(0)[None] - gs) / (len(gs) - 1)
    else:
        centres = gs.mean(0)[None]
    score = np.linalg.norm(q - centres, axis=1) - np.linalg.norm(q - gt.mean(0)[None], axis=1)
    retrieved = score > margin
    return {"retrieved": float(retrieved.mean()) if len(q) else None, "score": float(score.mean()) if len(q) else None,
            "retrieved_per_face": retrieved.astype(float).tolist(), "score_per_face": score.tolist()}


@dataclass(frozen=True)
class Verification:
    """The calibrated "is this person" threshold and how it does on real test faces (issue #21).

    ``own``: distances of each identity's real test faces to its own centroid; ``other``: distances of the other
    person's real test faces to that centroid (an impostor against it). ``threshold`` is the
    :data:`VERIFY_QUANTILE` (0.95) quantile of the own distances of both identities pooled (numpy's linear
    interpolation); ``false_reject``: share of own faces beyond it (≈ 0.05 by construction); ``false_accept``:
    share of the other person's faces within it of a centroid that is not theirs. ``eer`` / ``eer_threshold``:
    the equal-error point of the same two distributions, for comparison (where they do not overlap the error is
    0 and the threshold the middle of the gap). Per-identity rates are keyed by the centroid's identity.
    """

    threshold: float
    quantile: float
    false_accept: float
    false_reject: float
    false_accept_per_identity: dict[str, float]
    false_reject_per_identity: dict[str, float]
    eer: float
    eer_threshold: float
    own_median: float
    other_median: float
    own_faces: int
    other_faces: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Verification:
        return cls(**d)


def _equal_error(own: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """(rate, threshold) where the false-reject rate of ``own`` equals the false-accept rate of ``other``.

    Both rates are step functions that change only at the observed distances, constant on [v_k, v_k+1); the
    point is the middle of the interval (of observed values) where |FAR − FRR| is least."""
    values = np.unique(np.concatenate([own, other]))
    frr = (own[None, :] > values[:, None]).mean(axis=1)
    far = (other[None, :] <= values[:, None]).mean(axis=1)
    gap = np.abs(far - frr)
    best = np.flatnonzero(gap == gap.min())
    lo, hi = values[best[0]], values[min(best[-1] + 1, len(values) - 1)]
    return float(((far + frr) / 2)[best].min()), float((lo + hi) / 2)


def calibrate_verification(own: Mapping[str, np.ndarray], other: Mapping[str, np.ndarray],
                           quantile: float = VERIFY_QUANTILE) -> Verification:
    """The verification threshold from real test faces (see :class:`Verification` for ``own`` / ``other``)."""
    if set(own) != set(other) or not own:
        raise ValueError(f"own and other distances must be keyed by the same identities, got {sorted(own)} and "
                         f"{sorted(other)}")
    if not 0.5 <= quantile < 1:
        raise ValueError(f"quantile must be in [0.5, 1), got {quantile!r}")
    o = {i: np.asarray(v, np.float64).ravel() for i, v in own.items()}
    x = {i: np.asarray(v, np.float64).ravel() for i, v in other.items()}
    for name, d in (("own", o), ("other", x)):
        for i, v in d.items():
            if len(v) == 0 or not np.isfinite(v).all():
                raise ValueError(f"{name} distances of identity {i!r} are empty or not finite")
    pooled_own, pooled_other = np.concatenate(list(o.values())), np.concatenate(list(x.values()))
    thr = float(np.quantile(pooled_own, quantile))
    eer, eer_thr = _equal_error(pooled_own, pooled_other)
    return Verification(
        threshold=thr, quantile=float(quantile),
        false_accept=float((pooled_other <= thr).mean()), false_reject=float((pooled_own > thr).mean()),
        false_accept_per_identity={i: float((v <= thr).mean()) for i, v in x.items()},
        false_reject_per_identity={i: float((v > thr).mean()) for i, v in o.items()},
        eer=eer, eer_threshold=eer_thr, own_median=float(np.median(pooled_own)),
        other_median=float(np.median(pooled_other)), own_faces=len(pooled_own), other_faces=len(pooled_other))


def identity_transfer(
    swaps: np.ndarray | Sequence[np.ndarray],
    source_identity: str,
    target_identity: str,
    centroids: Mapping[str, np.ndarray],
    *,
    coverage: float,
    encoder: IdentityEncoder | None = None,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Score swaps source→target (aligned (N, H, H, 3) uint8 crops) against the identities' centroids.

    Returns ``success`` (share of swaps nearer the target's centroid than the source's), ``distance`` (mean
    distance to the target's centroid), ``distance_source``, ``margin`` (mean of distance to source minus
    distance to target; > 0 leans to the target), ``n``, and the per-face arrays ``success_per_face``,
    ``distance_per_face``, ``distance_source_per_face`` and ``margin_per_face`` for bootstrap confidence
    intervals. The same call on held-out *truth* crops of the target (source = the other identity) gives the
    ceiling, ≈ 1; on the source crops themselves (a "swap" that keeps the source), the floor, ≈ 0.

    A blurry swap loses identity altogether: both distances approach ~0.6 and ``success`` drifts towards a coin
    flip (0.5) with ``margin`` near 0, so read ``success`` together with ``margin`` and ``distance``, or pass
    the calibrated ``threshold`` to get ``verified`` (see :func:`transfer_scores`), which such a swap fails.
    """
    desc = shared_encoder(encoder).describe(swaps, coverage)
    return transfer_scores(desc, source_identity, target_identity, centroids, threshold)


def landmarks68(images: np.ndarray | Sequence[np.ndarray], coverage: float,
                names: Sequence[str] | None = None) -> np.ndarray:
    """(N, 68, 2) dlib 68-point landmarks (iBUG order, crop pixels), fitted inside each crop's known face box.

    Never fails to return points (there is no detection step), so it cannot flag a swap with no face in it;
    the model's licence (iBUG 300-W) excludes commercial use.
    """
    coverage = check_coverage(coverage)
    items = as_images(images, names)
    sp = dlib_model("shape68")
    out = np.empty((len(items), 68, 2), np.float64)
    for i, im in enumerate(items):
        shape, _, k = _fit_shape(sp, im, coverage)
        pts = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
        out[i] = (pts + 0.5) / k - 0.5  # pixel centres of the upscaled image back to the crop's
    return out
