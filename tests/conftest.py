"""Shared fixtures: real services on loopback (moto S3, MLflow), stores on both backends, Airflow DB.

The environment is set before anything imports Airflow, Hugging Face or Great Expectations, so that
every test runs offline and against a throwaway Airflow home.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="vigil-tests-"))

os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",  # outside production nothing asks for cloud instance credentials
        "VIGIL_HOME": str(_SESSION_DIR / "vigil"),
        "VIGIL_DOWNLOAD__POLITENESS_DELAY_S": "0",
    }
)
from tasks.stack import airflow_env  # noqa: E402  (after the environment is set)

os.environ.update(airflow_env(_SESSION_DIR / "airflow"))


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite Airflow metadata DB for dag.test() and DagBag tests (one per session)."""
    home = Path(os.environ["AIRFLOW_HOME"])
    if not (home / "airflow.db").exists():
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    return home


@pytest.fixture
def http_server():
    """A loopback HTTP server for third-party APIs and media (X, Mastodon, image hosts)."""
    from tests.helpers.collect import FixtureServer

    server = FixtureServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    """A real HTTP S3 endpoint (moto's server) on 127.0.0.1."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def make_bucket(endpoint: str) -> str:
    import boto3

    name = f"vigil-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "s3"])
def store_env(request, tmp_path, monkeypatch) -> dict[str, str]:
    """Point VIGIL_* at a fresh store on each backend; returns the env it set (for subprocesses too)."""
    env = {"VIGIL_HOME": str(tmp_path / "home")}
    if request.param == "local":
        env["VIGIL_STORE_URL"] = (tmp_path / "store").as_uri()
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        env["VIGIL_STORE_URL"] = f"s3://{make_bucket(endpoint)}/vigil"
        env["VIGIL_S3_ENDPOINT_URL"] = endpoint
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def settings(store_env):
    from tasks.settings import Settings

    return Settings()


@pytest.fixture
def store(settings):
    from tasks.storage import ObjectStore

    return ObjectStore.from_settings(settings)


@pytest.fixture
def local_store(tmp_path):
    from tasks.storage import ObjectStore

    return ObjectStore((tmp_path / "store").as_uri())


@pytest.fixture(scope="session")
def mlflow_server() -> str:
    """A real MLflow tracking server (SQLite + proxied artifacts) on loopback; yields its URI."""
    from tasks import stack

    service = stack.start_mlflow(_SESSION_DIR / "mlflow")
    try:
        stack.wait_healthy(service, timeout=120)
        yield service.url
    finally:
        stack.stop(service)


# -- the tiny detector, shared by model, tuning, serving, gate and deploy tests ----------------------

import json  # noqa: E402

import pandas as pd  # noqa: E402

from tasks.data.snapshots import export_path, latest_version, publish_snapshot, read_snapshot  # noqa: E402
from tasks.demo.data import DemoSpec, generate  # noqa: E402

SMALL = (("train", 24), ("val", 8), ("test", 8))


def publish_demo_snapshot(store, root: Path):
    """Publish the demo folder ``root`` as a new snapshot on top of the latest one (cumulative)."""
    parent = latest_version(store)
    previous = read_snapshot(store, parent).table if parent else None
    records = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    batch_id = f"demo-{root.name}"
    rows = []
    for record in records:
        data = (root / record["file_name"]).read_bytes()
        key = store.put_content(data, "curated", "png")
        image_id = key.rsplit("/", 1)[-1].removesuffix(".png")
        split, label_dir = record["file_name"].split("/")[:2]
        label = "real" if label_dir == "0_real" else "fake"
        rows.append(
            {
                "image_id": image_id,
                "key": key,
                "path": export_path(split, label, image_id),
                "split": split,
                "label": label,
                "label_source": "folder",
                "source": root.name,
                "batch_id": batch_id,
                "group_id": image_id,
                "phash": "0" * 16,
                "width": 56,
                "height": 56,
                "original_format": "PNG",
                "original_size_bytes": len(data),
                "generator": record.get("generator"),
            }
        )
    table = pd.DataFrame(rows)
    if previous is not None:
        table = pd.concat([previous, table], ignore_index=True).drop_duplicates("image_id")
    return publish_snapshot(store, table, parent, [batch_id])


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """Small demo sets of generators A and B (24/8/8 images per class and split)."""
    dest = tmp_path_factory.mktemp("demo")
    for generator in ("A", "B"):
        generate(dest, DemoSpec(generator=generator, per_split=SMALL, seed=1))
    return dest


@pytest.fixture(scope="session")
def tiny_config():
    """The repository's tiny setup, shortened for tests."""
    from tasks.model.config import load_config
    from tasks.settings import Settings

    return load_config(None, Settings(), profile="tiny").with_overrides(
        {"train.epochs": 3, "train.batch_size": 16, "train.early_stopping_patience": 3}
    )


@pytest.fixture(scope="session")
def probe_config():
    """The repository's probe setup (the embedded default), shortened for tests."""
    from tasks.model.config import load_config
    from tasks.settings import Settings

    return load_config(None, Settings(), profile="probe").with_overrides(
        {"train.epochs": 60, "train.early_stopping_patience": 15, "augment.views": 1}
    )


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory) -> Path:
    """One cache folder for the probe's backbone graph and features (each image is featurised once)."""
    return tmp_path_factory.mktemp("probe-cache")


@pytest.fixture(scope="session")
def probe_fit(probe_config, demo_frames, feature_cache):
    """The probe trained from scratch on generator A's small demo set."""
    import numpy as np

    from tasks.train.probe import fit_probe

    train = demo_frames["train"]
    return fit_probe(probe_config, train, demo_frames["val"], np.zeros(len(train), bool), feature_cache)


@pytest.fixture(scope="session")
def probe_dir(probe_fit, probe_config, demo_frames, tmp_path_factory) -> Path:
    """That probe saved as a detector folder, threshold chosen on val for 5% FPR."""
    from tasks.evaluate.metrics import threshold_at_fpr
    from tasks.model import backbone
    from tasks.model.card import card_for
    from tasks.model.probe import save_probe

    threshold = threshold_at_fpr(demo_frames["val"].labels, probe_fit.val_scores, probe_config.target_fpr)
    card = card_for(
        probe_config,
        threshold=threshold,
        snapshot="demo_a",
        weights=backbone.identity(),
        feature_names=probe_fit.feature_names,
    )
    return save_probe(tmp_path_factory.mktemp("probe") / "detector", card, probe_fit.head)


@pytest.fixture(scope="session")
def tiny_base(tiny_config, tmp_path_factory):
    """The tiny base model and preprocessor (built once per session)."""
    from tasks.model.vlm import load_base

    return load_base(tiny_config, tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def demo_frames(demo_root):
    """Generator A's small demo folder as train/val/test frames."""
    from tasks.data.frames import folder_frame

    frame = folder_frame(demo_root / "demo_a")
    return {
        s: frame.where(frame.table["split"].to_numpy() == s, f"demo_a {s}") for s in ("train", "val", "test")
    }


@pytest.fixture(scope="session")
def trained(tiny_config, demo_frames, tmp_path_factory):
    """The tiny profile fully fine-tuned for a bounded number of steps (25 epochs x 3 steps) on generator A."""
    from tasks.settings import Settings
    from tasks.train.job import StartingPoint, TrainingData, fit

    config = tiny_config.with_overrides(
        {"train.epochs": 25, "train.batch_size": 16, "train.early_stopping_patience": 25}
    )
    data = TrainingData(demo_frames["train"], demo_frames["val"], demo_frames["test"], {})
    trainer = fit(
        config,
        Settings(),
        StartingPoint("base"),
        data,
        tmp_path_factory.mktemp("checkpoints"),
        tmp_path_factory.mktemp("cache"),
    )
    return trainer, config


@pytest.fixture(scope="session")
def trained_dir(trained, demo_frames, tmp_path_factory) -> Path:
    """The trained tiny detector saved as a detector folder, threshold chosen on val for 5% FPR."""
    from tasks.evaluate.metrics import threshold_at_fpr
    from tasks.model.card import card_for
    from tasks.model.vlm import save_detector

    trainer, config = trained
    threshold = threshold_at_fpr(demo_frames["val"].labels, trainer.validation_scores(), config.target_fpr)
    card = card_for(config, threshold=threshold, snapshot="demo_a")
    return save_detector(
        tmp_path_factory.mktemp("detector") / "detector", trainer.model, trainer.preprocessor, card, config
    )


@pytest.fixture(scope="session")
def publish_demo():
    """``publish_demo(store, folder)`` publishes a demo folder as the next snapshot."""
    return publish_demo_snapshot


@pytest.fixture(scope="session")
def untrained_dir(tiny_config, tiny_base, tmp_path_factory) -> Path:
    """The tiny detector with random weights (AUC near 0.5): a challenger that fails or forgets."""
    from tasks.model.card import card_for
    from tasks.model.vlm import save_detector

    model, preprocessor = tiny_base
    card = card_for(tiny_config.with_overrides({"method": "full"}), threshold=0.5, snapshot="none")
    return save_detector(tmp_path_factory.mktemp("untrained") / "detector", model, preprocessor, card)


def register_detector(folder: Path, settings, snapshot: str, name: str | None = None) -> str:
    """Log a detector folder in an MLflow run and register it as a new version of ``name`` (default the
    serving model; alias challenger): what training does at its end. Returns the version."""
    import mlflow

    from tasks.registry import use_mlflow
    from tasks.train.tracking import log_and_register

    use_mlflow(settings)
    mlflow.set_experiment("vigil-tests")
    with mlflow.start_run():
        tags = {"snapshot": snapshot, "profile": "tiny"}
        return log_and_register(folder, settings, tags, "test detector", name=name)["version"]


@pytest.fixture(scope="session")
def register():
    """``register(folder, settings, snapshot) -> version``: see :func:`register_detector`."""
    return register_detector
