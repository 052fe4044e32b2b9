"""Airflow connections, variables and pools as code, with the same names in embedded and compose modes.

- **Pools** live in ``include/airflow/pools.json`` (the format of ``airflow pools import``). A pool is a
  row in Airflow's database, so it is imported: by the ``airflow-init`` service in compose, and by the
  embedded stack after it migrates its database (``airflow pools import <settings.include(POOLS_FILE)>``).
- **Connections and variables** are environment variables (``AIRFLOW_CONN_*``, ``AIRFLOW_VAR_*``): their
  values depend on where the services run, Airflow reads them without copying them into its database,
  and they carry no secret (credentials come from the services' own environment: ``AWS_*``,
  ``X_BEARER_TOKEN``). Compose spells them out in ``docker-compose.yaml``; the embedded stack takes them
  from :func:`airflow_env`, which derives them from the settings the code itself reads. A test checks
  that compose's values equal what :func:`connections` derives from compose's settings.

This module does not import Airflow: it only builds the values.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlparse

from tasks.settings import Settings

POOLS_FILE = "airflow/pools.json"


def connections(settings: Settings) -> dict[str, dict[str, Any]]:
    """Vigil's Airflow connections, pointing where the code points (no secrets in them)."""
    s3_extra = {"endpoint_url": settings.s3_endpoint_url} if settings.s3_endpoint_url else {}
    mlflow = urlparse(settings.mlflow_tracking_uri)
    return {
        "vigil_s3": {
            "conn_type": "aws",  # credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
            "extra": s3_extra,
        },
        "vigil_mlflow": {
            "conn_type": "http",
            "host": mlflow.hostname,
            "port": mlflow.port,
            "schema": mlflow.scheme,
        },
        "vigil_x": {
            "conn_type": "http",  # the bearer token: X_BEARER_TOKEN
            "host": "api.x.com",
            "schema": "https",
        },
    }


def variables(settings: Settings) -> dict[str, str]:
    """Browser-facing URLs for links in DAG docs and the UI plugin.

    In the embedded mode they equal the URLs the code uses; compose sets them separately, because the
    services' internal names (``http://mlflow:5000``) do not resolve in a user's browser.
    """
    return {
        "vigil_mlflow_ui_url": settings.mlflow_tracking_uri,
        "vigil_serving_ui_url": settings.serving_url,
    }


def airflow_env(settings: Settings) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` and ``AIRFLOW_VAR_*`` for the Airflow processes of the embedded stack."""
    env = {
        f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn) for conn_id, conn in connections(settings).items()
    }
    env.update({f"AIRFLOW_VAR_{key.upper()}": value for key, value in variables(settings).items()})
    return env
