"""A version's reference, recorded for real: the registered probe detector scored on its snapshot's
test split; the monitor records a missing one at first use."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from tasks.monitor.predictions import prediction_row, write_part
from tasks.monitor.reference import NoReference, read_reference, record_reference, reference_key


@pytest.fixture
def registered(tmp_path, mlflow_server, probe_dir, demo_root, publish_demo, register):
    from tasks.settings import Settings
    from tasks.storage import ObjectStore

    settings = Settings(
        home=tmp_path / "home",
        store_url=(tmp_path / "store").as_uri(),
        inbox=str(tmp_path / "inbox"),
        mlflow_tracking_uri=mlflow_server,
        model_name=f"ref-{uuid.uuid4().hex[:8]}",
    )
    store = ObjectStore.from_settings(settings)
    snapshot = publish_demo(store, demo_root / "demo_a")
    version = register(probe_dir, settings, snapshot.version)
    return settings, store, version


def test_the_reference_is_the_versions_scores_and_embeddings_on_its_test_split(registered):
    from tasks.data.frames import snapshot_frame
    from tasks.model.detector import Detector

    settings, store, version = registered
    key = record_reference(settings, settings.model_name, version)
    assert key == reference_key(settings.model_name, version)

    reference = read_reference(store, settings.model_name, version)
    test = snapshot_frame(store, "v0001", ("test",), settings.home / "cache")
    detector = Detector.load(f"models:/{settings.model_name}/{version}", settings=settings)
    assert len(reference.sample) == len(test) == 16 and reference.snapshot == "v0001"
    assert reference.threshold == pytest.approx(detector.threshold)
    order = np.argsort(test.table["image_id"].to_numpy())
    stored = store.read_table(key).set_index("image_id").loc[test.table["image_id"].to_numpy()[order]]
    assert np.allclose(stored["p_fake"].to_numpy(), detector.score(test.images())[order])
    assert reference.sample.embeddings.shape == (16, detector.card.embedding_dims)
    verdicts = stored["p_fake"].to_numpy() >= detector.threshold
    assert reference.accuracy == pytest.approx(np.mean(verdicts == (stored["label"].to_numpy() == "fake")))


def test_the_monitor_records_a_missing_reference_and_tests_the_window(registered):
    from tasks.monitor.config import MonitorConfig
    from tasks.monitor.run import monitor, window_prefix

    settings, store, version = registered
    now = datetime.now(UTC)
    rng = np.random.default_rng(0)
    rows = [
        prediction_row(
            float(p),
            time=now - timedelta(minutes=10),
            model_name=settings.model_name,
            model_version=version,
            embedding=rng.normal(size=32),
        )
        for p in rng.random(300)
    ]
    write_part(store, rows, flushed=now - timedelta(minutes=5))
    assert not store.exists(reference_key(settings.model_name, version))
    summary = monitor(settings, MonitorConfig(), now=now)

    assert store.exists(reference_key(settings.model_name, version))
    [group] = store.read_json(f"{window_prefix(summary['windows'][0])}/summary.json")["groups"]
    assert group["tested"] and group["reference"] == {
        "snapshot": "v0001",
        "rows": 16,
        "threshold": pytest.approx(read_reference(store, settings.model_name, version).threshold),
    }


def test_a_version_without_its_snapshot_tag_has_no_reference(registered):
    from tasks.registry import Registry, UnknownVersionError

    settings, _, version = registered
    Registry(settings).client.delete_model_version_tag(settings.model_name, version, "snapshot")
    with pytest.raises(NoReference, match="has no 'snapshot' tag"):
        record_reference(settings, settings.model_name, version)
    with pytest.raises(UnknownVersionError, match="no version 99"):
        record_reference(settings, settings.model_name, "99")
