"""Inference tuning's pick is what serving runs: a tuned version served by alias runs with its settings."""

from __future__ import annotations

import uuid

from serve_helpers import ADMIN_TOKEN, register


def test_serving_applies_the_settings_tuning_chose(serve, trained_dir, mlflow_server, publish_demo, demo_root,
                                                   tmp_path):
    from tasks.model.registry import INFERENCE_TAG, client
    from tasks.settings import Settings
    from tasks.storage import ObjectStore
    from tasks.tune import tune_inference
    from tasks.tune.config import TuningConfig

    name = f"tuned-{uuid.uuid4().hex[:8]}"
    settings = Settings(mlflow_tracking_uri=mlflow_server, model_name=name, home=tmp_path / "home",
                        store_url=(tmp_path / "store").as_uri())
    publish_demo(ObjectStore.from_settings(settings), demo_root / "demo_a")
    untuned = register(mlflow_server, trained_dir, name)
    version = register(mlflow_server, trained_dir, name, alias="champion")
    # Two candidates; a zero gain bar so the faster of baseline and one-thread int8 wins either way.
    config = TuningConfig.model_validate({"min_gain": 0.0, "auc_margin": 0.05, "max_p95_latency_ms": 60000,
                                          "candidates": [{"name": "int8-threads-1", "quantization": "int8-dynamic",
                                                          "threads": 1}]})
    result = tune_inference(f"models:/{name}/{version}", settings, config=config)
    tag = client(settings).get_model_version(name, version).tags[INFERENCE_TAG]
    # One thread beats two contending ones 5-12x on this 2-core machine (docs/tuning.md): a real pick.
    assert result.chosen_name == "int8-threads-1", result.markdown()

    server = serve(None, settings=None, mlflow_uri=mlflow_server, model_name=name)  # loads @champion
    served = server.wait_ready()["model"]
    assert served["version"] == version
    assert served["inference"] == result.chosen.model_dump()
    assert tag  # the pick is on the version, so any server that loads it applies it

    # The reload path applies it too; a version never tuned runs with the safe defaults.
    import requests

    from tasks.model.detector import InferenceSettings

    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    answer = requests.post(f"{server.url}/admin/reload", json={"model": f"models:/{name}/{untuned}"},
                           headers=headers, timeout=120).json()
    assert answer["model"]["version"] == untuned and answer["model"]["inference"] == InferenceSettings().model_dump()
    answer = requests.post(f"{server.url}/admin/reload", headers=headers, timeout=120).json()
    assert answer["model"]["inference"] == result.chosen.model_dump()
