"""Inference tuning: benchmark inference settings of a registered detector version and record the best.

    from tasks.tune import tune_inference
    result = tune_inference("models:/vigil-detector@champion", settings)
    result.summary()   # chosen settings, comparison table, throughput ratio vs the safe defaults

The chosen settings become the version's ``inference`` tag, which :meth:`tasks.model.Detector.load`
applies; see :mod:`tasks.tune.run` for the objective and where results go, ``include/tuning.yaml``
for the candidates. ``tune_cascade(settings)`` chooses the cascade's band on validation data and
records it on the VLM version (its ``cascade_band`` tag, which serving applies).
"""

from tasks.tune.config import Candidate, TuningConfig, load_tuning_config
from tasks.tune.run import CandidateResult, TuningResult, tune_cascade, tune_inference

__all__ = [
    "Candidate",
    "CandidateResult",
    "TuningConfig",
    "TuningResult",
    "load_tuning_config",
    "tune_cascade",
    "tune_inference",
]
