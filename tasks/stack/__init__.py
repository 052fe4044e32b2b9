"""The embedded stack and Vigil's Airflow helpers: processes on loopback, the REST client, Airflow objects.

* :mod:`tasks.stack.services` starts, health-checks and stops one process group;
* :mod:`tasks.stack.embedded` is the stack of ``make demo``: MLflow, Airflow standalone, serving;
* :mod:`tasks.stack.airflow_service` runs the embedded Airflow: its private PostgreSQL
  (:mod:`tasks.stack.metadb`), its pools and connections, then ``airflow standalone``;
* :mod:`tasks.stack.airflow_client` drives DAG runs through Airflow's REST API, as a user would, retrying
  what is safe to retry;
* :mod:`tasks.stack.airflow_objects` names the pools and connections files and derives the variables.
"""

from tasks.stack.embedded import (
    admin_token,
    airflow_admin_password,
    airflow_env,
    down,
    load_stack,
    save_stack,
    stack_env,
    start_airflow,
    start_mlflow,
    up,
)
from tasks.stack.services import Service, free_port, port_is_free, port_of, start, stop, wait_healthy

__all__ = [
    "Service",
    "admin_token",
    "airflow_admin_password",
    "airflow_env",
    "down",
    "free_port",
    "load_stack",
    "port_is_free",
    "port_of",
    "save_stack",
    "stack_env",
    "start",
    "start_airflow",
    "start_mlflow",
    "stop",
    "up",
    "wait_healthy",
]
