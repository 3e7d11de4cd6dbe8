"""How well does the template's face ellipse (the masked input) fit each real face, against a hull of its landmarks?

    python bench/mask_fit.py [--data-root DIR] [--split train] [--max-faces 300] [--out bench/results]
                             [--picture docs/img/mask-fit.jpg]

The masked input (``model.input_mask: ellipse``) keeps one feathered ellipse placed by the alignment template, the
same for every crop. The alternative the peer tools use is a per-face region: the convex hull of that face's
landmarks. This measures, on the accepted crops of the real pair (the validate stage's manifest under
``--data-root``), with dlib's 68 points fitted inside the template's face box
(:func:`faceswap.metrics.identity.landmarks68`), per identity:

- ``hull_in_ellipse``: share of the face hull (all 68 points; the brows are its top) the ellipse keeps: what the
  ellipse cuts off the face;
- ``ext_in_ellipse``: the same for the *extended* hull (the brows raised by half the brow-to-eye-line distance
  again, towards the hairline, as peers' "extended" masks do);
- ``ellipse_off_ext``: share of the ellipse outside the extended hull: non-face pixels (hair, room, neck) that
  still reach the encoder through the ellipse;
- ``rim_rgb_diff``: the mean colour of those pixels, a minus b (0-255 per channel), beside the same for the face
  hull (``face_rgb_diff``) and the whole crop: whether what passes the ellipse is skin or the room;
- ``hull_iou_to_mean``: IoU of each face's hull with the identity's mean hull: how much a per-face hull moves from
  crop to crop (1.0 = a fixed mask would do as well).

Prints a table and writes ``mask_fit.json`` (bootstrap 95% CIs over faces). About 20 s for 2 × 300 faces.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

BROWS = slice(17, 27)
EYES = slice(36, 48)


def hull_mask(points: np.ndarray, size: int) -> np.ndarray:
    """(size, size) bool: the filled convex hull of ``points`` (crop pixel coordinates)."""
    import cv2

    m = np.zeros((size, size), np.uint8)
    hull = cv2.convexHull(np.round(points * 16).astype(np.int32))
    cv2.fillConvexPoly(m, hull, 1, lineType=cv2.LINE_8, shift=4)
    return m.astype(bool)


def extended(points: np.ndarray) -> np.ndarray:
    """The 68 points with the brows raised by half their distance to the eye line, towards the hairline."""
    out = points.copy()
    eye_y = points[EYES, 1].mean()
    out[BROWS, 1] -= 0.5 * (eye_y - points[BROWS, 1])
    return out


def share(inner: np.ndarray, outer: np.ndarray) -> float:
    """The share of ``inner``'s pixels that lie in ``outer`` (NaN when ``inner`` is empty)."""
    n = inner.sum()
    return float((inner & outer).sum() / n) if n else float("nan")


def mean_ci(values: np.ndarray, seed: int = 0) -> dict:
    from faceswap.stats import hierarchical_bootstrap

    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    est = hierarchical_bootstrap([values], seed=seed)
    return {"mean": est.mean, "lo": est.lo, "hi": est.hi, "n": est.faces}


def measure(images: np.ndarray, coverage: float) -> dict:
    """Per-face fit of the ellipse against the face's own hulls (see the module docstring)."""
    from faceswap.data.template import face_region
    from faceswap.metrics.identity import landmarks68

    size = images.shape[1]
    ellipse = face_region(size, coverage)
    pts = landmarks68(images, coverage)
    hulls = np.stack([hull_mask(p, size) for p in pts])
    exts = np.stack([hull_mask(extended(p), size) for p in pts])
    mean_hull = hulls.mean(0) > 0.5
    rows = {"hull_in_ellipse": [], "ext_in_ellipse": [], "ellipse_off_ext": [], "hull_iou_to_mean": []}
    rim_rgb, face_rgb = [], []
    for im, h, e in zip(images, hulls, exts, strict=True):
        rows["hull_in_ellipse"].append(share(h, ellipse))
        rows["ext_in_ellipse"].append(share(e, ellipse))
        rim = ellipse & ~e
        rows["ellipse_off_ext"].append(float(rim.sum() / ellipse.sum()))
        rows["hull_iou_to_mean"].append(float((h & mean_hull).sum() / max((h | mean_hull).sum(), 1)))
        face_rgb.append(im[h].mean(0))
        if rim.any():
            rim_rgb.append(im[rim].mean(0))
    return {"per_face": {k: np.array(v) for k, v in rows.items()}, "rim_rgb": np.array(rim_rgb),
            "face_rgb": np.array(face_rgb), "landmarks": pts,
            "ellipse_px": int(ellipse.sum()), "mean_hull_px": int(mean_hull.sum())}


def picture(faces: dict, landmarks: dict, coverage: float, path: Path, per_identity: int = 6,
            scale: int = 4) -> None:
    """Crops of each identity (rows), upscaled, with the ellipse's edge (green) and the extended hull's (red);
    ``landmarks``: each identity's 68 points, as :func:`measure` fitted them."""
    import cv2

    from faceswap.data.template import face_region
    from faceswap.imageio import write_rgb
    from faceswap.pictures import evenly_spaced

    rows = []
    for ident, fs in faces.items():
        size = fs.images.shape[1]
        ellipse = face_region(size, coverage)
        picks = evenly_spaced(len(fs), per_identity)
        tiles = []
        for im, p in zip(fs.images[picks], landmarks[ident][picks], strict=True):
            big = cv2.resize(im, (size * scale,) * 2, interpolation=cv2.INTER_CUBIC)
            for mask, colour in ((ellipse, (0, 255, 0)), (hull_mask(extended(p), size), (255, 0, 0))):
                up = cv2.resize(mask.astype(np.uint8), (size * scale,) * 2, interpolation=cv2.INTER_NEAREST)
                contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
                cv2.drawContours(big, contours, -1, colour, 1)
            tiles.append(big)
        rows.append(np.concatenate(tiles, axis=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_rgb(path, np.concatenate(rows, axis=0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", type=Path, default=REPO, help="the project folder whose data/ holds the crops")
    ap.add_argument("--split", default="train")
    ap.add_argument("--max-faces", type=int, default=300)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--picture", type=Path, help="also draw both regions on a few crops of each identity (jpg/png)")
    args = ap.parse_args(argv)

    from faceswap.config import load_params
    from faceswap.data.dataset import load_faces

    params = load_params(args.data_root / "params.yaml")
    root = args.data_root
    faces = load_faces(root / params.paths.accepted, tuple(params.base.identities), args.split,
                       params.base.image_size, faces_dir=root / params.paths.faces, max_faces=args.max_faces)
    coverage = params.align.coverage
    results, rims, face_rgb, landmarks = {}, {}, {}, {}
    for ident, fs in faces.items():
        m = measure(fs.images, coverage)
        results[ident] = {k: mean_ci(v) for k, v in m["per_face"].items()}
        results[ident]["ellipse_px"], results[ident]["mean_hull_px"] = m["ellipse_px"], m["mean_hull_px"]
        rims[ident], face_rgb[ident], landmarks[ident] = m["rim_rgb"], m["face_rgb"], m["landmarks"]
    a, b = sorted(rims)[:2]
    diff = rims[a].mean(0) - rims[b].mean(0)
    face_sets = {i: fs.images.reshape(-1, 3).mean(0) for i, fs in faces.items()}
    out = {"split": args.split, "coverage": coverage, "image_size": params.base.image_size,
           "identities": results, "rim_rgb_diff": {"pair": f"{a}-{b}", "rgb": diff.round(1).tolist()},
           "rim_rgb": {i: r.mean(0).round(1).tolist() for i, r in rims.items()},
           "face_rgb": {i: r.mean(0).round(1).tolist() for i, r in face_rgb.items()},
           "face_rgb_diff": (face_rgb[a].mean(0) - face_rgb[b].mean(0)).round(1).tolist(),
           "crop_rgb": {i: v.round(1).tolist() for i, v in face_sets.items()}}
    print(f"{'identity':8} {'faces':>5} {'hull in ellipse':>16} {'ext. hull in ellipse':>21} "
          f"{'ellipse off ext. hull':>22} {'hull IoU to mean':>17}")
    for ident, r in results.items():
        cells = [f"{r[k]['mean']:.3f} [{r[k]['lo']:.3f}, {r[k]['hi']:.3f}]"
                 for k in ("hull_in_ellipse", "ext_in_ellipse", "ellipse_off_ext", "hull_iou_to_mean")]
        print(f"{ident:8} {r['hull_in_ellipse']['n']:5d} {cells[0]:>16} {cells[1]:>21} {cells[2]:>22} {cells[3]:>17}")
    print(f"mean RGB of the ellipse's non-face pixels: {out['rim_rgb']}; {a} − {b}: {out['rim_rgb_diff']['rgb']}")
    print(f"mean RGB inside the face hull: {out['face_rgb']}; {a} − {b}: {out['face_rgb_diff']}")
    print(f"mean RGB of the whole crops: {out['crop_rgb']}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "mask_fit.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
    if args.picture:
        picture(faces, landmarks, coverage, args.picture)
        print(f"wrote {args.picture}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
