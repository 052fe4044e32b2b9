"""Airflow connections, variables and pools as code, with the same names in embedded and compose modes.

- **Pools** (``include/airflow/pools.json``) and **connections** (``include/airflow/connections.json``)
  are rows in Airflow's database, imported with Airflow's own commands (``airflow pools import``,
  ``airflow connections import``): by the ``airflow-init`` service in compose, and by the embedded
  Airflow service after it migrates its database (:mod:`tasks.stack.airflow_service`). The connections
  are the ones Vigil's code reads (a collector kind's :class:`~tasks.collect.base.Credential`), without
  secrets: a person puts the token into the password field in the UI or CLI. Importing keeps an
  existing connection, so those edits survive restarts; an environment connection
  (``AIRFLOW_CONN_*``) would win over the database one and could not be edited, hence none.
- **Variables** are environment variables (``AIRFLOW_VAR_*``): browser-facing URLs that depend on where
  the services run. Compose spells them out in ``docker-compose.yaml``; the embedded stack takes them
  from :func:`airflow_env`, which derives them from the settings the code itself reads.

This module does not import Airflow: it only names the files and builds the values.
"""

from __future__ import annotations

from tasks.settings import Settings

POOLS_FILE = "airflow/pools.json"
CONNECTIONS_FILE = "airflow/connections.json"


def variables(settings: Settings) -> dict[str, str]:
    """Browser-facing URLs for links in the UI plugin (``plugins/vigil_ui.py`` reads ``vigil_mlflow_ui_url``).

    In the embedded mode they equal the URLs the code uses; compose sets them separately, because the
    services' internal names (``http://mlflow:5000``) do not resolve in a user's browser.
    """
    return {"vigil_mlflow_ui_url": settings.mlflow_tracking_uri}


def airflow_env(settings: Settings) -> dict[str, str]:
    """``AIRFLOW_VAR_*`` for the Airflow processes of the embedded stack."""
    return {f"AIRFLOW_VAR_{key.upper()}": value for key, value in variables(settings).items()}
