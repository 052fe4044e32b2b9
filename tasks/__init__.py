"""Vigil's logic: every stage as plain Python, importable without Airflow.

The DAGs in ``dags/`` call into this package; so do the ``vigil`` CLI and the trainer and serving
containers, so a step behaves the same under the scheduler, from a shell and in a container.
"""
