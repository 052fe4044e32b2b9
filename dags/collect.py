"""
### Collection: one DAG per enabled source of `include/sources.yaml`

Each enabled source becomes a DAG named `collect_<name>`, scheduled by the source's `schedule`
(cron or preset, UTC). Adding a source or changing a schedule is an edit of `sources.yaml`, no
code; a malformed file makes this DAG file fail to import with a message naming the source and
the field (see *Import errors* in the UI).

A run collects what is new since the previous run (a cursor per source in the object store),
stores the raw bytes under `raw/<source>/<date>/<sha256>.<ext>`, publishes one raw-batch manifest
under `batches/<source>/`, and emits a **`raw_batch`** Asset event whose `extra` carries the batch
id, source and counts; that event schedules curation. A run that finds nothing new is marked
*skipped* and emits nothing. The task log says in plain words what was stored, skipped and refused.

Same work from a shell: `vigil collect <name>`. Credentials: X reads the Airflow connection
`vigil_x` (password field) or the env `X_BEARER_TOKEN`; Mastodon optionally `vigil_mastodon` or
`MASTODON_ACCESS_TOKEN`. Tokens are never logged. Docs: `docs/collection.md`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG, Param, task

from tasks.collect.base import Credential
from tasks.collect.kinds import KINDS
from tasks.collect.sources import Source, load_sources

from vigil_common import DEFAULT_ARGS, RAW_BATCH, run

START_DATE = datetime(2025, 1, 1, tzinfo=UTC)
TAGS = ["vigil", "collection"]


def _secret(credential: Credential | None) -> str | None:
    """The credential's Airflow connection password, or None (the task then falls back to the env)."""
    if credential is None:
        return None
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return Connection.get(credential.conn_id).password or None
    except AirflowNotFoundException:
        return None


def _source_doc(source: Source) -> str:
    query = {k: v for k, v in source.query.model_dump().items() if v}
    credential = KINDS[source.kind].credential
    lines = [
        f"#### Source `{source.name}` ({source.kind})",
        source.description,
        f"- schedule: `{source.schedule or 'manual only'}` · max images per run: {source.max_images} · "
        f"label prior: `{source.label_prior}`",
        f"- query: `{query}`" if query else "",
        f"- options: `{source.options.model_dump()}`",
        f"- credential: {credential.describe()}" + ("" if credential.required else " (optional)")
        if credential
        else "",
    ]
    return "\n".join(line for line in lines if line)


def build_dag(source: Source) -> DAG:
    """The `collect_<name>` DAG of one source."""
    credential = KINDS[source.kind].credential

    with DAG(
        dag_id=f"collect_{source.name}",
        description=f"Collect new images from the {source.kind} source {source.name!r} into a raw batch.",
        doc_md=f"{__doc__}\n{_source_doc(source)}",
        schedule=source.schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        max_consecutive_failed_dag_runs=5,
        default_args=DEFAULT_ARGS,
        tags=[*TAGS, source.kind],
        params={
            "max_images": Param(
                None,
                type=["null", "integer"],
                minimum=1,
                maximum=10_000,
                title="Max images",
                description=f"Most new images this run stores; empty means the source's max_images "
                f"({source.max_images}).",
            ),
        },
    ) as dag:

        @task(task_id="collect", pool=f"collect_{source.kind}", outlets=[RAW_BATCH])
        def collect_source(params: dict | None = None, outlet_events=None) -> dict:
            """Collect the source's new images into one raw batch and announce it on `raw_batch`."""
            from airflow.sdk.exceptions import AirflowSkipException

            from tasks.collect.run import collect

            summary = run(
                collect, source.name, token=_secret(credential), max_images=(params or {}).get("max_images")
            )
            if summary["batch_id"] is None:
                raise AirflowSkipException(
                    f"nothing new in source {source.name!r}; no batch, no raw_batch event"
                )
            outlet_events[RAW_BATCH].extra = {
                key: summary[key] for key in ("batch_id", "source", "images", "labels")
            }
            return summary

        collect_source()
    return dag


for _source in load_sources().enabled:
    globals()[f"collect_{_source.name}"] = build_dag(_source)
