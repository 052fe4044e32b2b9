"""The Airflow image carries Vigil's UI plugin where every Airflow service of compose looks for plugins."""

from __future__ import annotations

from tests.helpers.deploy_files import REPO, DockerIgnore, dockerfile_of, effective_env, parse_dockerfile


def test_every_airflow_service_loads_the_plugin_baked_into_its_image(compose):
    airflow = {
        name: s
        for name, s in compose["services"].items()
        if "build" in s and dockerfile_of(s) == REPO / "docker" / "airflow" / "Dockerfile"
    }
    assert {"airflow-apiserver", "airflow-scheduler"} <= set(airflow)
    dockerfile = REPO / "docker" / "airflow" / "Dockerfile"
    copies = [c.flags_and_args()[1] for c in parse_dockerfile(dockerfile)[-1].all("COPY")]
    assert ["plugins", "/opt/airflow/plugins"] in copies
    assert not DockerIgnore.for_build(REPO, dockerfile).excludes("plugins/vigil_ui.py")
    for name in airflow:
        env = effective_env(compose, name)
        assert env.get("AIRFLOW__CORE__PLUGINS_FOLDER") == "/opt/airflow/plugins", name
        # What the pages read: the store, the registry, the model name's default, the browser-facing MLflow URL.
        assert {"VIGIL_STORE_URL", "MLFLOW_TRACKING_URI", "AIRFLOW_VAR_VIGIL_MLFLOW_UI_URL"} <= set(env), name
