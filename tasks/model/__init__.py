"""The detector: model loading, the one preprocessing path, P(fake) scoring, explanations.

Public API used by training, evaluation, the promotion gate, inference tuning and serving::

    from tasks.model import Detector, InferenceSettings
    detector = Detector.load("models:/vigil-detector@champion", InferenceSettings(batch_size=16))
    p_fake = detector.score(images)           # np.ndarray, one batched forward pass per batch
    verdicts = p_fake >= detector.threshold   # the threshold chosen on validation data
    reasons = detector.explain(images, p_fake)

Names are imported lazily, so that ``tasks.model.config`` (and ``vigil --help``) stay free of torch.
"""

from importlib import import_module

_EXPORTS = {
    "Detector": "tasks.model.detector",
    "DetectorCard": "tasks.model.detector",
    "InferenceSettings": "tasks.model.detector",
    "Preprocessor": "tasks.model.processing",
    "QUESTION": "tasks.model.processing",
    "load_image": "tasks.images",
    "prepare_image": "tasks.model.processing",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tasks.model' has no attribute {name!r}")
