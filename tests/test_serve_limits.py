"""Request limits of the pyfunc that hold before any image is decoded (no server, no model needed)."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from faceswap.config import parse_params
from faceswap.errors import FaceswapError
from faceswap.serving.pyfunc import FaceSwapModel, RequestError, pip_requirements


def test_too_many_rows_is_a_400_before_any_row_is_decoded():
    model = FaceSwapModel()
    model.serve = parse_params({"serve": {"max_rows": 2}}).serve  # no swapper: touching a row would fail otherwise
    rows = pd.DataFrame({"image": ["not base64!"] * 3, "direction": ["a2b"] * 3, "aligned": [True] * 3})
    with pytest.raises(RequestError, match=r"3 rows in one request; the limit is 2 \(serve.max_rows\)") as err:
        model.predict(None, rows)
    assert isinstance(err.value, MlflowException) and isinstance(err.value, FaceswapError)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE" and err.value.get_http_status_code() == 400


def test_default_row_cap_and_logged_requirements():
    assert parse_params({}).serve.max_rows == 16
    names = {r.split("==")[0] for r in pip_requirements()}
    assert {"torch", "torchvision", "pydantic", "pyyaml", "opencv-python-headless"} <= names
