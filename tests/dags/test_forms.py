"""Every manually triggered DAG's form submits with its defaults: Airflow's Trigger dialog marks a Param
required when its type is set and lacks "null", and keeps the Trigger button disabled while a required
field is empty; each field says what empty means. Also the DAGs' descriptions, task groups and
deadline alerts."""

from __future__ import annotations

import asyncio
import copy
import importlib
import inspect
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dags(airflow_db):
    """Every DAG of the repository, parsed as the DAG processor does (which puts dags/ on the path)."""
    from airflow.dag_processing.dagbag import DagBag

    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(REPO / "dags"))
        bag = DagBag(dag_folder=str(REPO / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags


def required_in_the_form(schema: dict) -> bool:
    """airflow/ui/src/components/FlexibleForm/isParamRequired.tsx, as of Airflow 3.3."""
    kind = schema.get("type")
    return bool(kind) and (not isinstance(kind, list) or "null" not in kind)


def test_no_form_field_blocks_the_trigger_button_and_each_says_what_empty_means(dags):
    with_params = {dag_id: dag for dag_id, dag in dags.items() if dag.params}
    assert {"train_detector", "promote", "deploy", "curate", "collect_inbox"} <= set(with_params)
    for dag_id, dag in with_params.items():
        for name in dag.params:
            param = dag.params.get_param(name)
            schema = param.schema
            assert schema.get("title"), (dag_id, name)
            if required_in_the_form(schema):
                # Only fields that always hold a value: a switch, or a list with its default.
                assert schema["type"] in ("boolean", "array") and param.value is not None, (dag_id, name)
            else:
                assert param.value is None, (dag_id, name)
                assert "empty" in (param.description or "").lower(), (dag_id, name)
            if "enum" in schema:
                assert None in schema["enum"], (dag_id, name)  # "no choice" is a choice


def resolved(params, conf: dict) -> dict:
    """The params a run with ``conf`` gets (what Airflow does with a triggered run's conf)."""
    merged = copy.deepcopy(params)
    merged.update(conf)
    return merged.validate()


def test_the_forms_accept_what_the_dialog_and_the_rest_client_send(dags):
    """The dialog sends every field (null when empty); `make demo` triggers with conf {}."""
    for dag_id in ("train_detector", "promote", "deploy", "curate", "collect_inbox"):
        params = dags[dag_id].params
        from_dialog = {name: params.get_param(name).value for name in params}
        assert resolved(params, {}) == resolved(params, from_dialog) == from_dialog, dag_id
    filled = {"profile": "tiny", "snapshot": "v0002", "epochs": 3, "reason": "new generator"}
    assert resolved(dags["train_detector"].params, filled)["snapshot"] == "v0002"
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        resolved(dags["promote"].params, {"version": "three"})


def test_every_dag_has_a_description_and_the_phased_graphs_have_task_groups(dags):
    for dag_id, dag in dags.items():
        assert dag.description and len(dag.description) < 140, dag_id
    groups = {
        dag_id: {
            group_id: sorted(t.task_id for t in group.iter_tasks())
            for group_id, group in dags[dag_id].task_group.get_task_group_dict().items()
            if group_id
        }
        for dag_id in ("promote", "deploy")
    }
    assert groups["deploy"] == {
        "release": ["post_deploy_check", "roll_out", "smoke_test_sandbox"],
        "tuning": ["tune", "tuning_wanted"],
    }
    assert groups["promote"] == {
        "gate": ["evaluate", "read_report", "resolve_version"],
        "outcome": ["decision", "promote_champion", "reject"],
    }
    # Task ids stay short (no group prefix): the demo, the XCom templates and people refer to them.
    assert {"rollback", "resolve_version"} <= set(dags["deploy"].task_ids)


@pytest.mark.parametrize(
    ("dag_id", "setting", "name"),
    [("train_detector", 480.0, "training within 8 h"), ("deploy", 90.0, "deployment within 1 h 30 min")],
)
def test_training_and_deployment_have_a_deadline_alert_the_triggerer_can_run(
    dags, dag_id, setting, name, caplog
):
    from datetime import timedelta

    from airflow.sdk import AsyncCallback

    [alert] = dags[dag_id].deadline
    assert alert.interval == timedelta(minutes=setting)
    assert type(alert.reference).__name__ == "DagRunQueuedAtDeadline"  # manual runs have no logical date
    assert isinstance(alert.callback, AsyncCallback) and alert.name == name
    module, _, function = alert.callback.path.rpartition(".")
    callback = getattr(importlib.import_module(module), function)  # by path, as the triggerer imports it
    assert inspect.iscoroutinefunction(callback) and not module.startswith(("dags", "vigil_common"))
    context = {
        "dag_run": {"dag_id": dag_id, "dag_run_id": "manual__1", "queued_at": "2026-01-01T00:00:00Z"},
        "deadline": {"deadline_time": "2026-01-01T08:00:00Z"},
    }
    asyncio.run(callback(**alert.callback.kwargs, context=context))  # it runs with what Airflow passes
    [record] = [r for r in caplog.records if r.name == "vigil.alerts"]
    assert record.levelname == "ERROR"
    assert record.getMessage().startswith(
        f"DEADLINE MISSED: {dag_id} run manual__1 ({name.split()[0]}) is not finished {name.split('within ')[1]} "
        "after it was queued at 2026-01-01T00:00:00Z (deadline 2026-01-01T08:00:00Z"
    )
