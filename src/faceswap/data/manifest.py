"""Schema of ``<paths.faces>/manifest.parquet``: one row per aligned face.

The parquet file is written with this exact Arrow schema (even with zero rows), so readers (the
validation stage, the dataset, Great Expectations) can rely on the column names and types. Array
columns are nested fixed-shape lists; :func:`column_array` turns one into an ``(N, ...)`` float array.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST_NAME = "manifest.parquet"


def schema_spec():
    """Each manifest column as (name, arrow type, meaning): the one layout the manifest and the validation read."""
    import pyarrow as pa

    f64, i64, s = pa.float64(), pa.int64(), pa.string()
    point = pa.list_(f64, 2)
    return [
        ("face_id", s, "unique id: <identity>__<video>__<frame_index:06d>"),
        ("identity", s, "identity folder name (a, b)"),
        ("video", s, "video id within the identity (path under the identity folder)"),
        ("frame_index", i64, "index of the frame in the video (0-based, before sampling)"),
        ("timestamp_s", f64, "frame time in the video, seconds"),
        ("split", s, "train or val (see params split)"),
        ("path", s, "aligned crop, relative to the manifest's folder"),
        ("frame_path", s, "source frame, relative to the frames folder"),
        ("detector", s, "backend that found the face (retinaface, retinaface_r50, mtcnn)"),
        ("detector_weights", s, "sha256:<hex> of the detector's weights"),
        ("score", f64, "detector confidence"),
        ("box", pa.list_(f64, 4), "face box in the frame: x0, y0, x1, y1"),
        ("landmarks_src", pa.list_(point, 5), "5 detected landmarks in the frame (eyes, nose, mouth corners)"),
        ("landmarks_aligned", pa.list_(point, 5), "the detected landmarks mapped into the crop by matrix"),
        ("matrix", pa.list_(pa.list_(f64, 3), 2), "2×3 forward affine: frame → crop (invert to paste back)"),
        ("alignment_residual_px", f64, "RMS distance of landmarks_aligned to the template, crop pixels"),
        ("sharpness", f64, "variance of the Laplacian of the grey crop"),
        ("brightness", f64, "mean grey level of the crop, 0..255"),
        ("width", i64, "crop width in pixels"),
        ("height", i64, "crop height in pixels"),
        ("frame_width", i64, "source frame width"),
        ("frame_height", i64, "source frame height"),
        ("segment", i64, "track segment within the clip (a gap or lost track starts a new one)"),
    ]


def manifest_schema():
    import pyarrow as pa

    return pa.schema([pa.field(name, typ, nullable=False) for name, typ, _ in schema_spec()])


@dataclass(frozen=True)
class ManifestRow:
    """One aligned face: a row of the manifest, its fields in the schema's order (see :func:`schema_spec`)."""

    face_id: str
    identity: str
    video: str
    frame_index: int
    timestamp_s: float
    split: str
    path: str
    frame_path: str
    detector: str
    detector_weights: str
    score: float
    box: np.ndarray  # (4,)
    landmarks_src: np.ndarray  # (5, 2)
    landmarks_aligned: np.ndarray  # (5, 2)
    matrix: np.ndarray  # (2, 3)
    alignment_residual_px: float
    sharpness: float
    brightness: float
    width: int
    height: int
    frame_width: int
    frame_height: int
    segment: int

    def to_dict(self) -> dict[str, Any]:
        """The row as a mapping of column → value (arrays stay numpy), what :func:`write_manifest` writes."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


MANIFEST_COLUMNS = [f.name for f in fields(ManifestRow)]


def write_manifest(rows: Iterable[ManifestRow | Mapping[str, Any]], path: str | Path) -> None:
    """Write rows (:class:`ManifestRow`, or mappings with every column; arrays may be numpy) with the manifest
    schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dicts = [r.to_dict() if isinstance(r, ManifestRow) else r for r in rows]
    schema = manifest_schema()
    cols = {}
    for field in schema:
        values = [r[field.name] for r in dicts]
        if pa.types.is_list(field.type) or pa.types.is_fixed_size_list(field.type):
            values = [np.asarray(v, dtype=np.float64).tolist() for v in values]
        cols[field.name] = pa.array(values, type=field.type)
    table = pa.Table.from_pydict(cols, schema=schema)
    pq.write_table(table, path)


def read_manifest(path: str | Path):
    """The manifest as a pandas DataFrame (array columns hold nested arrays: see column_array)."""
    import pandas as pd

    return pd.read_parquet(path)


def column_array(df, column: str) -> np.ndarray:
    """An array column as a float array: box → (N, 4), landmarks_* → (N, 5, 2), matrix → (N, 2, 3)."""
    shapes = {"box": (4,), "landmarks_src": (5, 2), "landmarks_aligned": (5, 2), "matrix": (2, 3)}
    if column not in shapes:
        raise KeyError(f"{column!r} is not an array column; array columns: {', '.join(shapes)}")
    if len(df) == 0:
        return np.zeros((0, *shapes[column]))
    return np.asarray([np.stack(v).tolist() if len(shapes[column]) > 1 else list(v) for v in df[column]], float)


def manifest_detector(path: str | Path) -> dict | None:
    """{"name", "weights_digest"} of the detector that made a face table's crops; None when it does not say
    (an older manifest, or crops from more than one detector)."""
    import pyarrow.parquet as pq

    try:
        names = set(pq.read_schema(path).names)
        if not {"detector", "detector_weights"} <= names:
            return None
        t = pq.read_table(path, columns=["detector", "detector_weights"]).to_pandas().drop_duplicates()
    except (OSError, ValueError):
        return None
    if len(t) != 1:
        return None
    return {"name": str(t["detector"].iloc[0]), "weights_digest": str(t["detector_weights"].iloc[0])}


def check_manifest(df) -> list[str]:
    """Problems with a manifest's columns (missing, unexpected); empty list when it matches the schema."""
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    extra = [c for c in df.columns if c not in MANIFEST_COLUMNS]
    return [f"missing column {c}" for c in missing] + [f"unexpected column {c}" for c in extra]
