"""The expectations of the gate, as Great Expectations 1.x objects built from ``params.yaml``.

This is the place to read what the gate checks and to extend it. Each expectation carries:

- ``description``: one line shown in Data Docs and in the terminal summary (why a face was rejected);
- ``meta.key``: a short stable name (summary, the validation metrics file, quarantine's ``expectation``);
- ``meta.level``: ``row`` (a failing face can be quarantined in ``filter`` mode) or ``table`` (fails the
  stage in both modes);
- ``meta.param``: the ``params.yaml`` key that sets its threshold, where there is one.

To add a check, append one more ``_e(...)`` below. Row-level expectations must be column-map
expectations (``ExpectColumnValues...``) so that Great Expectations can name the failing rows; a column
that the manifest lacks can be derived in :mod:`faceswap.validation.checks`. This module is the suite's only
definition (no ``gx/`` project holds a copy): each run builds it here and runs it in an in-memory context. Ids
are derived from the key, so every run's results and Data Docs name an expectation the same way.
"""

from __future__ import annotations

import uuid

from faceswap.config import ValidateParams
from faceswap.data.manifest import schema_spec

FACES_SUITE = "faces"
IDENTITIES_SUITE = "identities"
_NAMESPACE = uuid.UUID("5a7d0c1e-2f4b-4c1a-9d35-0f2c6e4b8a11")


def _e(cls, key: str, level: str, description: str, param: str | None = None, suite: str = FACES_SUITE, **kwargs):
    meta = {"key": key, "level": level} | ({"param": param} if param else {})
    ident = str(uuid.uuid5(_NAMESPACE, f"{suite}/{key}"))
    return cls(id=ident, description=description, meta=meta, **kwargs)


def _manifest_types() -> dict[str, str | None]:
    """Manifest column → the type Great Expectations should observe (None for nested array columns)."""
    import pyarrow as pa

    names = {pa.int64(): "int64", pa.float64(): "float64", pa.string(): "str"}
    return {name: names.get(typ) for name, typ, _ in schema_spec()}


def face_expectations(v: ValidateParams, *, size: int, identities: tuple[str, ...], split_guard: str) -> list:
    """Expectations over the manifest with the derived columns of :func:`faceswap.validation.checks.measure`
    (``split_guard``: how far a train frame must be from held-out ones, in words: a clip's margin is measured
    against it)."""
    import great_expectations.expectations as gxe

    out = []
    types = _manifest_types()
    # --- schema: every column present and typed (table level), non-null (row level) ---
    for col in types:
        out.append(_e(gxe.ExpectColumnToExist, f"column.{col}", "table", f"manifest has column {col}", column=col))
    for col, typ in types.items():
        if typ is not None:
            out.append(_e(gxe.ExpectColumnValuesToBeOfType, f"type.{col}", "table", f"{col} is {typ}",
                          column=col, type_=typ))
    for col in types:
        out.append(_e(gxe.ExpectColumnValuesToNotBeNull, f"not_null.{col}", "row", f"{col} is set", column=col))
    out += [
        _e(gxe.ExpectColumnValuesToBeInSet, "array_shapes", "row",
           "box (4), landmarks (5×2) and matrix (2×3) have their shapes", column="array_shapes", value_set=["ok"]),
        _e(gxe.ExpectColumnValuesToBeUnique, "unique_face_id", "row", "face_id is unique", column="face_id"),
        _e(gxe.ExpectColumnValuesToBeInSet, "known_identity", "row", "identity is one of base.identities",
           "base.identities", column="identity", value_set=list(identities)),
        _e(gxe.ExpectColumnValuesToBeInSet, "split_value", "row", "split is train, val or test",
           column="split", value_set=["train", "val", "test"]),
        # --- the crop file ---
        _e(gxe.ExpectColumnValuesToBeInSet, "file_exists", "row", "crop file exists",
           column="file_exists", value_set=[True]),
        _e(gxe.ExpectColumnValuesToBeInSet, "image_shape", "row",
           f"crop decodes to {size}×{size} with 3 channels", "base.image_size",
           column="image_shape", value_set=[f"{size}x{size}x3"]),
        # --- detection and image quality ---
        _e(gxe.ExpectColumnValuesToBeBetween, "score", "row", "detector score high enough", "validate.min_score",
           column="score", min_value=v.min_score),
        _e(gxe.ExpectColumnValuesToBeBetween, "face_size", "row", "face large enough in the frame",
           "validate.min_face_size", column="face_size_px", min_value=v.min_face_size),
        _e(gxe.ExpectColumnValuesToBeBetween, "sharpness", "row", "crop not flat or defocused",
           "validate.min_sharpness", column="crop_sharpness", min_value=v.min_sharpness),
        _e(gxe.ExpectColumnValuesToBeBetween, "relative_sharpness", "row",
           "crop not blurred compared with the identity's other crops", "validate.min_relative_sharpness",
           column="relative_sharpness", min_value=v.min_relative_sharpness),
        _e(gxe.ExpectColumnValuesToBeBetween, "brightness", "row", "crop neither too dark nor too bright",
           "validate.min_brightness, validate.max_brightness", column="crop_brightness",
           min_value=v.min_brightness, max_value=v.max_brightness),
        # --- alignment ---
        _e(gxe.ExpectColumnValuesToBeBetween, "residual", "row", "landmarks fit the template",
           "validate.max_residual", column="alignment_residual_px", max_value=round(v.max_residual * size, 4)),
        _e(gxe.ExpectColumnValuesToBeBetween, "landmarks", "row", "every aligned landmark near its template point",
           "validate.landmark_tolerance", column="landmark_max_dev_px",
           max_value=round(v.landmark_tolerance * size, 4)),
        _e(gxe.ExpectColumnValuesToBeBetween, "out_of_frame", "row", "crop mostly inside its frame",
           "validate.max_out_of_frame", column="out_of_frame", max_value=v.max_out_of_frame),
        # --- video: stability, split hygiene, duplicates ---
        _e(gxe.ExpectColumnValuesToBeBetween, "jitter", "row", "clip's aligned landmarks are stable",
           "validate.max_jitter", column="clip_jitter_px", max_value=round(v.max_jitter * size, 4)),
        _e(gxe.ExpectColumnValuesToBeBetween, "split_leak", "row",
           f"train frame far from the clip's held-out frames ({split_guard})", "validate.split_guard_s",
           column="split_margin_s", min_value=0.0),
        _e(gxe.ExpectColumnValuesToBeBetween, "near_duplicate", "row", "crop differs from the clip's previous crop",
           "validate.duplicate_max_diff", column="duplicate_diff", min_value=v.duplicate_max_diff, strict_min=True),
    ]
    return out


def identity_expectations(v: ValidateParams) -> list:
    """Expectations over one row per identity: faces accepted per split (table level: fail in both modes)."""
    import great_expectations.expectations as gxe

    return [
        _e(gxe.ExpectColumnValuesToBeBetween, "train_faces", "table", "enough training faces per identity",
           "validate.min_train_faces", IDENTITIES_SUITE, column="train_faces", min_value=v.min_train_faces),
        _e(gxe.ExpectColumnValuesToBeBetween, "val_faces", "table", "enough validation faces per identity",
           "validate.min_val_faces", IDENTITIES_SUITE, column="val_faces", min_value=v.min_val_faces),
        _e(gxe.ExpectColumnValuesToBeBetween, "test_faces", "table", "enough test faces per identity",
           "validate.min_test_faces", IDENTITIES_SUITE, column="test_faces", min_value=v.min_test_faces),
    ]
