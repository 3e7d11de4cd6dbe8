"""Training faces and the face-swap augmentation, as a deterministic stream indexed by sample number.

Sample ``k`` of the stream is a pair (one face of each identity): face ``perm_e[k mod N]`` where
``perm_e`` is a fresh permutation of the identity's faces for epoch ``e = k // N``, augmented with an
RNG seeded by ``(seed, k)``. So the data of step ``s`` depends only on ``s`` (not on what ran before):
resuming at step ``s`` sees exactly the batches an uninterrupted run would, and DDP ranks take
disjoint slices of the same stream (DistributedSampler-style) without any shared state.

Augmentation, as face-swap practice has it: a random affine (rotation, zoom, shift) and a horizontal
flip applied to input and target alike, colour jitter on both, and the classic deepfake **random
warp** (a 5×5 control grid perturbed by Gaussian noise, interpolated to a smooth flow) on the input
only, so the network must learn to produce the clean face from a distorted one. The warp's maps are the
identity plus a displacement field (never a resized coordinate grid: OpenCV's half-pixel resize would shift
every input the same way, which the model then learns to undo on inputs that never have it).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from faceswap.config import AugmentParams
from faceswap.errors import FaceswapError

REQUIRED_COLUMNS = ("face_id", "identity", "split", "path")


class FaceDataError(FaceswapError, ValueError):
    """A face manifest that is missing, lacks columns or faces, or points to unreadable crops."""


@dataclass(frozen=True)
class FaceSet:
    """Crops of one identity and split, decoded once: (N, H, W, 3) uint8."""

    identity: str
    split: str
    face_ids: tuple[str, ...]
    images: np.ndarray

    def __len__(self) -> int:
        return len(self.face_ids)


def resolve_crop(path: str, manifest: Path, faces_dir: Path | None) -> Path:
    """A manifest's crop path: absolute as is, else under ``faces_dir`` (or the manifest's own folder)."""
    p = Path(path)
    if p.is_absolute():
        return p
    for root in (faces_dir, manifest.parent):
        if root is not None and (root / p).is_file():
            return root / p
    return (faces_dir or manifest.parent) / p


def load_faces(
    manifest: str | Path,
    identities: tuple[str, ...],
    split: str,
    image_size: int,
    faces_dir: str | Path | None = None,
    max_faces: int | None = None,
    min_faces: int = 1,
) -> dict[str, FaceSet]:
    """The one face loader (training, validation loss, evaluation, identity reference): every crop of ``split``
    for each identity, sorted by face id, at most ``max_faces`` evenly spaced over them.

    One policy everywhere: a missing manifest or column, fewer than ``min_faces`` faces or an unreadable crop is
    a :class:`FaceDataError` naming the file; a crop of another size is resized (INTER_AREA) to ``image_size``,
    so a model sees the same pixels in training and in evaluation.
    """
    from faceswap.data.manifest import read_manifest
    from faceswap.imageio import ImageReadError, read_rgb
    from faceswap.pictures import evenly_spaced

    manifest = Path(manifest)
    if not manifest.is_file():
        raise FaceDataError(
            f"face manifest not found: {manifest} "
            "(run `dvc repro validate`, or point train.data / evaluate.data / --data at a manifest)"
        )
    df = read_manifest(manifest)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise FaceDataError(f"{manifest} lacks column(s) {', '.join(missing)}")
    root = Path(faces_dir) if faces_dir is not None else None
    out = {}
    for ident in identities:
        rows = df[(df["identity"] == ident) & (df["split"] == split)].sort_values("face_id")
        if rows.empty:
            raise FaceDataError(f"{manifest} has no {split} faces of identity {ident!r}")
        if len(rows) < min_faces:
            raise FaceDataError(
                f"identity {ident!r} has {len(rows)} {split} faces (split == {split!r}) in {manifest}; need at least "
                f"{min_faces} (set split.{split}_fraction and rerun the align stage)"
            )
        rows = rows.iloc[evenly_spaced(len(rows), max_faces)]
        images = []
        for face_id, rel in zip(rows["face_id"], rows["path"], strict=True):
            try:
                im = read_rgb(resolve_crop(rel, manifest, root))
            except ImageReadError as err:
                raise FaceDataError(f"face {face_id}: {err}") from None
            if im.shape[:2] != (image_size, image_size):
                import cv2

                im = cv2.resize(im, (image_size, image_size), interpolation=cv2.INTER_AREA)
            images.append(im)
        out[ident] = FaceSet(ident, split, tuple(rows["face_id"]), np.stack(images))
    return out


# --- augmentation ---


def _affine(rng: np.random.Generator, n: int, a: AugmentParams) -> np.ndarray:
    import cv2

    angle = rng.uniform(-a.rotate_deg, a.rotate_deg)
    scale = 1.0 + rng.uniform(-a.scale, a.scale)
    m = cv2.getRotationMatrix2D((n / 2, n / 2), angle, scale)
    m[:, 2] += rng.uniform(-a.shift, a.shift, 2) * n
    if rng.random() < a.flip:
        m = np.array([[-1.0, 0.0, n], [0.0, 1.0, 0.0]]) @ np.vstack([m, [0, 0, 1]])
    return m


WARP_GRID = 5  # control points per side of the classic deepfake warp


@functools.lru_cache(maxsize=8)
def _warp_basis(n: int, k: int = WARP_GRID) -> tuple[np.ndarray, float]:
    """Cubic interpolation weights (k, n) from k control points at the crop's corners and edges to n pixels.

    Control point ``j`` sits at pixel ``j·(n−1)/(k−1)`` (align-corners), so zero noise is the exact identity.
    Also returns the RMS gain from control-point noise to per-pixel displacement, so the noise can be scaled
    to give the requested displacement spread at any crop size.
    """
    basis = torch.nn.functional.interpolate(
        torch.eye(k, dtype=torch.float64).view(k, 1, 1, k), size=(1, n), mode="bicubic", align_corners=True
    ).view(k, n).numpy()
    per_axis = (basis**2).sum(axis=0)  # variance gain per pixel along one axis
    gain = float(np.sqrt(np.mean(np.outer(per_axis, per_axis))))
    return basis.astype(np.float32), gain


def warp_displacement(rng: np.random.Generator, n: int, strength: float) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random displacement field (dx, dy), each (n, n) in pixels, with RMS ``strength·n`` per axis.

    The classic deepfake warp: Gaussian noise on a 5×5 control grid, interpolated (bicubic) to every pixel.
    The grid's noise is scaled so the per-pixel displacement has standard deviation ``strength·n`` on average
    over the crop, whatever ``n``.
    """
    basis, gain = _warp_basis(n)
    sigma = strength * n / gain
    out = []
    for _ in range(2):
        ctrl = rng.normal(0.0, sigma, (WARP_GRID, WARP_GRID)).astype(np.float32)
        out.append(basis.T @ ctrl @ basis)
    return out[0], out[1]


def _random_warp_maps(rng: np.random.Generator, n: int, strength: float) -> tuple[np.ndarray, np.ndarray]:
    """Sampling maps for ``cv2.remap``: the identity plus :func:`warp_displacement` (exact identity at 0)."""
    dx, dy = warp_displacement(rng, n, strength)
    ident = np.arange(n, dtype=np.float32)
    return ident[None, :] + dx, ident[:, None] + dy


def _jitter(im: np.ndarray, rng: np.random.Generator, a: AugmentParams) -> np.ndarray:
    x = im.astype(np.float32)
    x *= 1.0 + rng.uniform(-a.brightness, a.brightness)
    mean = x.mean()
    x = (x - mean) * (1.0 + rng.uniform(-a.contrast, a.contrast)) + mean
    grey = x.mean(axis=2, keepdims=True)
    x = (x - grey) * (1.0 + rng.uniform(-a.saturation, a.saturation)) + grey
    return np.clip(x, 0, 255).astype(np.uint8)


def augment_pair(im: np.ndarray, rng: np.random.Generator, a: AugmentParams) -> tuple[np.ndarray, np.ndarray]:
    """(input, target) from one (n, n, 3) uint8 crop: shared affine/flip/colour, warp on the input only."""
    import cv2

    n = im.shape[0]
    target = cv2.warpAffine(im, _affine(rng, n, a), (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    target = _jitter(target, rng, a)
    if a.warp > 0:
        mx, my = _random_warp_maps(rng, n, a.warp)
        warped = cv2.remap(target, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    else:
        warped = target
    return warped, target


# --- the stream ---


def _epoch_perm(seed: int, ident_index: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, ident_index, epoch]).permutation(n)


class SwapPairs(torch.utils.data.Dataset):
    """Map-style dataset over sample numbers: item ``k`` → (warped, target) per identity, uint8 CHW."""

    def __init__(self, faces: dict[str, FaceSet], augment: AugmentParams, seed: int, coverage: float = 0.8) -> None:
        self.faces = faces
        self.augment = augment
        self.seed = seed
        self._perms: dict[tuple[int, int], np.ndarray] = {}
        self._region = None
        if augment.colour_transfer != "none":
            from faceswap.data.template import face_region

            side = next(iter(faces.values())).images.shape[1]
            self._region = face_region(side, coverage)

    def __len__(self) -> int:  # the stream is unbounded; samplers give the indices
        return 2**62

    def _index(self, ident_index: int, n: int, k: int) -> int:
        epoch, pos = divmod(k, n)
        key = (ident_index, epoch)
        if key not in self._perms:
            if len(self._perms) > 8:
                self._perms.clear()
            self._perms[key] = _epoch_perm(self.seed, ident_index, epoch, n)
        return int(self._perms[key][pos])

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        out = {}
        sets = list(self.faces.values())
        for i, (ident, fs) in enumerate(self.faces.items()):
            rng = np.random.default_rng([self.seed, 1_000_003, i, k])
            face = fs.images[self._index(i, len(fs), k)]
            if self._region is not None:
                face = self._recolour(face, i, k, sets)
            warped, target = augment_pair(face, rng, self.augment)
            out[f"{ident}_in"] = torch.from_numpy(warped).permute(2, 0, 1).contiguous()
            out[f"{ident}_target"] = torch.from_numpy(target).permute(2, 0, 1).contiguous()
        return out

    def _recolour(self, face: np.ndarray, i: int, k: int, sets: list[FaceSet]) -> np.ndarray:
        """With probability ``colour_transfer_p``, ``face`` in the colours of a random face of another identity
        (its own RNG stream, so the other augmentations draw the same numbers with the transfer on or off)."""
        from faceswap.data.colour import transfer

        rng = np.random.default_rng([self.seed, 2_000_003, i, k])
        if rng.random() >= self.augment.colour_transfer_p or len(sets) < 2:
            return face
        j = (i + 1 + int(rng.integers(len(sets) - 1))) % len(sets)
        ref = sets[j].images[int(rng.integers(len(sets[j])))]
        return transfer(self.augment.colour_transfer, face, ref, self._region)


class StepBatches(torch.utils.data.Sampler[list[int]]):
    """Batches of sample numbers for steps ``start..steps-1``; rank ``r`` of ``world`` takes its own slice."""

    def __init__(self, start: int, steps: int, batch_size: int, rank: int = 0, world: int = 1) -> None:
        self.start, self.steps, self.batch_size, self.rank, self.world = start, steps, batch_size, rank, world

    def __len__(self) -> int:
        return max(0, self.steps - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        b = self.batch_size
        for step in range(self.start, self.steps):
            first = (step * self.world + self.rank) * b
            yield list(range(first, first + b))


def worker_init(_: int) -> None:
    """One thread per loader worker: N workers × M OpenCV/torch threads each would oversubscribe the CPU."""
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def to_float(x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """uint8 (B, 3, H, W) → float in [0, 1] on ``device`` (the copy is async when the batch is pinned)."""
    x = x.to(device, non_blocking=True).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def stack_faces(fs: FaceSet, count: int) -> torch.Tensor:
    """The first ``count`` faces of a set, evenly spread over it, as uint8 (B, 3, H, W)."""
    count = min(count, len(fs))
    idx = np.linspace(0, len(fs) - 1, count).round().astype(int) if count > 1 else np.array([0])
    return torch.from_numpy(fs.images[idx]).permute(0, 3, 1, 2).contiguous()


__all__ = [
    "FaceDataError",
    "FaceSet",
    "StepBatches",
    "SwapPairs",
    "augment_pair",
    "load_faces",
    "resolve_crop",
    "stack_faces",
    "to_float",
    "worker_init",
]
