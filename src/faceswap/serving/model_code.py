"""The served model as code (MLflow's *models from code*): :func:`faceswap.serving.pyfunc.log_pyfunc` logs this
file instead of a CloudPickle of the model, and loading the model runs it, so loading never unpickles code.
``faceswap`` itself travels with the model as its code path, which MLflow puts on ``sys.path`` first."""

from mlflow.models import set_model

from faceswap.serving.pyfunc import FaceSwapModel

set_model(FaceSwapModel())
