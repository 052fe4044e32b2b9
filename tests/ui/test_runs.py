"""The page of one DAG run (the "Vigil" tab): that run's own batch, snapshot, version, gate report."""

from __future__ import annotations

import re
import uuid

import pytest

from tasks.settings import Settings
from tasks.ui import run_kind
from tasks.ui.runs import RunFacts, run_page
from tests.helpers.ui import gate_report, write_gate_report


def text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


@pytest.fixture
def offline(tmp_path) -> Settings:
    """Settings whose MLflow does not answer: the pages must still show what Airflow and the store know."""
    from tasks.stack import free_port

    return Settings(mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}", model_name="m", home=tmp_path)


def facts(dag_id: str, **kwargs) -> RunFacts:
    defaults = {"run_id": "manual__2026-12-01T10:00:00+00:00", "state": "success", "run_type": "manual"}
    return RunFacts(dag_id=dag_id, **{**defaults, **kwargs})


def test_every_vigil_dag_has_its_kind_of_run_page():
    assert run_kind("collect_mastodon") == "collect" and run_kind("curate") == "curate"
    assert [run_kind(d) for d in ("train_detector", "promote", "deploy")] == ["train", "promote", "deploy"]
    assert run_kind("collect_") is None and run_kind("example_dag") is None


def test_a_rejected_gate_run_shows_its_report_bars_and_how_to_override(offline, local_store):
    report = gate_report(
        "m",
        {"version": "3", "run_id": "r3", "snapshot": "v0002"},
        {"version": "2", "run_id": "r2", "snapshot": "v0001"},
        "rejected",
    )
    report["checks"].append(
        {"name": "better_on_new_data", "status": "not applicable", "passed": True, "detail": "new data: none"}
    )
    write_gate_report(local_store, report)
    run = facts(
        "promote",
        state="failed",
        tasks={
            "resolve_version": {"state": "success"},
            "reject": {"state": "failed"},
            "promote_champion": {"state": "skipped"},
        },
        xcom={
            "resolve_version": {"return_value": "3"},
            "read_report": {"return_value": {"decision": "rejected", "challenger": {"version": "3"}}},
        },
    )
    html = run_page(offline, local_store, "/vigil", "http://mlflow.example", "promote", run.run_id, run)
    seen = text(html)
    assert "Gate of version 3 rejected" in seen
    assert "To promote it anyway" in seen and "Model version 3" in seen and "Override reason" in seen
    assert '<svg class="slice-bars"' in html
    bars = re.search(r'<g class="slice" data-slice="generator=A"[^>]*>(.*?)</g>', html, re.S).group(1)
    assert 'class="champion" data-value="0.9500"' in bars and 'class="challenger" data-value="0.9300"' in bars
    assert "not applicable" in seen and "new data: none" in seen
    assert 'href="/vigil/models/3/gate/report.html"' in html
    assert 'href="/dags/promote/runs/manual__2026-12-01T10%3A00%3A00%2B00%3A00/tasks/reject"' in html


def test_an_overridden_gate_run_says_who_promoted_it_and_why(offline, local_store):
    report = gate_report(
        "m", {"version": "3", "run_id": "r3", "snapshot": "v0002"}, {"version": "2"}, "overridden"
    )
    report["override"] = {"by": "ana", "reason": "QA <checked> by hand", "at": "2026-12-01T11:00:00+00:00"}
    write_gate_report(local_store, report)
    run = facts(
        "promote",
        tasks={"promote_champion": {"state": "success"}, "reject": {"state": "skipped"}},
        xcom={
            "resolve_version": {"return_value": "3"},
            "promote_champion": {"return_value": {"overridden": True, "version": "3"}},
        },
    )
    html = run_page(offline, local_store, "/vigil", "http://mlflow.example", "promote", run.run_id, run)
    seen = text(html)
    assert "Gate of version 3 overridden" in seen and "Promoted by override of ana" in seen
    assert "QA &lt;checked&gt; by hand" in html and "To promote it anyway" not in seen


def test_a_training_run_links_its_mlflow_run_and_version(mlflow_server, local_store):
    from mlflow import MlflowClient

    settings = Settings(mlflow_tracking_uri=mlflow_server, model_name=f"m-{uuid.uuid4().hex[:6]}")
    client = MlflowClient(mlflow_server)
    experiment = client.create_experiment(f"runs-{uuid.uuid4().hex[:6]}")
    mlflow_run = client.create_run(experiment).info.run_id
    result = {
        "model_name": settings.model_name,
        "version": "4",
        "run_id": mlflow_run,
        "snapshot": "v0003",
        "profile": "tiny",
        "val_roc_auc": 0.97,
        "test_roc_auc": 0.9612,
        "threshold": 0.41,
        "train_seconds": 61.2,
    }
    run = facts(
        "train_detector",
        tasks={"enough_new_images": {"state": "success"}, "train": {"state": "success"}},
        xcom={"train": {"return_value": result}},
    )
    html = run_page(
        settings, local_store, "/vigil", "http://mlflow.example:5000", "train_detector", run.run_id, run
    )
    seen = text(html)
    assert f"{settings.model_name} v4" in seen and "v0003" in seen and "0.9612" in seen
    assert f'href="http://mlflow.example:5000/#/experiments/{experiment}/runs/{mlflow_run}"' in html
    assert f'href="http://mlflow.example:5000/#/models/{settings.model_name}/versions/4"' in html

    skipped = facts(
        "train_detector", tasks={"enough_new_images": {"state": "skipped"}, "train": {"state": "skipped"}}
    )
    seen = text(
        run_page(settings, local_store, "/vigil", "http://x", "train_detector", skipped.run_id, skipped)
    )
    assert "Not trained: the snapshot did not bring enough new labeled images" in seen


def test_collect_curate_and_deploy_runs_show_their_batch_snapshot_and_steps(offline, local_store):
    collect = facts(
        "collect_inbox",
        tasks={"collect": {"state": "success"}},
        xcom={
            "collect": {
                "return_value": {
                    "batch_id": "inbox-1",
                    "source": "inbox",
                    "images": 14,
                    "labels": {"fake": 7},
                }
            }
        },
    )
    html = run_page(offline, local_store, "/vigil", "http://x", "collect_inbox", collect.run_id, collect)
    assert "inbox-1" in text(html) and "not curated yet" in text(html)
    local_store.write_json("reports/inbox-1/summary.json", {"batch_id": "inbox-1"})
    html = run_page(offline, local_store, "/vigil", "http://x", "collect_inbox", collect.run_id, collect)
    assert 'href="/vigil/data-quality/inbox-1"' in html

    summary = {
        "version": "v0002",
        "parent": "v0001",
        "new_images": 12,
        "images": 40,
        "batches": ["inbox-1", "inbox-2"],
        "passed_batches": ["inbox-1"],
        "failed_batches": [{"batch_id": "inbox-2", "message": "too many bad images"}],
        "quarantined": {"empty": 1},
    }
    curate = facts("curate", xcom={"curate_batches": {"return_value": summary}})
    seen = text(run_page(offline, local_store, "/vigil", "http://x", "curate", curate.run_id, curate))
    assert "v0002 (parent v0001, 12 new images, 40 in all)" in seen
    assert "inbox-2 failed" in seen and "too many bad images" in seen

    deploy = facts(
        "deploy",
        state="failed",
        tasks={
            "tune": {"state": "skipped"},
            "smoke_test_sandbox": {"state": "failed"},
            "rollback": {"state": "failed"},
        },
        xcom={
            "resolve_version": {"return_value": "5"},
            "smoke_test_sandbox": {"error": "DeployError: p95 latency 900 ms > 500 ms"},
        },
    )
    seen = text(run_page(offline, local_store, "/vigil", "http://x", "deploy", deploy.run_id, deploy))
    assert "Deployment of version 5" in seen and "p95 latency 900 ms &gt; 500 ms" in seen


def test_an_unknown_run_and_hostile_ids_are_shown_escaped(offline, local_store):
    html = run_page(offline, local_store, "/vigil", "http://x", "promote", "<script>x</script>", None)
    assert "Airflow has no run" in text(html) and "<script>x" not in html
