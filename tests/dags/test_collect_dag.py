"""dags/collect.py: one DAG per enabled source, scheduled from sources.yaml; dag.test() on demo data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tasks.data.batches import list_batches, read_batch
from tasks.demo.data import DemoSpec, generate
from tasks.settings import DEFAULT_INCLUDE_DIR, Settings
from tasks.storage import ObjectStore

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"


def dagbag():
    """The DAG folder parsed the way Airflow's DAG processor does (the folder is on sys.path)."""
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=str(DAGS), bundle_path=DAGS)


@pytest.fixture
def include(tmp_path, monkeypatch) -> Path:
    """A copy of include/ that the DAG file reads (VIGIL_INCLUDE_DIR)."""
    copy = tmp_path / "include"
    shutil.copytree(DEFAULT_INCLUDE_DIR, copy)
    monkeypatch.setenv("VIGIL_INCLUDE_DIR", str(copy))
    return copy


def edit_sources(include: Path, edit) -> None:
    path = include / "sources.yaml"
    doc = yaml.safe_load(path.read_text())
    edit(doc["sources"])
    path.write_text(yaml.safe_dump(doc))


def test_one_dag_per_enabled_source_scheduled_from_the_file(airflow_db, include, monkeypatch):
    monkeypatch.delenv("X_BEARER_TOKEN", raising=False)  # missing credentials must not break parsing

    def enable_all(sources):
        for source, schedule in zip(sources, ("*/5 * * * *", "@daily", "0 3 * * 1"), strict=True):
            source.update(enabled=True, schedule=schedule)
        sources.append({"name": "parked", "kind": "folder", "enabled": False, "schedule": "@hourly"})

    edit_sources(include, enable_all)
    bag = dagbag()
    assert bag.import_errors == {}
    collect_dags = {dag_id: dag for dag_id, dag in bag.dags.items() if dag_id.startswith("collect_")}
    assert set(collect_dags) == {"collect_inbox", "collect_x_ai_art", "collect_mastodon_photography"}
    schedules = {dag_id: dag.schedule for dag_id, dag in collect_dags.items()}
    assert schedules == {
        "collect_inbox": "*/5 * * * *",
        "collect_x_ai_art": "@daily",
        "collect_mastodon_photography": "0 3 * * 1",
    }
    pools = json.loads((include / "airflow" / "pools.json").read_text())
    for dag_id, dag in collect_dags.items():
        (task,) = dag.tasks
        kind = dag_id.removeprefix("collect_").split("_")[0] if dag_id != "collect_inbox" else "folder"
        assert task.pool == f"collect_{kind}" and task.pool in pools
        assert [outlet.name for outlet in task.outlets] == ["raw_batch"]
        assert task.retries >= 1 and task.retry_exponential_backoff
        assert not dag.catchup and dag.max_active_runs == 1
        assert {"vigil", "collection", kind} <= set(dag.tags)
        assert (
            "### Collection" in dag.doc_md
            and f"#### Source `{dag_id.removeprefix('collect_')}`" in dag.doc_md
        )
        param = dag.params.get_param("max_images")
        assert (
            param.value is None
            and param.schema["title"] == "Max images"
            and "max_images" in param.description
        )
    assert "X_BEARER_TOKEN" in collect_dags["collect_x_ai_art"].doc_md


def test_only_enabled_sources_by_default(airflow_db, include):
    bag = dagbag()
    assert bag.import_errors == {}
    assert sorted(d for d in bag.dags if d.startswith("collect_")) == ["collect_inbox"]


def test_malformed_sources_file_is_an_import_error_naming_the_field(airflow_db, include):
    edit_sources(include, lambda sources: sources[1].update(schedule="every day", enabled=True))
    bag = dagbag()
    (error,) = bag.import_errors.values()
    assert "sources[1] (name='x_ai_art').schedule: 'every day' is not a cron expression" in error
    assert not any(d.startswith("collect_") for d in bag.dags)


def test_pools_file_imports_with_airflows_own_importer(airflow_db):
    from airflow.cli.commands.pool_command import pool_import_helper
    from airflow.models.pool import Pool

    _pools, failed = pool_import_helper(str(DEFAULT_INCLUDE_DIR / "airflow" / "pools.json"))
    assert failed == []
    slots = {
        name: Pool.get_pool(name).slots for name in ("collect_x", "collect_mastodon", "collect_folder", "gpu")
    }
    assert slots["gpu"] == 1 and slots["collect_x"] == 1


def test_dag_test_collects_demo_data_and_emits_a_raw_batch_event(airflow_db, store_env, include):
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    settings = Settings()
    generate(Path(settings.inbox), DemoSpec(per_split=(("train", 3), ("val", 1), ("test", 1))))
    dag = dagbag().get_dag("collect_inbox")

    run = dag.test(logical_date=None)  # like a manual run from the UI: no logical date, no `ds`

    assert run.state == "success"
    store = ObjectStore.from_settings(settings)
    (key,) = list_batches(store)
    batch = read_batch(store, key)
    assert len(batch.table) == 10 and set(batch.table["split"]) == {"train", "val", "test"}
    with create_session() as session:
        events = session.query(AssetEvent).filter(AssetEvent.source_run_id == run.run_id).all()
        (event,) = events
        assert event.asset.name == "raw_batch"
        assert event.extra["batch_id"] == batch.batch_id and event.extra["source"] == "inbox"
        assert event.extra["images"] == 10 and event.extra["labels"] == {"real": 5, "fake": 5}

    again = dag.test(logical_date=None)  # same inputs: nothing new, task skipped, no event
    assert [ti.state for ti in again.get_task_instances()] == ["skipped"]
    with create_session() as session:
        assert session.query(AssetEvent).filter(AssetEvent.source_run_id == again.run_id).count() == 0
    assert len(list_batches(store)) == 1


def test_missing_credentials_fail_at_once_instead_of_retrying(airflow_db, store_env, include, monkeypatch):
    monkeypatch.delenv("X_BEARER_TOKEN", raising=False)
    edit_sources(include, lambda sources: sources[1].update(enabled=True))
    dag = dagbag().get_dag("collect_x_ai_art")

    run = dag.test(logical_date=None)

    assert run.state == "failed"
    (ti,) = run.get_task_instances()
    assert ti.state == "failed" and ti.try_number == 1  # not up_for_retry: retrying cannot help
