"""Inference tuning against a real MLflow server with the tiny trained detector: what it records, how it
chooses, and that loading a registry version applies the recorded settings."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
import torch

from tasks.model.card import InferenceSettings
from tasks.model.detector import Detector
from tasks.settings import ConfigError, Settings
from tasks.tune.config import Candidate, TuningConfig, load_tuning_config
from tasks.tune.run import CandidateResult, choose, validation_frame

# Small and quick: the baseline, one candidate that must lose AUC (images at a quarter of the trained
# pixels: 28x28 instead of 56x56, which wipes out the upsampling traces), one that keeps it, one unsupported.
TEST_CONFIG = """
auc_margin: 0.01
max_p95_latency_ms: 60000
min_gain: 0.0
time_budget_s: 120
latency_requests: 5
throughput_rounds: 1
candidates:
  - name: threads-1
    threads: 1
  - name: quarter-pixels
    max_pixels_ratio: 0.25
    threads: 1
  - name: fp16
    dtype: float16
"""


def _register(
    detector_dir: Path, dest: Path, snapshot: str, settings: Settings, name: str | None = None
) -> tuple[str, str]:
    """Log a copy of the detector (card snapshot set) as a pyfunc model and register it, as training does."""
    import mlflow

    from tasks.train.tracking import log_and_register

    folder = dest / "detector"
    shutil.copytree(detector_dir, folder)
    card = json.loads((folder / "detector.json").read_text())
    (folder / "detector.json").write_text(json.dumps(card | {"snapshot": snapshot}))
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment("vigil-tuning-tests")
    with mlflow.start_run() as run:
        info = log_and_register(folder, settings, {"snapshot": snapshot}, "tuning test", name=name)
    return run.info.run_id, info["version"]


@pytest.fixture(scope="module")
def registered(tmp_path_factory, mlflow_server, trained_dir, demo_root, publish_demo):
    """Snapshot v0001 (generator A) and two versions: 1 trained on v0001, 2 with an unknown snapshot name."""
    from tasks.storage import ObjectStore

    tmp = tmp_path_factory.mktemp("tune")
    env = {
        "VIGIL_HOME": str(tmp / "home"),
        "VIGIL_STORE_URL": (tmp / "store").as_uri(),
        "MLFLOW_TRACKING_URI": mlflow_server,
        "VIGIL_MODEL_NAME": f"detector-{uuid.uuid4().hex[:8]}",
    }
    settings = Settings(
        home=env["VIGIL_HOME"],
        store_url=env["VIGIL_STORE_URL"],
        mlflow_tracking_uri=mlflow_server,
        model_name=env["VIGIL_MODEL_NAME"],
    )
    publish_demo(ObjectStore.from_settings(settings), demo_root / "demo_a")
    run_1, version_1 = _register(trained_dir, tmp / "v1", "v0001", settings)
    _, version_2 = _register(trained_dir, tmp / "v2", "demo_a", settings)
    assert (version_1, version_2) == ("1", "2")
    config = tmp / "tuning.yaml"
    config.write_text(TEST_CONFIG)
    return {"env": env, "settings": settings, "run_1": run_1, "config": config}


def test_tuning_records_the_choice_and_loading_the_version_applies_it(registered, monkeypatch, capsys):
    from mlflow import MlflowClient

    from tasks.cli import main

    settings, name = registered["settings"], registered["settings"].model_name
    # Loaded (and cached) before tuning: safe defaults.
    assert Detector.load(f"models:/{name}/1", settings=settings).inference == InferenceSettings()
    threads = torch.get_num_threads()

    for key, value in registered["env"].items():
        monkeypatch.setenv(key, value)
    assert (
        main(["tune", "--model", f"models:/{name}/1", "--config", str(registered["config"]), "--json"]) == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert torch.get_num_threads() == threads  # candidates' thread counts do not leak into the caller

    rows = {r["name"]: r for r in summary["table"]}
    assert list(rows) == ["baseline", "threads-1", "quarter-pixels", "fp16"]
    assert summary["snapshot"] == "v0001" and summary["data"] == "the snapshot the model was trained on"
    assert summary["images"] == 16
    baseline, quarter = rows["baseline"], rows["quarter-pixels"]
    assert baseline["settings"] == InferenceSettings().model_dump()
    assert quarter["settings"]["max_pixels"] == 784
    # The downscaled candidate really loses AUC beyond the margin, and is rejected for it, not chosen.
    assert quarter["val_roc_auc"] < baseline["val_roc_auc"] - 0.01
    assert (
        quarter["status"] == "rejected"
        and "val ROC AUC" in quarter["reason"]
        and "margin 0.01" in quarter["reason"]
    )
    assert rows["threads-1"]["val_roc_auc"] == baseline["val_roc_auc"]
    if not torch.ops.mkldnn._is_mkldnn_fp16_supported():
        assert rows["fp16"]["status"] == "skipped" and "float16 on this CPU" in rows["fp16"]["reason"]
    assert baseline["max_score_change"] == 0 and baseline["verdict_changes"] == 0
    assert quarter["max_score_change"] > 0 and isinstance(quarter["verdict_changes"], int)
    for row in (baseline, rows["threads-1"]):
        assert (
            row["throughput_ips"] > 0
            and 0 < row["p50_ms"] <= row["p95_ms"]
            and row["peak_memory_mb"] is not None
        )
    chosen = summary["chosen_candidate"]
    assert (
        chosen != "quarter-pixels" and rows[chosen]["status"] == "chosen"
    )  # which is faster is this CPU's call
    assert summary["chosen"] == rows[chosen]["settings"]
    assert summary["throughput_ratio_vs_baseline"] == pytest.approx(
        rows[chosen]["throughput_ips"] / baseline["throughput_ips"]
    )
    assert all(r["reason"] for r in summary["table"])  # every candidate says why it won or lost

    # MLflow: a child run of the version's training run with the artifacts, table and metrics; tags on the version.
    client = MlflowClient(settings.mlflow_tracking_uri)
    run = client.get_run(summary["run_id"])
    assert run.data.tags["mlflow.parentRunId"] == registered["run_1"] and run.info.status == "FINISHED"
    assert {f.path for f in client.list_artifacts(run.info.run_id, "inference")} == {
        "inference/inference.json",
        "inference/tuning.json",
        "inference/tuning.md",
        "inference/tuning_table.json",
    }
    logged = client.download_artifacts(
        run.info.run_id, "inference/inference.json", str(registered["config"].parent)
    )
    assert InferenceSettings.from_file(logged).model_dump() == summary["chosen"]
    report = client.download_artifacts(
        run.info.run_id, "inference/tuning.json", str(registered["config"].parent)
    )
    assert json.loads(Path(report).read_text())["table"] == summary["table"]  # strictly JSON (also for XCom)
    assert run.data.metrics["baseline.throughput_ips"] == pytest.approx(baseline["throughput_ips"])
    assert "quarter-pixels.val_roc_auc" in run.data.metrics
    # A skipped candidate (fp16 where this CPU has no float16 kernels) logs no metrics; a measured one does.
    assert ("fp16.throughput_ips" in run.data.metrics) == (rows["fp16"]["throughput_ips"] is not None)
    tags = client.get_model_version(name, "1").tags
    assert json.loads(tags["inference"]) == summary["chosen"] and tags["inference_run_id"] == run.info.run_id

    # Loading the version applies the tuned settings, although its download was cached before tuning.
    for uri in (f"models:/{name}/1", f"models:/{name}@challenger"):
        version = "1" if uri.endswith("/1") else "2"
        loaded = Detector.load(uri, settings=settings)
        expected = (
            InferenceSettings.model_validate(summary["chosen"]) if version == "1" else InferenceSettings()
        )
        assert (loaded.version, loaded.inference) == (version, expected)
    torch.set_num_threads(threads)


def test_loading_applies_the_version_tag_over_defaults_and_names_a_bad_tag(registered):
    from mlflow import MlflowClient

    settings, name = registered["settings"], registered["settings"].model_name
    client = MlflowClient(settings.mlflow_tracking_uri)
    untuned = Detector.load(f"models:/{name}/2", settings=settings)
    assert untuned.inference == InferenceSettings() and untuned.preprocessor.pixel_bounds == (3136, 3136)

    client.set_model_version_tag(
        name, "2", "inference", InferenceSettings(batch_size=7, max_pixels=784).model_dump_json()
    )
    try:
        tuned = Detector.load(f"models:/{name}/2", settings=settings)
        assert tuned.inference.batch_size == 7 and tuned.preprocessor.pixel_bounds == (784, 784)
        # An explicit setting still wins over the tag.
        assert (
            Detector.load(f"models:/{name}/2", {"batch_size": 3}, settings=settings).inference.batch_size == 3
        )
        client.set_model_version_tag(name, "2", "inference", '{"batch_size": 0}')
        with pytest.raises(
            ValueError, match=f"'inference' tag of {name} version 2 is not valid InferenceSettings"
        ):
            Detector.load(f"models:/{name}/2", settings=settings)
    finally:
        client.delete_model_version_tag(name, "2", "inference")


def test_validation_data_is_the_training_snapshot_else_the_latest(registered, trained_dir):
    from tasks.model.card import read_card

    settings = registered["settings"]
    card = read_card(trained_dir)
    frame, version, note = validation_frame(card.model_copy(update={"snapshot": "v0001"}), settings, None)
    assert (version, note, len(frame), set(frame.table["split"])) == (
        "v0001",
        "the snapshot the model was trained on",
        16,
        {"val"},
    )
    _, version, note = validation_frame(card, settings, None)  # card.snapshot == "demo_a": not a snapshot
    assert version == "v0001" and note.startswith("latest snapshot") and "'demo_a'" in note
    with pytest.raises(LookupError, match="snapshot 'v0009' not found"):
        validation_frame(card, settings, "v0009")
    from tasks.tune import tune_inference

    with pytest.raises(ValueError, match="needs a registered model version"):
        tune_inference(str(trained_dir), settings, config=TuningConfig())


def _row(
    name: str, throughput: float, auc: float, p95: float = 10.0, memory: float = 50.0
) -> CandidateResult:
    return CandidateResult(
        name,
        {},
        throughput_ips=throughput,
        p50_ms=p95 / 2,
        p95_ms=p95,
        peak_memory_mb=memory,
        val_roc_auc=auc,
    )


def test_choice_follows_the_stated_objective():
    config = TuningConfig(auc_margin=0.01, max_p95_latency_ms=100, max_memory_mb=200, min_gain=0.05)
    rows = [
        _row("baseline", 100, 0.99),
        _row("fast-but-wrong", 400, 0.97),
        _row("slow-request", 300, 0.99, p95=150),
        _row("memory-hungry", 280, 0.99, memory=500),
        _row("ok", 150, 0.981),
        _row("ok-faster", 160, 0.985),
        CandidateResult("skipped", {}, status="skipped", reason="budget"),
    ]
    assert choose(rows, config) == "ok-faster"
    status = {r.name: (r.status, r.reason) for r in rows}
    assert status["fast-but-wrong"] == ("rejected", "val ROC AUC 0.9700 < baseline 0.9900 - margin 0.01")
    assert status["slow-request"] == ("rejected", "p95 latency 150.0 ms > bound 100 ms")
    assert status["memory-hungry"] == ("rejected", "peak added memory 500 MB > bound 200 MB")
    assert status["ok"] == ("lost", "throughput 150.0 img/s < ok-faster's 160.0")
    assert status["baseline"] == ("lost", "ok-faster is 1.60x faster")
    assert status["ok-faster"][0] == "chosen" and "1.60x the baseline" in status["ok-faster"][1]
    assert status["skipped"] == ("skipped", "budget")

    # Not faster by min_gain: the safe defaults stay, even when the baseline itself misses the latency bound.
    rows = [_row("baseline", 100, 0.99, p95=120), _row("slightly-faster", 104, 0.99)]
    assert choose(rows, config) == "baseline"
    assert rows[1].status == "lost" and "not 5% above the baseline's 100.0" in rows[1].reason
    assert "safe defaults kept" in rows[0].reason and "p95 latency 120.0 ms > bound 100 ms" in rows[0].reason


def test_the_repository_config_is_valid_and_bad_configs_name_the_field(tmp_path):
    config = load_tuning_config(None, Settings())
    assert config.candidates and not any(c.compile for c in config.candidates)  # compile only when configured
    assert Candidate(name="half", max_pixels_ratio=0.5).settings(3136).max_pixels == 1568

    def error(text: str) -> str:
        path = tmp_path / "tuning.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_tuning_config(path)
        return str(info.value)

    message = error("candidates:\n  - name: tiny-batch\n    batch_size: 0\n")
    assert (
        "tuning.yaml" in message
        and "candidates[0] (name='tiny-batch').batch_size" in message
        and "got: 0" in message
    )
    assert "candidates[0] (name='x').dtyp" in error("candidates:\n  - name: x\n    dtyp: bfloat16\n")
    assert "auc_margin" in error("auc_margin: 2\n")
    assert "reserved" in error("candidates:\n  - name: baseline\n")
    assert "repeated: ['a']" in error("candidates:\n  - name: a\n  - name: a\n    threads: 1\n")
    assert "max_pixels_ratio" in error("candidates:\n  - name: a\n    max_pixels_ratio: 1.5\n")


def test_cascade_tuning_records_a_band_within_the_objective_and_serving_applies_it(
    registered, probe_dir, trained_dir, tmp_path
):
    """Both champions score the same validation images; the band sends at most the allowed share to the
    VLM, lands on the VLM version's tag, and serving reads it back (a never-tuned VLM: the setting)."""
    from tasks.registry import Registry, Tags
    from tasks.serve.service import tuned_band
    from tasks.tune.run import tune_cascade

    settings = registered["settings"].model_copy(
        update={
            "model_name": f"probe-{uuid.uuid4().hex[:8]}",
            "vlm_model_name": f"vlm-{uuid.uuid4().hex[:8]}",
        }
    )
    probe_version = _register(probe_dir, tmp_path / "probe", "v0001", settings)[1]
    Registry(settings).promote(probe_version, "cascade test")
    vlm_version = _register(trained_dir, tmp_path / "vlm", "v0001", settings, name=settings.vlm_model_name)[1]
    vlm = Registry(settings, name=settings.vlm_model_name)
    vlm.promote(vlm_version, "cascade test")
    second = Detector.load(f"models:/{settings.vlm_model_name}@champion", settings=settings)
    assert tuned_band(settings, second) is None  # never tuned: serving.cascade_band applies

    config = TuningConfig.model_validate({"cascade": {"max_vlm_share": 0.25, "max_auc_loss": 0.0}})
    choice = tune_cascade(settings, config=config)

    assert choice["snapshot"] == "v0001" and choice["images"] == 16  # the test demo_a set's val split
    assert 0 <= choice["share"] <= 0.25
    assert choice["auc"] >= choice["first_auc"] - 1e-9  # never worse than the probe alone
    recorded = json.loads(vlm.get(vlm_version).tags[Tags.CASCADE_BAND])
    assert recorded == choice["band"]
    assert tuned_band(settings, second) == (tuple(recorded) if recorded else ())
