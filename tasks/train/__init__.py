"""Training: ``python -m tasks.train`` (also ``vigil train``), the container entry point.

See :mod:`tasks.train.job` for what a job does and where its state lives, :mod:`tasks.train.launch`
for how it is started, and :mod:`tasks.train.tracking` for the MLflow layout.
"""
