"""Paste-back pieces on real faces: the landmark mask, Reinhard colour transfer, and the serve params."""

from __future__ import annotations

import numpy as np
import pytest

from faceswap.config import ConfigError, parse_params
from faceswap.data.demo import astronaut
from faceswap.serving.blend import face_mask, paste_back, reinhard


@pytest.mark.parametrize("kind", ["hull", "ellipse"])
def test_mask_covers_the_face_and_fades_at_the_edge(kind):
    still = astronaut()
    mask = face_mask(still.image.shape[:2], still.landmarks, kind, feather=0.08)
    cx, cy = still.landmarks.mean(0).round().astype(int)
    assert mask[cy, cx] == pytest.approx(1.0, abs=0.01)  # the face centre is fully swapped
    for lx, ly in still.landmarks.round().astype(int):
        assert mask[ly, lx] > 0.9
    assert mask[10, 10] == 0 and mask[-10, -10] == 0  # nowhere near the face
    soft = ((mask > 0.05) & (mask < 0.95)).sum()
    assert soft > 0.1 * (mask > 0.95).sum()  # a real feathered band, not a hard edge
    hard = face_mask(still.image.shape[:2], still.landmarks, kind, feather=0.0)
    assert ((hard > 0.05) & (hard < 0.95)).sum() < soft / 3


def test_reinhard_moves_lab_statistics_to_the_target():
    import cv2

    rng = np.random.default_rng(0)
    src = np.clip(rng.normal(90, 20, (64, 64, 3)), 0, 255).astype(np.uint8)
    tgt = np.clip(rng.normal((180, 120, 100), 15, (64, 64, 3)), 0, 255).astype(np.uint8)
    mask = np.ones((64, 64), np.float32)
    out = reinhard(src, tgt, mask)
    lab = lambda im: cv2.cvtColor(im.astype(np.float32) / 255, cv2.COLOR_RGB2LAB).reshape(-1, 3)  # noqa: E731
    assert np.allclose(lab(out).mean(0), lab(tgt).mean(0), atol=1.5)
    assert np.allclose(lab(out).std(0), lab(tgt).std(0), atol=1.5)


@pytest.mark.parametrize("seamless", [False, True])
def test_paste_back_changes_only_the_face_region(seamless):
    from faceswap.data.geometry import face_template, umeyama, warp_face

    still = astronaut()
    m = umeyama(still.landmarks, face_template(64))
    crop = warp_face(still.image, m, 64)
    swapped = np.ascontiguousarray(crop[:, ::-1])  # a visibly different "face" of the same size
    out = paste_back(still.image, swapped, m, still.landmarks, seamless=seamless)
    assert out.shape == still.image.shape
    diff = np.abs(out.astype(int) - still.image).sum(2)
    ys, xs = np.nonzero(diff)
    assert len(ys) > 500
    cx, cy = still.landmarks.mean(0)
    assert abs(xs.mean() - cx) < 25 and abs(ys.mean() - cy) < 30
    assert diff[:40].sum() == 0 and diff[:, :100].sum() == 0  # far from the face: untouched


def test_serve_params_are_validated_with_clear_errors():
    p = parse_params({"serve": {"blend_mask": "ellipse", "port": 8080, "seamless_clone": True}})
    assert p.serve.host == "127.0.0.1" and p.serve.blend_mask == "ellipse"
    for bad, words in (({"blend_mask": "square"}, "serve.blend_mask"), ({"colour_transfer": "hist"}, "reinhard"),
                       ({"port": 70000}, "serve.port"), ({"feather": 0.9}, "serve.feather"),
                       ({"max_image_pixels": 10}, "serve.max_image_pixels"), ({"batch": 3}, "unknown key"),
                       ({"host": "http://x/"}, "serve.host")):
        with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
            parse_params({"serve": bad})
