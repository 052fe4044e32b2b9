"""Inference tuning's pick is what serving runs: a tuned version served by alias runs with its settings."""

from __future__ import annotations

import uuid

from tests.helpers.serve import ADMIN_TOKEN, register


def test_serving_applies_the_settings_tuning_chose(
    serve, trained_dir, mlflow_server, publish_demo, demo_root, tmp_path
):
    from tasks.model.card import InferenceSettings
    from tasks.registry import Registry, Tags
    from tasks.settings import Settings
    from tasks.storage import ObjectStore

    name = f"tuned-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        mlflow_tracking_uri=mlflow_server,
        model_name=name,
        home=tmp_path / "home",
        store_url=(tmp_path / "store").as_uri(),
    )
    publish_demo(ObjectStore.from_settings(settings), demo_root / "demo_a")
    untuned = register(mlflow_server, trained_dir, name)
    version = register(mlflow_server, trained_dir, name, alias="champion")
    # What tuning writes on the version it tuned (tests/tune checks that it does); which candidate wins
    # is this CPU's call, so the pick here is a fixed non-default one.
    tuned = InferenceSettings(threads=1, batch_size=8, quantization="int8-dynamic")
    Registry(settings).tag(version, {Tags.INFERENCE: tuned.model_dump_json()})

    server = serve(None, settings=None, mlflow_uri=mlflow_server, model_name=name)  # loads @champion
    served = server.wait_ready()["model"]
    assert served["version"] == version
    assert (
        served["inference"] == tuned.model_dump()
    )  # the pick is on the version: any server loading it applies it

    # The reload path applies it too; a version never tuned runs with the safe defaults.
    import requests

    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    answer = requests.post(
        f"{server.url}/admin/reload",
        json={"model": f"models:/{name}/{untuned}"},
        headers=headers,
        timeout=120,
    ).json()
    assert (
        answer["model"]["version"] == untuned
        and answer["model"]["inference"] == InferenceSettings().model_dump()
    )
    answer = requests.post(f"{server.url}/admin/reload", headers=headers, timeout=120).json()
    assert answer["model"]["inference"] == tuned.model_dump()
