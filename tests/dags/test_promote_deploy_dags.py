"""promote and deploy: parsed by Airflow and run with dag.test() against a real MLflow server, a real
store and a real serving process on loopback. A failing smoke test rolls the champion back."""

from __future__ import annotations

import json
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.helpers.dags import without_deadline

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def dags_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "dags"))


def parse(airflow_db, name: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / f"{name}.py"))
    assert not bag.import_errors, bag.import_errors
    return without_deadline(bag.get_dag(name))


@pytest.fixture
def env(monkeypatch, tmp_path, mlflow_server, demo_root, publish_demo):
    """Settings for the DAG modules (read at parse time) and this test, on a fresh model name and store."""
    from tasks.settings import Settings
    from tasks.stack import free_port
    from tasks.storage import ObjectStore

    values = {
        "VIGIL_HOME": str(tmp_path / "home"),
        "VIGIL_STORE_URL": (tmp_path / "store").as_uri(),
        "MLFLOW_TRACKING_URI": mlflow_server,
        "VIGIL_MODEL_NAME": f"detector-{uuid.uuid4().hex[:8]}",
        "VIGIL_SERVING_URL": f"http://127.0.0.1:{free_port()}",
        "VIGIL_ADMIN_TOKEN": uuid.uuid4().hex,
        "VIGIL_DEPLOY__SMOKE_MIN_ACCURACY": "0.6",
        "VIGIL_PROMOTION__POLICY_FILE": "gate.yaml",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    publish_demo(ObjectStore(values["VIGIL_STORE_URL"]), demo_root / "demo_a")
    return Settings()


def start_serving(settings):
    """The serving app as the embedded stack runs it (it loads the champion alias at start)."""
    from tasks.stack import port_of, start

    port = port_of(settings.serving_url)
    return start(
        "serving",
        [sys.executable, "-m", "tasks.serve", "--host", "127.0.0.1", "--port", str(port)],
        port=port,
        health_path="/healthz",
        log=Path(settings.home) / "serving.log",
    )


@pytest.fixture
def live_serving(env):
    from tasks.stack import stop

    service = start_serving(env)
    yield service
    stop(service)


def served_version(settings) -> str | None:
    from tasks.deploy.smoke import wait_ready

    return str(wait_ready(settings.serving_url, 120).get("model", {}).get("version"))


def asset_events(dag_id: str, run_id: str) -> list[dict]:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        return [
            e.extra
            for e in session.query(AssetEvent).filter(
                AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run_id
            )
        ]


def test_promote_dag_promotes_a_passing_challenger_and_announces_the_champion(
    airflow_db, env, trained_dir, register, tmp_path, monkeypatch
):
    lenient = tmp_path / "include"
    lenient.mkdir()
    for item in Path(env.include_dir).iterdir():
        (lenient / item.name).symlink_to(item)
    (lenient / "gate.demo-test.yaml").write_text(
        "floors: {roc_auc: 0.7, balanced_accuracy: 0.6, max_ece: 0.5}\n"
    )
    monkeypatch.setenv("VIGIL_INCLUDE_DIR", str(lenient))
    monkeypatch.setenv("VIGIL_PROMOTION__POLICY_FILE", "gate.demo-test.yaml")
    version = register(trained_dir, env, "v0001")

    run = parse(airflow_db, "promote").test(run_conf={"version": version})
    assert run.state == "success"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["promote_champion"] == "success" and states["reject"] == "skipped"
    assert asset_events("promote", run.run_id) == [
        {"model_name": env.model_name, "version": version, "previous": None}
    ]
    from tasks.registry import Registry

    assert Registry(env).aliases()["champion"] == version


def test_a_rejection_fails_the_promote_run_and_an_override_from_the_form_promotes_with_its_reason(
    airflow_db, env, trained_dir, untrained_dir, register
):
    """A rejected challenger shows as a failed run (not a plain green one) that says why and how to
    override; the form's override (version, switch, reason) then promotes it and records the reason."""
    from tasks.registry import CHAMPION, Registry

    registry = Registry(env)
    champion = register(trained_dir, env, "v0001")
    registry.promote(champion, "round 1")
    challenger = register(untrained_dir, env, "v0001")  # random weights: below gate.yaml's floors

    run = parse(airflow_db, "promote").test(run_conf={"version": challenger})
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["reject"] == "failed" and states["promote_champion"] == "skipped"
    assert states["evaluate"] == "success"
    assert registry.get(challenger).tags["rejected"] == "true" and registry.aliases()[CHAMPION] == champion
    assert asset_events("promote", run.run_id) == []

    # An override without a reason fails at once, before hours of evaluation, and moves nothing.
    run = parse(airflow_db, "promote").test(run_conf={"version": challenger, "override": True})
    states = {ti.task_id: (ti.state, ti.try_number) for ti in run.get_task_instances()}
    assert run.state == "failed" and states["resolve_version"] == ("failed", 1)
    assert states["evaluate"][0] == "upstream_failed"

    conf = {"version": challenger, "override": True, "override_reason": "QA checked the failures by hand"}
    run = parse(airflow_db, "promote").test(run_conf=conf)
    assert run.state == "success"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["promote_champion"] == "success" and states["reject"] == "skipped"
    assert registry.aliases()[CHAMPION] == challenger
    tags = registry.get(challenger).tags
    assert tags["gate_decision"] == "overridden"
    assert tags["gate_override_reason"] == "QA checked the failures by hand"
    assert asset_events("promote", run.run_id) == [
        {"model_name": env.model_name, "version": challenger, "previous": champion}
    ]


def test_deploy_rolls_out_and_a_failing_smoke_test_rolls_back(
    airflow_db, env, trained_dir, untrained_dir, register, live_serving, monkeypatch
):
    from tasks.registry import CHAMPION, PREVIOUS, Registry

    registry = Registry(env)
    first = register(trained_dir, env, "v0001")
    registry.promote(first, "round 1")
    run = parse(airflow_db, "deploy").test(run_conf={"version": first, "tune": False})
    assert run.state == "success"
    assert served_version(env) == first

    # A second champion whose deployment fails its latency bound: the run fails and everything goes back.
    second = register(trained_dir, env, "v0001")
    registry.promote(second, "round 2")
    monkeypatch.setenv("VIGIL_DEPLOY__SMOKE_MAX_P95_MS", "0.001")
    run = parse(airflow_db, "deploy").test(run_conf={"version": second, "tune": False})
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["smoke_test_sandbox"] == "failed" and states["roll_out"] == "upstream_failed"
    assert states["rollback"] == "failed"  # it rolled back and failed the run on purpose
    assert registry.aliases()[CHAMPION] == first and PREVIOUS not in registry.aliases()
    tags = registry.get(second).tags
    assert tags["rolled_back"] == "true" and "p95 latency" in tags["rollback_reason"]
    assert served_version(env) == first
    body = json.loads(urllib.request.urlopen(f"{env.serving_url}/readyz", timeout=10).read())
    assert str(body["model"]["version"]) == first


def test_a_vlm_challenger_is_gated_in_its_own_registry_and_deployed_as_the_cascades_second_stage(
    airflow_db, env, trained_dir, probe_dir, register, monkeypatch
):
    """Each family has its own champion: the VLM's promotion leaves the serving model's aliases alone,
    and its deployment reloads the live server's second stage, after a sandbox test of the VLM alone."""
    from tasks.registry import CHAMPION, Registry
    from tasks.settings import Settings
    from tasks.stack import stop

    vlm = f"vlm-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("VIGIL_VLM_MODEL_NAME", vlm)
    monkeypatch.setenv("VIGIL_SERVING__CASCADE", "true")
    settings = Settings()
    probe = register(probe_dir, settings, "v0001")
    Registry(settings).promote(probe, "the serving model")
    first = register(trained_dir, settings, "v0001", name=vlm)
    Registry(settings, name=vlm).promote(first, "the first VLM")
    service = start_serving(settings)
    try:
        stages = wait_stages(settings, 2)
        assert [str(s["version"]) for s in stages] == [probe, first]

        lenient = Path(settings.home) / "include"
        lenient.mkdir(parents=True)
        for item in Path(settings.include_dir).iterdir():
            (lenient / item.name).symlink_to(item)
        (lenient / "gate.lenient.yaml").write_text(
            "floors: {roc_auc: 0.5, balanced_accuracy: 0.5, max_ece: 1.0}\n"
            "slices: {max_regression: 1.0}\nnew_data: {min_improvement: -1.0}\nrobustness: {max_drop: 1.0}\n"
        )
        monkeypatch.setenv("VIGIL_INCLUDE_DIR", str(lenient))
        monkeypatch.setenv("VIGIL_PROMOTION__POLICY_FILE", "gate.lenient.yaml")
        second = register(trained_dir, settings, "v0001", name=vlm)
        run = parse(airflow_db, "promote").test(run_conf={"model": vlm, "version": second})
        assert run.state == "success"
        assert asset_events("promote", run.run_id) == [
            {"model_name": vlm, "version": second, "previous": first}
        ]
        assert Registry(settings, name=vlm).aliases()[CHAMPION] == second
        assert Registry(settings).aliases()[CHAMPION] == probe  # the serving model's champion is untouched

        run = parse(airflow_db, "deploy").test(run_conf={"model": vlm, "version": second, "tune": False})
        assert run.state == "success"
        states = {ti.task_id: ti.state for ti in run.get_task_instances()}
        assert states["post_deploy_check"] == "success" and states["rollback"] == "skipped"
        assert [str(s["version"]) for s in wait_stages(settings, 2)] == [probe, second]
    finally:
        stop(service)

    # With the cascade off, serving does not use a VLM champion: the deploy run says so and skips.
    monkeypatch.setenv("VIGIL_SERVING__CASCADE", "false")
    run = parse(airflow_db, "deploy").test(run_conf={"model": vlm, "tune": False})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["resolve_version"] == "skipped" and states["roll_out"] == "skipped"


def wait_stages(settings, count: int) -> list[dict]:
    """The live server's cascade stages, once it has loaded ``count`` of them."""
    import time

    from tasks.deploy.smoke import wait_ready

    deadline = time.monotonic() + 120
    while True:
        model = wait_ready(settings.serving_url, 120).get("model", {})
        stages = (model.get("cascade") or {}).get("stages") or [model]
        if len(stages) >= count or time.monotonic() > deadline:
            return stages
        time.sleep(1)


def test_with_containers_the_gate_evaluates_in_the_trainer_image_on_the_gpu(airflow_db, monkeypatch):
    from airflow.providers.docker.operators.docker import DockerOperator

    monkeypatch.setenv("VIGIL_TRAINING__LAUNCHER", "docker")
    dag = parse(airflow_db, "promote")
    task = dag.get_task("evaluate")
    assert isinstance(task, DockerOperator) and task.pool == "gpu" and task.image == "vigil-trainer:latest"
    assert task.command[:4] == ["python", "-m", "tasks.promote", "--model"]
    assert task.command[4] == "{{ ti.xcom_pull(task_ids='resolve_version', key='model_name') }}"
    assert task.command[5:7] == ["--version", "{{ ti.xcom_pull(task_ids='resolve_version') }}"]
    assert task.device_requests[0]["Capabilities"] == [["gpu"]]
    assert {t.task_id for t in task.downstream_list} == {"read_report"}


def test_the_gate_entry_point_prints_its_summary_as_the_last_line(env, trained_dir, register):
    """What the container runs, run here: evaluation only, aliases untouched, JSON summary last."""
    import os
    import subprocess

    from tasks.promote.gate import read_summary
    from tasks.registry import Registry

    version = register(trained_dir, env, "v0001")
    proc = subprocess.run(
        [sys.executable, "-m", "tasks.promote", "--version", version],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = read_summary(proc.stdout)
    assert summary["challenger"]["version"] == version and summary["decision"] in {"promoted", "rejected"}
    assert "champion" not in Registry(env).aliases()


def test_with_containers_deploy_tunes_in_the_serving_image_and_validates_in_a_sandbox_container(
    airflow_db, monkeypatch
):
    from airflow.providers.docker.operators.docker import DockerOperator

    monkeypatch.setenv("VIGIL_DEPLOY__ROLLOUT", "docker")
    dag = parse(airflow_db, "deploy")
    tune = dag.get_task("tune")
    assert isinstance(tune, DockerOperator) and tune.image == "vigil-serving:latest"
    assert tune.command[:4] == ["python", "-m", "tasks.tune", "--model"]
    assert not tune.device_requests and tune.pool != "gpu"
    assert "VIGIL_HOME" not in tune.environment  # the serving image's own home
    assert dag.get_task("smoke_test_sandbox").trigger_rule == "none_failed"
    assert dag.get_task("rollback").upstream_task_ids >= {
        "tune",
        "smoke_test_sandbox",
        "roll_out",
        "post_deploy_check",
    }
