"""The whole loop exactly as `make demo` runs it (same demo set, same demo gate policy): a real
embedded stack (Airflow standalone, MLflow server, serving), both rounds driven through Airflow's
REST API. A smaller set trains a model that misses the policy's AUC floor now and then."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_two_rounds_collect_curate_train_promote_tune_deploy_and_answer(tmp_path, monkeypatch):
    from tasks import stack
    from tasks.demo.run import CHAIN, run_demo
    from tasks.settings import Settings
    from tasks.stack.airflow_client import AirflowClient
    from tasks.storage import ObjectStore

    for name in ("MLFLOW_TRACKING_URI", "VIGIL_AIRFLOW_URL", "VIGIL_SERVING_URL"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{stack.free_port()}")
    monkeypatch.setenv("VIGIL_HOME", str(tmp_path / "vigil"))
    monkeypatch.delenv("VIGIL_STORE_URL", raising=False)
    monkeypatch.setenv("VIGIL_PROMOTION__POLICY_FILE", "gate.demo.yaml")
    try:
        first, second = run_demo(("A", "B"))
        settings = Settings()

        # Round 1: the first model meets the floors, becomes champion, is deployed and answers.
        assert (first.snapshot, first.version, first.decision, first.deployed) == (
            "v0001",
            "1",
            "promoted",
            "1",
        )
        assert first.detection["model"]["version"] == "1"
        assert first.detection["label"] in {"synthetic", "authentic"} and 0 <= first.detection["p_fake"] <= 1
        assert first.detection["explanation"]

        # Round 2: the round-1 champion is poor on B; the challenger (from the champion, replaying A) is not.
        assert second.snapshot == "v0002" and second.version == "2"
        b, a = second.auc["generator=B"], second.auc["generator=A"]
        assert b["champion"] < 0.7 < b["challenger"], b
        assert a["champion"] is not None and a["challenger"] is not None
        assert (second.decision, second.deployed) == ("promoted", "2"), second.reasons
        assert second.detection["model"]["version"] == "2"

        # Everything ran through Airflow, and the data-quality reports of both batches are in the store.
        _services, info = stack.load_stack(settings.home / "stack.json")
        client = AirflowClient(settings.airflow_url, "admin", info["airflow_password"])
        for dag_id in CHAIN:
            assert any(run["state"] == "success" for run in client.runs(dag_id)), dag_id
        summaries = [
            k for k in ObjectStore.from_settings(settings).list("reports/") if k.endswith("summary.json")
        ]
        assert len(summaries) >= 2
    finally:
        stack.down(Settings())
