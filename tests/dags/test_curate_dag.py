"""The curate DAG: wiring (DagBag) and a real dag.test() run emitting the curated_dataset Asset event."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "dags"))  # Airflow puts the DAGs folder on sys.path (vigil_common)

from tests.helpers.curation import add_batch, good_images  # noqa: E402


@pytest.fixture(scope="module")
def curate_dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "curate.py"))
    assert bag.import_errors == {}
    return bag.get_dag("curate")


def test_wiring(curate_dag):
    assert set(curate_dag.task_ids) == {"curate_batches", "announce_snapshot", "check_batches"}
    assert curate_dag.task_dict["announce_snapshot"].upstream_task_ids == {"curate_batches"}
    assert curate_dag.task_dict["check_batches"].upstream_task_ids == {"curate_batches"}
    assert [a.name for a in curate_dag.task_dict["announce_snapshot"].outlets] == ["curated_dataset"]
    assert [a.name for a in curate_dag.timetable.asset_condition.objects] == ["raw_batch"]
    assert curate_dag.max_active_runs == 1 and not curate_dag.catchup
    assert curate_dag.doc_md and "curated_dataset" in curate_dag.doc_md and "curation" in curate_dag.tags
    assert curate_dag.params.get_param("retry_batches").schema["title"] == "Re-queue failed batches"
    task = curate_dag.task_dict["curate_batches"]
    assert task.retries == 2 and task.retry_exponential_backoff


def asset_events(run_id: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetModel.name, AssetEvent.extra)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetEvent.source_run_id == run_id)
        ).all()
        return [{"asset": name, "extra": extra} for name, extra in rows]


@pytest.mark.parametrize("store_env", ["local"], indirect=True)
def test_dag_run_publishes_snapshot_and_emits_event(curate_dag, store, store_env):
    from tasks.data.snapshots import read_snapshot

    add_batch(store, good_images(12))
    run = curate_dag.test()

    assert run.state == "success"
    snapshot = read_snapshot(store)
    events = asset_events(run.run_id)
    assert [e["asset"] for e in events] == ["curated_dataset"]
    extra = events[0]["extra"]
    assert (extra["version"], extra["parent"], extra["new_images"]) == (snapshot.version, None, 12)
    assert extra["counts"]["by_label"] == {"real": 6, "fake": 6}

    # Nothing new: the run succeeds, announce_snapshot is skipped, no event.
    again = curate_dag.test()
    assert again.state == "success" and asset_events(again.run_id) == []
    states = {ti.task_id: ti.state for ti in again.get_task_instances()}
    assert states == {"curate_batches": "success", "announce_snapshot": "skipped", "check_batches": "success"}


@pytest.mark.parametrize("store_env", ["local"], indirect=True)
def test_rejected_batch_fails_the_run_without_retries(curate_dag, store, store_env):
    batch = add_batch(store, [{"data": b"", "name": "zero.jpg"}, {"data": b"<html></html>", "name": "x.png"}])
    run = curate_dag.test()

    assert run.state == "failed"
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    assert tis["curate_batches"].state == "success"
    assert tis["announce_snapshot"].state == "skipped" and asset_events(run.run_id) == []
    assert tis["check_batches"].state == "failed" and tis["check_batches"].try_number == 1  # no retry
    assert store.read_json(f"reports/{batch.batch_id}/summary.json")["status"] == "failed"
