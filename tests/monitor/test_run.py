"""A monitoring run over synthetic prediction logs with known drift and none, on a real MLflow registry:
windows, alerts (asserted absent on a stationary stream and present on a shifted one), groups per
source, the review queue it fills, the labels it counts and the accuracy-drop check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from tasks.monitor.config import MonitorConfig
from tasks.monitor.predictions import prediction_row, write_part
from tasks.monitor.run import ACCURACY_KEY, SERIES_KEY, monitor, window_prefix
from tasks.review import queue
from tests.helpers.monitor import Stream, monitored_store, png, traffic, write_stream


@pytest.fixture
def monitored(tmp_path, mlflow_server):
    return monitored_store(tmp_path, mlflow_server)


@pytest.fixture
def now():
    """The test's own clock: a suite that runs past midnight must not date records by yesterday."""
    return datetime.now(UTC).replace(microsecond=0)


def test_a_stationary_stream_raises_no_alert(monitored):
    settings, store, model = monitored
    stream = Stream(settings, store, model)
    summaries = [stream.add() for _ in range(5)]

    assert [len(s["windows"]) for s in summaries] == [1] * 5
    assert all(s["alerts"] == [] and s["drifting"] == [] for s in summaries)
    series = store.read_json(SERIES_KEY)["windows"]
    assert len(series) == 5 and all(w["tested"] and not w["drifting"] for w in series)
    latest = store.read_json(f"{window_prefix(series[-1]['window_id'])}/summary.json")
    [group] = latest["groups"]
    assert group["group"] == f"{model}/v1" and group["rows"] == 1000 and group["signals"] == []
    assert group["embedding"]["roc_auc"] < 0.55 and group["score"]["ks_p_value"] > 0.05
    assert abs(group["estimated_accuracy"]["accuracy"] - group["estimated_accuracy"]["reference"]) < 0.02
    assert store.exists(f"{window_prefix(series[-1]['window_id'])}/report.html")

    # Nothing new: no window, nothing read twice.
    again = monitor(settings, stream.config, now=stream.now)
    assert again["windows"] == [] and again["waiting"]["rows"] == 0


def test_a_shifted_stream_raises_one_alert_on_the_second_drifting_window(monitored):
    settings, store, model = monitored
    stream = Stream(settings, store, model)
    stream.add()
    stream.add()
    first = stream.add(shift_share=0.3)
    assert first["drifting"] == [f"{model}/v1"] and first["alerts"] == []  # one drifting window: not yet

    second = stream.add(shift_share=0.3)
    [alert] = second["alerts"]
    assert alert["group"] == f"{model}/v1" and alert["consecutive"] == 2 and alert["source"] is None
    assert {"score", "embedding"} <= set(alert["signals"])
    assert "drifting in 2 consecutive windows" in alert["reason"] and "ROC AUC" in alert["reason"]
    assert alert["metrics"]["score"]["wasserstein"] >= 0.1 and alert["metrics"]["embedding"]["drifted"]
    assert store.read_json(f"monitor/alerts/{alert['alert_id']}.json") == alert
    assert alert["report"].endswith(f"{window_prefix(alert['window_id'])}/report.html")
    assert store.read_json(f"review/campaigns/{alert['alert_id']}.json")["window_id"] == alert["window_id"]

    third = stream.add(shift_share=0.3)
    assert third["drifting"] == [f"{model}/v1"] and third["alerts"] == []  # one alert per episode
    calm = stream.add()
    assert calm["drifting"] == []


def test_a_source_drifting_alone_is_named_in_the_alert(monitored):
    settings, store, model = monitored
    stream = Stream(settings, store, model)
    for _ in range(2):
        stream.add(600, run=False, source="web")
        stream.add(400, run=True, shift_share=0.6, source="partner")
    summary = store.read_json(SERIES_KEY)
    assert len(summary["windows"]) == 2
    alerts = [a for a in store.list("monitor/alerts") if a.endswith(".json")]
    sources = {store.read_json(k)["source"] for k in alerts}
    assert "partner" in sources and "web" not in sources
    latest = store.read_json(f"{window_prefix(summary['windows'][-1]['window_id'])}/summary.json")
    groups = {g["group"]: g for g in latest["groups"]}
    assert not groups[f"{model}/v1/source=web"]["drifting"]
    assert groups[f"{model}/v1/source=partner"]["drifting"]


def test_windows_are_whole_parts_and_a_small_remainder_waits(monitored):
    settings, store, model = monitored
    config = MonitorConfig(window={"min_rows": 300, "max_rows": 1000})
    stream = Stream(settings, store, model, config)
    summary = stream.add(2500)  # five parts of 500
    assert len(summary["windows"]) == 3
    assert [w["rows"] for w in store.read_json(SERIES_KEY)["windows"]] == [1000, 1000, 500]
    waiting = stream.add(100)
    assert waiting["windows"] == [] and waiting["waiting"] == {"parts": 1, "rows": 100, "min_rows": 300}
    joined = stream.add(250)
    assert len(joined["windows"]) == 1 and joined["rows"] == 350


def test_parts_without_embeddings_are_tested_on_their_scores(monitored):
    settings, store, model = monitored
    summary = Stream(settings, store, model).add(embeddings=False)
    window = store.read_json(f"{window_prefix(summary['windows'][0])}/summary.json")
    [group] = window["groups"]
    assert group["tested"] and "ks_p_value" in group["score"]
    assert group["embedding"]["skipped"].startswith("0 rows of the window have an embedding")


def test_a_version_without_a_reference_is_reported_untested(monitored):
    settings, store, model = monitored
    summary = Stream(settings, store, model).add(version="7")
    window = store.read_json(f"{window_prefix(summary['windows'][0])}/summary.json")
    [group] = window["groups"]
    assert not group["tested"] and f"{model} has no version 7" in group["reason"]
    assert group["estimated_accuracy"]["accuracy"] is not None  # still estimated


def test_the_window_fills_the_review_queue_and_keeps_only_the_queued_images(monitored, now):
    from tasks.review.candidates import keep_candidate

    settings, store, model = monitored
    config = MonitorConfig(review={"per_window": {"near_threshold": 2, "audit": 1, "claims": 5}})
    rows, kept = [], []
    for i, (p, reason) in enumerate(
        [
            (0.51, "near_threshold"),
            (0.44, "near_threshold"),
            (0.58, "near_threshold"),
            (0.02, "audit"),
            (0.97, "audit"),
        ]
    ):
        key = keep_candidate(store, png((i * 40, 10, 10)), "png")
        kept.append(key)
        rows.append(
            prediction_row(
                p, time=now - timedelta(minutes=30), model_name=model, image_key=key, review_candidate=reason
            )
        )
    rows += traffic(300, np.random.default_rng(3), start=now - timedelta(minutes=29), model=model)
    write_part(store, rows, flushed=now - timedelta(minutes=20))

    summary = monitor(settings, config, now=now)
    items = queue.list_items(store)
    near = [i for i in items if "near_threshold" in i.reasons]
    assert [round(i.record["p_fake"], 2) for i in near] == [0.51, 0.44]  # the closest to the threshold
    assert sum("audit" in i.reasons for i in items) == 1 and summary["review"]["waiting"] == 3
    assert all(not store.exists(k) for k in kept)  # the candidates' own copies are gone
    assert all(store.exists(i.record["image"]) for i in items)  # the queue keeps its copy


def test_feedback_claims_that_disagree_with_the_model_are_queued(monitored, now):
    settings, store, model = monitored
    for pid, claimed, predicted in (("c1", "synthetic", "authentic"), ("c2", "authentic", "authentic")):
        store.write_bytes(f"claims/{pid}/{claimed}.png", png((5, 5, 5)))
        store.write_json(
            f"claims/{pid}/{claimed}.json",
            {
                "prediction_id": pid,
                "claimed_label": claimed,
                "time": now.isoformat(),
                "client": "ip:1f3a",
                "model_name": model,
                "model_version": "1",
                "p_fake": 0.2,
                "predicted": predicted,
                "predicted_at": now.isoformat(),
                "image_sha256": "0" * 64,
                "status": "pending",
                "image_key": f"claims/{pid}/{claimed}.png",
            },
        )
    summary = monitor(settings, MonitorConfig(), now=now)
    [item] = queue.list_items(store)
    assert item.id == "c1" and item.reasons == ["claim"] and item.record["verdict"] == "real"
    assert item.record["claims"] == [{"claimed_label": "fake", "client": "ip:1f3a", "time": now.isoformat()}]
    assert summary["review"]["claims"]["new"] == 2 and summary["review"]["claims"]["disagreeing"] == 1
    assert monitor(settings, MonitorConfig(), now=now)["review"]["claims"].get("queued", 0) == 0  # once


def test_claims_over_the_per_run_limit_wait_for_the_next_run(monitored, now):
    import time

    settings, store, model = monitored
    for pid in ("d1", "d2", "d3"):
        store.write_bytes(f"claims/{pid}/synthetic.png", png((7, 7, 7)))
        store.write_json(
            f"claims/{pid}/synthetic.json",
            {
                "prediction_id": pid,
                "claimed_label": "synthetic",
                "predicted": "authentic",
                "status": "pending",
                "p_fake": 0.1,
                "model_name": model,
                "model_version": "1",
                "image_key": f"claims/{pid}/synthetic.png",
            },
        )
        time.sleep(1.1)  # distinct modification times
    config = MonitorConfig(review={"per_window": {"claims": 2}})
    first = monitor(settings, config, now=now)
    assert first["review"]["claims"]["disagreeing"] == 2 and [i.id for i in queue.list_items(store)] == [
        "d1",
        "d2",
    ]
    monitor(settings, config, now=now)
    assert sorted(i.id for i in queue.list_items(store)) == ["d1", "d2", "d3"]


def make_champion(settings, model: str) -> str:
    """A registered version (a run's empty artifact) with the champion alias; its number."""
    import mlflow

    from tasks.registry import Registry, use_mlflow

    use_mlflow(settings)
    mlflow.set_experiment("vigil-tests")
    with mlflow.start_run() as run:
        mlflow.log_text("stand-in", "model/README.txt")
    registry = Registry(settings)
    registry.client.create_registered_model(model)
    version = registry.client.create_model_version(
        model, f"runs:/{run.info.run_id}/model", run.info.run_id
    ).version
    registry.client.set_registered_model_alias(model, "champion", str(version))
    return str(version)


def test_labels_are_measured_and_a_drop_is_announced_once(monitored, tmp_path):
    from tasks.storage import ObjectStore

    settings, store, model = monitored
    assert make_champion(settings, model) == "1"
    inbox = ObjectStore(settings.inbox)
    config = MonitorConfig(retrain={"accuracy_drop": {"min_labels": 20, "max_drop": 0.05}})
    # 30 audit items the model (saying fake) got wrong in 15 cases: 50 % vs the reference's 85 %.
    candidates = []
    for i in range(30):
        key = store.put_content(png((i, 100, 100)), "review/candidates", "png")
        candidates.append(
            {
                "item_id": f"a{i}",
                "prediction_id": f"a{i}",
                "reasons": ["audit"],
                "image_key": key,
                "p_fake": 0.9,
                "threshold": 0.5,
                "verdict": "fake",
                "model_name": model,
                "model_version": "1",
                "source": "web",
                "claims": [],
            }
        )
    queue.enqueue(store, candidates, config.review)
    for i in range(30):
        queue.decide(store, inbox, f"a{i}", "fake" if i % 2 else "real", "auditor")

    summary = Stream(settings, store, model, config).add()
    accuracy = summary["accuracy"]
    assert accuracy["version"] == "1" and accuracy["n"] == 30 and accuracy["accuracy"] == 0.5
    assert accuracy["dropped"] and accuracy["high"] < accuracy["reference_accuracy"] - 0.05
    assert summary["accuracy_drop"] == accuracy  # the event the DAG emits
    assert store.read_json(ACCURACY_KEY)["dropped"]
    window = store.read_json(f"{window_prefix(summary['windows'][0])}/summary.json")
    measured = window["groups"][0]["measured"]
    assert measured["audit"]["n"] == 30 and measured["all"]["accuracy"] == 0.5
    assert window["volume"]["labels"] == 30

    again = Stream(settings, store, model, config, seed=2).add()
    assert again["accuracy"]["dropped"] and again["accuracy_drop"] is None  # announced once
    assert again["accuracy"]["n"] == 30  # the labels were counted once


def test_reports_older_than_report_days_are_deleted_and_their_summaries_kept(monitored, now):
    settings, store, model = monitored
    old_day = (now - timedelta(days=31)).date()
    prefix = f"monitor/windows/date={old_day.isoformat()}/{old_day:%Y%m%d}T120000-0000abcd"
    for name in ("report.html", "report.json", "summary.json"):
        store.write_bytes(f"{prefix}/{name}", b"{}")
    Stream(settings, store, model).add()
    assert store.list(prefix) == [f"{prefix}/summary.json"]
    state = store.read_json("monitor/state.json")
    assert state["reports_pruned_until"] == old_day.isoformat()


def test_with_the_serving_cascade_the_first_stage_is_tested_on_every_image(monitored, now):
    """The second stage sees only the uncertain band (a chosen subset): its rows are tested as the first
    stage's, on the first stage's score and embedding, against the first stage's reference."""
    settings, store, model = monitored
    rng = np.random.default_rng(5)
    rows = traffic(1000, rng, start=now - timedelta(hours=2), model=model)
    for row in rows:
        row["stage"], row["first_p_fake"] = "probe", row["p_fake"]
        if 0.2 <= row["p_fake"] < 0.8:  # routed: the VLM decides, with its own model and score
            row.update(stage="vlm", model_name="vigil-detector-vlm", model_version="4", p_fake=0.97)
    write_stream(store, rows, flushed=now - timedelta(hours=2))
    summary = monitor(settings, MonitorConfig(), now=now)

    window = store.read_json(f"{window_prefix(summary['windows'][0])}/summary.json")
    assert [g["group"] for g in window["groups"]] == [f"{model}/v1"] and window["untested_rows"] == 0
    [group] = window["groups"]
    assert group["rows"] == 1000 and group["tested"] and not group["drifting"]
    assert abs(group["score"]["mean"] - group["score"]["reference_mean"]) < 0.05  # the first stage's scores

    # Two first-stage versions in one window: the routed rows cannot be attributed and stay untested.
    rows = traffic(600, rng, start=now - timedelta(hours=1), model=model)
    rows += traffic(400, rng, start=now - timedelta(minutes=50), model=model, version="2")
    routed = 0
    for row in rows:
        row["stage"], row["first_p_fake"] = "probe", row["p_fake"]
        if 0.3 <= row["p_fake"] < 0.7:
            row.update(stage="vlm", model_name="vigil-detector-vlm", model_version="4", p_fake=0.97)
            routed += 1
    write_stream(store, rows, flushed=now - timedelta(hours=1))
    summary = monitor(settings, MonitorConfig(), now=now)
    window = store.read_json(f"{window_prefix(summary['windows'][0])}/summary.json")
    assert window["untested_rows"] == routed > 0
    assert {g["group"] for g in window["groups"]} == {f"{model}/v1", f"{model}/v2"}
