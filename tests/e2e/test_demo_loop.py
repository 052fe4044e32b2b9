"""The whole loop exactly as `make demo` runs it (same demo sets, same demo gate and monitoring
policies): a real embedded stack (Airflow standalone, MLflow server, serving), the two inbox rounds
driven through Airflow's REST API, and the traffic round: predictions -> monitor -> drift alert ->
review queue -> decisions through the review API -> retraining, gate and deploy."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_three_rounds_inbox_inbox_then_traffic_monitoring_review_and_retraining(tmp_path, monkeypatch):
    from tasks import stack
    from tasks.demo.run import CHAIN, forgetting, run_demo
    from tasks.settings import Settings
    from tasks.stack.airflow_client import AirflowClient
    from tasks.storage import ObjectStore

    for name in ("MLFLOW_TRACKING_URI", "VIGIL_AIRFLOW_URL", "VIGIL_SERVING_URL"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{stack.free_port()}")
    monkeypatch.setenv("VIGIL_HOME", str(tmp_path / "vigil"))
    monkeypatch.delenv("VIGIL_STORE_URL", raising=False)
    monkeypatch.setenv("VIGIL_PROMOTION__POLICY_FILE", "gate.demo.yaml")
    monkeypatch.setenv("VIGIL_MONITORING__CONFIG_FILE", "monitor.demo.yaml")
    monkeypatch.setenv("VIGIL_SERVING__LOG_FLUSH_S", "5")
    monkeypatch.setenv("VIGIL_SERVING__AUDIT_RATE", "1.0")
    try:
        first, second, third = run_demo(("A", "B"), traffic=("C",))
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
        assert forgetting(second, ("A", "B")) <= 0.02  # the production gate's bound, met by the demo

        # Round 3: C reaches serving only. The monitor raises a drift alert, the review queue fills, the
        # demo's decisions become training labels, and the new champion sees C it was never sent.
        assert third.trigger == "monitoring + review" and third.traffic["alerts"] >= 1, third.traffic
        assert third.traffic["labeled"] >= 100, third.traffic
        assert third.held_out["before"] < 0.8 < third.held_out["after"], third.held_out
        assert (third.decision, third.deployed) == ("promoted", "3"), third.reasons
        assert forgetting(third, ("A", "B", "C")) <= 0.03, third.auc  # the demo policy's bound

        # Everything ran through Airflow, and the data-quality reports of both batches are in the store.
        _services, info = stack.load_stack(settings.home / "stack.json")
        client = AirflowClient(settings.airflow_url, "admin", info["airflow_password"])
        for dag_id in CHAIN:
            assert any(run["state"] == "success" for run in client.runs(dag_id)), dag_id
        summaries = [
            k for k in ObjectStore.from_settings(settings).list("reports/") if k.endswith("summary.json")
        ]
        assert len(summaries) >= 3  # A, B and the review labels
        assert any(run["state"] == "success" for run in client.runs("monitor"))
    finally:
        stack.down(Settings())
