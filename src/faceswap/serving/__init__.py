"""Serving the registered model: the MLflow pyfunc wrapper (``faceswap.serving.pyfunc``)."""
