"""The registered model as an MLflow pyfunc: a table of face crops in, swapped crops out.

Request (one row per image; pandas DataFrame or the JSON ``dataframe_split`` of ``mlflow models serve``):

==========  =======  ===============================================================================
column      type     meaning
==========  =======  ===============================================================================
image       string   base64 PNG or JPEG (RGB, grey or RGBA)
direction   string   ``a2b`` (render the face as the second identity) or ``b2a`` (as the first)
aligned     boolean  true: the image is already an aligned square crop (``faceswap align``)
==========  =======  ===============================================================================

Response, one row per request row: ``image`` (base64 PNG of the swapped crop at the model's size, or
null), ``direction``, ``identity`` (the identity rendered), ``variant``, ``size``, ``resized`` (the
crop was resized to the model's input), ``error`` (null, or why *this* row failed; other rows still
succeed). Full frames (``aligned`` false: detect, align, swap, paste back) come with the serving
stage; until then such rows get a clear error rather than a made-up result.

The model's only artifact is the training checkpoint (``checkpoint``), rebuilt with
:func:`faceswap.checkpoint.load_model`.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import mlflow.pyfunc
import numpy as np

DIRECTIONS = ("a2b", "b2a")
INPUT_COLUMNS = ("image", "direction", "aligned")
OUTPUT_COLUMNS = ("image", "direction", "identity", "variant", "size", "resized", "error")
FULL_FRAME_ERROR = (
    "aligned=false (a full frame) is not supported by this model version yet: send an aligned square face "
    "crop (as written by `faceswap align`) with aligned=true"
)


class RowError(ValueError):
    """A request row that cannot be served; the message goes into that row's ``error``."""


def encode_png(image: np.ndarray) -> str:
    """(H, W, 3) uint8 RGB → base64 PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_image(data: Any) -> np.ndarray:
    """base64 PNG/JPEG (str or bytes) → (H, W, 3) uint8 RGB; a RowError saying what is wrong."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(data, str):
        data = data.strip()
        if data.startswith("data:") and "," in data:  # data URL
            data = data.split(",", 1)[1]
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise RowError("image is not valid base64") from None
    elif isinstance(data, bytes | bytearray):
        raw = bytes(data)
    else:
        raise RowError(f"image must be a base64 string, got {type(data).__name__}")
    if not raw:
        raise RowError("image is empty")
    try:
        with Image.open(io.BytesIO(raw)) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise RowError(f"image is not a decodable PNG/JPEG: {err}") from None


def _as_bool(v: Any) -> bool:
    if isinstance(v, bool | np.bool_):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in ("true", "1", "yes", "false", "0", "no"):
        return v.strip().lower() in ("true", "1", "yes")
    if isinstance(v, int | np.integer) and v in (0, 1):
        return bool(v)
    raise RowError(f"aligned must be true or false, got {v!r}")


class FaceSwapModel(mlflow.pyfunc.PythonModel):
    """Swaps aligned face crops with the autoencoder from the ``checkpoint`` artifact."""

    def load_context(self, context: Any) -> None:
        import torch

        from faceswap.checkpoint import load_model

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model, state = load_model(context.artifacts["checkpoint"], self.device)
        self.identities = tuple(self.model.config.identities)
        self.size = int(self.model.config.image_size)
        self.variant = str(state.get("variant") or self.model.config.decoder)

    def _prepare(self, row: dict[str, Any]) -> tuple[np.ndarray, str, bool]:
        missing = [c for c in INPUT_COLUMNS if c not in row or row[c] is None]
        if missing:
            raise RowError(f"missing {', '.join(missing)}")
        direction = str(row["direction"]).strip().lower()
        if direction not in DIRECTIONS:
            raise RowError(f"direction must be one of {', '.join(DIRECTIONS)}, got {row['direction']!r}")
        if not _as_bool(row["aligned"]):
            raise RowError(FULL_FRAME_ERROR)
        image = decode_image(row["image"])
        h, w = image.shape[:2]
        if h != w:
            raise RowError(f"an aligned crop must be square, got {w}×{h}")
        if min(h, w) < 16:
            raise RowError(f"image is {w}×{h}; too small to be a face crop")
        resized = h != self.size
        if resized:
            import cv2

            interp = cv2.INTER_AREA if h > self.size else cv2.INTER_CUBIC
            image = cv2.resize(image, (self.size, self.size), interpolation=interp)
        return image, direction, resized

    def predict(self, context, model_input, params=None):  # untyped: MLflow reads hints as a schema
        import pandas as pd
        import torch

        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        rows: list[dict[str, Any]] = []
        todo: dict[str, list[tuple[int, np.ndarray]]] = {d: [] for d in DIRECTIONS}
        for i, rec in enumerate(df.to_dict("records")):
            out = {c: None for c in OUTPUT_COLUMNS}
            out.update(variant=self.variant, size=self.size, resized=False,
                       direction=str(rec.get("direction")) if rec.get("direction") is not None else None)
            try:
                image, direction, resized = self._prepare(rec)
                out.update(direction=direction, resized=resized,
                           identity=self.identities[1] if direction == "a2b" else self.identities[0])
                todo[direction].append((i, image))
            except RowError as err:
                out["error"] = str(err)
            rows.append(out)
        with torch.inference_mode():
            for direction, items in todo.items():
                if not items:
                    continue
                target = self.identities[1] if direction == "a2b" else self.identities[0]
                x = torch.from_numpy(np.stack([im for _, im in items])).permute(0, 3, 1, 2).float().div(255)
                y = self.model(x.to(self.device), target)
                ims = (y.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
                for (i, _), im in zip(items, ims, strict=True):
                    rows[i]["image"] = encode_png(im)
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))


def signature():
    """Input and output schema of the pyfunc (the serving layer validates requests against it)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    inputs = Schema([ColSpec("string", "image"), ColSpec("string", "direction"), ColSpec("boolean", "aligned")])
    outputs = Schema([
        ColSpec("string", "image", required=False), ColSpec("string", "direction"),
        ColSpec("string", "identity", required=False), ColSpec("string", "variant"), ColSpec("long", "size"),
        ColSpec("boolean", "resized"), ColSpec("string", "error", required=False),
    ])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(face_a: np.ndarray, face_b: np.ndarray):
    """Two real aligned crops, one per direction."""
    import pandas as pd

    return pd.DataFrame({"image": [encode_png(face_a), encode_png(face_b)], "direction": ["a2b", "b2a"],
                         "aligned": [True, True]})


def pip_requirements() -> list[str]:
    """Exact versions of what the pyfunc imports when it loads and predicts."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in ("mlflow", "torch", "numpy", "pandas", "pillow", "opencv-python-headless", "cloudpickle"):
        try:
            v = version(pkg)
        except PackageNotFoundError:
            continue
        reqs.append(f"{pkg}=={v.split('+')[0]}")
    return reqs
