"""The detector families behind one interface: loading, scoring, explanations, embeddings.

Public API used by training, evaluation, the promotion gate, inference tuning and serving::

    from tasks.model import Detector, InferenceSettings
    detector = Detector.load("models:/vigil-detector@champion", InferenceSettings(batch_size=16))
    p_fake = detector.score(images)           # np.ndarray, P(fake) (probe: calibrated)
    verdicts = detector.is_fake(p_fake)       # the threshold chosen on validation data
    reasons = detector.explain(images, p_fake)

Families: :mod:`tasks.model.probe` (a frozen pretrained backbone with a trained head: CPU, offline,
the embedded default) and :mod:`tasks.model.vlm` (Qwen2.5-VL + LoRA, with the offline ``tiny``
profile). This package imports neither torch nor onnxruntime until a family is loaded.
"""

from tasks.model.card import InferenceSettings, read_card
from tasks.model.detector import Detector

__all__ = ["Detector", "InferenceSettings", "read_card"]
