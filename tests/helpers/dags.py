"""Helpers for the DAG tests that run a DAG with Airflow's own ``dag.test()``."""

from __future__ import annotations


def without_deadline(dag):
    """The DAG without its deadline alert, for ``dag.test()``.

    Airflow 3.3.2's ``dag.test()`` fails when a run of a DAG with a deadline alert succeeds: it looks the
    alerts up by id, but its in-memory DAG holds them serialized (``'dict' object has no attribute
    'hex'``). The scheduler does not; the alerts are tested on ``airflow standalone``
    (tests/ui/test_journeys_browser.py) and in tests/dags/test_forms.py.
    """
    dag.deadline = None
    return dag
