"""What every Vigil DAG shares: the Assets that chain the stages, and task defaults.

Stages are connected by data, not by calls: a collection run emits a ``raw_batch`` event, which
schedules curation; a published snapshot emits ``curated_dataset``, which schedules training; a
registered challenger schedules the promotion gate; a new champion schedules deployment.
"""

from datetime import timedelta

from airflow.sdk import Asset

RAW_BATCH = Asset(name="raw_batch", uri="vigil://raw-batch")
CURATED_DATASET = Asset(name="curated_dataset", uri="vigil://curated-dataset")
CHALLENGER = Asset(name="challenger", uri="vigil://model/challenger")
CHAMPION = Asset(name="champion", uri="vigil://model/champion")

DEFAULT_ARGS = {
    "owner": "vigil",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}
