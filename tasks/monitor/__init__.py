"""Monitoring: the prediction log against each model version's reference, in windows.

* :mod:`tasks.monitor.config` — ``include/monitor.yaml``;
* :mod:`tasks.monitor.predictions` — reading (and, for tests, writing) the prediction log;
* :mod:`tasks.monitor.reference` — a version's reference: its scores and embeddings on its test split;
* :mod:`tasks.monitor.drift` — score, verdict and embedding drift with Evidently
  (:mod:`tasks.monitor.evidently_api`, imported only inside functions);
* :mod:`tasks.monitor.accuracy` — estimated (label-free) and measured accuracy;
* :mod:`tasks.monitor.run` — one run: windows, alerts, the review queue, labels;
* :mod:`tasks.monitor.retrain` — whether a measured accuracy drop warrants training.

docs/monitoring.md describes the stage; the ``monitor`` DAG and ``vigil monitor`` run it.
"""
