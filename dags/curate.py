"""
### Curate: validate new raw batches and publish a dataset snapshot

Runs whenever a collection run publishes a raw batch (the `raw_batch` Asset), and on demand.
It curates **every** raw batch that is not yet in the latest snapshot, so batches queued while a run
was busy are picked up by the next one (one run at a time).

1. **curate_batches** (`tasks.curate.curate`, same as `vigil curate`): per image, full decode with
   Pillow and the checks of `tasks.images.decode_image`; rejected files go to
   `quarantine/<batch_id>/` with a JSON reason. Per batch, the Great Expectations suite
   `include/expectations/raw_batch.yaml`; Data Docs and a summary under `reports/<batch_id>/` (the
   task log prints their URIs). Exact and near duplicates are dropped against the whole store,
   splits follow near-duplicate groups, kept images go to `curated/<image_id>.png`, and one snapshot
   manifest is published last.
2. **announce_snapshot** emits the `curated_dataset` Asset event (version, parent, counts, new
   images) that schedules training; it is skipped when nothing new was published.
3. **check_batches** fails the run, without retries, when a batch had more rejected images than
   `curation.max_failure_ratio`. That batch published nothing and is not retried automatically:
   fix the cause, then trigger this DAG with `retry_batches` (or run `vigil curate --retry BATCH_ID`).

See docs/curation.md for the reason codes, the dedupe and split policy, and where reports live.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Metadata, Param, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from vigil_common import CURATED_DATASET, DEFAULT_ARGS, RAW_BATCH


@dag(
    dag_id="curate",
    schedule=[RAW_BATCH],
    catchup=False,
    max_active_runs=1,
    max_consecutive_failed_dag_runs=5,
    default_args={**DEFAULT_ARGS, "execution_timeout": timedelta(hours=2)},
    doc_md=__doc__,
    description="Validate new raw batches, quarantine bad images with reasons, publish a dataset snapshot.",
    tags=["vigil", "data", "curation"],
    params={
        "retry_batches": Param(
            [],
            type="array",
            items={"type": "string"},
            title="Re-queue failed batches",
            description="Batch ids recorded as failed (see reports/<batch_id>/summary.json) to curate again, "
            "e.g. after raising curation.max_failure_ratio. Leave empty for a normal run.",
        ),
    },
)
def curate():
    @task(multiple_outputs=False)  # one summary XCom, not one per key
    def curate_batches(params: dict | None = None) -> dict:
        """Validate, quarantine, dedupe and split every new raw batch; publish one snapshot."""
        from tasks.curate import curate as run_curation

        return run_curation(retry=params["retry_batches"])

    @task(outlets=[CURATED_DATASET])
    def announce_snapshot(summary: dict):
        """Emit the curated_dataset event for a newly published snapshot; skip when there is none."""
        from tasks.curate import asset_extra

        if not summary["version"]:
            raise AirflowSkipException("no new snapshot was published: nothing to announce")
        yield Metadata(CURATED_DATASET, extra=asset_extra(summary))

    @task
    def check_batches(summary: dict) -> None:
        """Fail (without retries) when a batch was rejected for too many bad images."""
        from tasks.curate import failed_batches_message

        message = failed_batches_message(summary)
        if message:
            raise AirflowFailException(message)

    summary = curate_batches()
    announce_snapshot(summary)
    check_batches(summary)


curate()
