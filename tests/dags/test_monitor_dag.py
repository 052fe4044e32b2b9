"""The monitor DAG: wiring (DagBag) and real dag.test() runs: a drift alert becomes a drift_alert Asset
event with the window, the metrics and the reason; the task log states the verdict and the numbers."""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "dags"))  # Airflow puts the DAGs folder on sys.path (vigil_common)

from tests.dags.test_curate_dag import asset_events  # noqa: E402
from tests.helpers.monitor import traffic, write_stream, write_synthetic_reference  # noqa: E402


@pytest.fixture(scope="module")
def monitor_dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "monitor.py"))
    assert bag.import_errors == {}
    return bag.get_dag("monitor")


def test_wiring(monitor_dag):
    assert set(monitor_dag.task_ids) == {"monitor_windows", "announce_drift", "announce_accuracy_drop"}
    for task_id, asset in (("announce_drift", "drift_alert"), ("announce_accuracy_drop", "accuracy_drop")):
        task = monitor_dag.task_dict[task_id]
        assert task.upstream_task_ids == {"monitor_windows"} and [a.name for a in task.outlets] == [asset]
    assert monitor_dag.timetable.expression == "*/30 * * * *"  # include/monitor.yaml
    assert monitor_dag.max_active_runs == 1 and not monitor_dag.catchup
    assert monitor_dag.max_consecutive_failed_dag_runs == 5 and "monitoring" in monitor_dag.tags
    assert "drift_alert" in monitor_dag.doc_md and "review" in monitor_dag.doc_md


@pytest.mark.parametrize("store_env", ["local"], indirect=True)
def test_a_drifting_stream_emits_one_drift_alert_event(
    monitor_dag, store, store_env, mlflow_server, monkeypatch, caplog
):
    import logging

    model = f"dag-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("VIGIL_MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("VIGIL_MODEL_NAME", model)
    write_synthetic_reference(store, model=model)
    rng, now = np.random.default_rng(1), datetime.now(UTC)
    caplog.set_level(logging.INFO, logger="tasks.monitor.run")

    write_stream(
        store,
        traffic(1000, rng, start=now - timedelta(hours=3), shift_share=0.3, model=model),
        flushed=now - timedelta(hours=3),
    )
    first = monitor_dag.test()
    states = {ti.task_id: ti.state for ti in first.get_task_instances()}
    assert states == {
        "monitor_windows": "success",
        "announce_drift": "skipped",
        "announce_accuracy_drop": "skipped",
    }
    assert asset_events(first.run_id) == []
    assert f"{model}/v1: 1000 rows: DRIFTING" in caplog.text and "K-S p=" in caplog.text

    write_stream(
        store,
        traffic(1000, rng, start=now - timedelta(hours=2), shift_share=0.3, model=model),
        flushed=now - timedelta(hours=2),
    )
    second = monitor_dag.test()
    assert second.state == "success"
    [event] = asset_events(second.run_id)
    extra = event["extra"]
    assert event["asset"] == "drift_alert" and extra["group"] == f"{model}/v1" and extra["consecutive"] == 2
    assert extra["window"]["rows"] == 1000 and extra["window"]["start"] < extra["window"]["end"]
    assert extra["metrics"]["embedding"]["roc_auc"] > 0.55 and "embeddings" in extra["reason"]
    assert "monitoring verdict: DRIFT ALERT" in caplog.text
