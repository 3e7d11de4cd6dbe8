"""The roll retry: any detector, plus a second look where the face is rolled, so a face at any roll comes out with
good landmarks (``align.roll_retry``; the evidence for its angle sets: ``bench/roll_coverage.py``, docs/data.md).

The interface the align stage uses is narrow: :meth:`RollRetry.look_upright` per batch, :meth:`RollRetry.recover`
per clip, and the counts in :attr:`RollRetry.stats`; :meth:`RollRetry.detect` runs both passes on one batch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from faceswap.data.detect import Detections, Detector, DetectorError

ROLL_ANGLES = (45, -45, 90, -90, 135, -135, 180)  # tried in this order on frames with no usable face upright
ROLL_ANGLES_LARGE = (90, -90, 180)  # enough where the faces next to a faceless run are at least LARGE_FACE px
LARGE_FACE = 96  # px: 1.5 × the 64 px from which ROLL_ANGLES_LARGE finds every roll (bench/roll_coverage.py)
REFINE_STEPS = 3  # at most this many de-rolled looks at one rolled face
REFINE_TOLERANCE = 3.0  # degrees: a de-rolled face this close to upright needs no further look


@dataclass
class RollStats:
    """What the roll retry did, counted as it runs (the align report's ``roll_*`` figures)."""

    retried: int = 0  # frames with no usable face upright
    turned: int = 0  # of those, frames looked at again turned (probes and the frames a find spread to)
    recovered: int = 0  # frames where a turned look found a usable face
    refined: int = 0  # rolled faces detected again de-rolled


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
    (the face's own eyes), so the similarity fit undoes the roll. :meth:`detect` runs both passes on one batch;
    :attr:`stats` counts what they did.
    """

    def __init__(
        self,
        inner: Detector,
        usable: Callable[[Detections], np.ndarray] | None = None,
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
        self.stats = RollStats()

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
        self.stats.retried += len(todo)
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

        self.stats.turned += len(plan)
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
                        self.stats.recovered += 1
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
                self.stats.refined += 1
                if abs(face_roll(d.landmarks[q])) > REFINE_TOLERANCE:  # still rolled where it should be upright
                    still.append((i, j))
            pending = still
        for i, arrays in new.items():
            out[i] = Detections(*arrays)
