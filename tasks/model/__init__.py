"""The detector: model loading, the one preprocessing path, P(fake) scoring, explanations.

Public API used by training, evaluation, the promotion gate, inference tuning and serving::

    from tasks.model import Detector, InferenceSettings
    detector = Detector.load("models:/vigil-detector@champion", InferenceSettings(batch_size=16))
    p_fake = detector.score(images)           # np.ndarray, one batched forward pass per batch
    verdicts = p_fake >= detector.threshold   # the threshold chosen on validation data
    reasons = detector.explain(images, p_fake)
"""

from tasks.model.detector import Detector, DetectorCard, InferenceSettings
from tasks.model.processing import QUESTION, Preprocessor, load_image, prepare_image

__all__ = ["Detector", "DetectorCard", "InferenceSettings", "Preprocessor", "QUESTION", "load_image", "prepare_image"]
