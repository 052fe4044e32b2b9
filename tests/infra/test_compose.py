"""docker-compose.yaml: valid for Compose, complete, and giving Vigil's code the settings it reads.

No Docker engine runs here, so the file is checked the way Compose reads it: the compose-spec JSON
schema, Compose's interpolation with the .env that docker/make_env.py generates, and every file,
image, volume and network it refers to. Then each service that runs Vigil's code gets a real
``Settings`` built from exactly the environment the container would have.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import os
import re
import subprocess
from urllib.parse import urlparse

import pytest
from jsonschema import Draft202012Validator

from tasks.settings import Settings
from tests.helpers.deploy_files import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    REPO,
    MissingVariable,
    dockerfile_of,
    effective_env,
    load_compose,
    load_compose_raw,
    parse_dockerfile,
    read_env_file,
    service_environment,
    trainer_pending,
    variable_refs,
)

AIRFLOW = (
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)
VIGIL_CODE = (*AIRFLOW, "serving")  # services whose processes import Vigil's `tasks` package

# Environment names Vigil's code (or a library it drives) reads, and the services that run that code.
# The VIGIL_* and MLflow names are also checked by building Settings below; this table adds the
# names read outside Settings (boto3, the X collector, the MLflow server).
CODE_ENV: dict[str, tuple[str, ...]] = {
    "VIGIL_INCLUDE_DIR": VIGIL_CODE,
    "VIGIL_STORE_URL": VIGIL_CODE,
    "VIGIL_INBOX": VIGIL_CODE,
    "VIGIL_S3_ENDPOINT_URL": VIGIL_CODE,
    "MLFLOW_TRACKING_URI": VIGIL_CODE,
    "VIGIL_SERVING_URL": AIRFLOW,
    "VIGIL_TRAINING__LAUNCHER": AIRFLOW,
    "VIGIL_TRAINING__TRAINER_IMAGE": AIRFLOW,
    "VIGIL_TRAINING__DOCKER_NETWORK": AIRFLOW,
    "VIGIL_ADMIN_TOKEN": ("airflow-worker", "serving"),
    "X_BEARER_TOKEN": ("airflow-worker",),
    "MASTODON_ACCESS_TOKEN": ("airflow-worker",),
    "AWS_ACCESS_KEY_ID": (*VIGIL_CODE, "mlflow"),
    "AWS_SECRET_ACCESS_KEY": (*VIGIL_CODE, "mlflow"),
    "MLFLOW_S3_ENDPOINT_URL": ("mlflow",),
    "VIGIL_SERVING__HOST": ("serving",),
    # boto3 everywhere; the worker also hands its region to the trainer container (tasks/train/launch.py).
    "AWS_DEFAULT_REGION": (*VIGIL_CODE, "mlflow"),
    # Curation runs Great Expectations in the workers: no usage statistics leave the machine.
    "GX_ANALYTICS_ENABLED": AIRFLOW,
    # The deploy DAG (worker) recreates the serving container through the Docker socket.
    "VIGIL_DEPLOY__ROLLOUT": AIRFLOW,
    # The trainer image (a job the worker starts, built by compose): GPU/CPU/memory metrics on its runs.
    "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": ("trainer",),
    "VIGIL_TRAINING__GIT_COMMIT": ("trainer",),
}
# Names read in tasks/ that no compose service needs, and why.
_TORCHRUN = (
    "set by torchrun for each process inside the trainer container (tasks/train/launch.py re-executes "
    "the entry point under torch.distributed.run when several GPUs are visible)"
)
_RUN_CONTEXT = (
    "the Airflow run a task belongs to: Airflow exports it to local tasks, and "
    "dags/vigil_common.py:container_job templates it into each container's environment"
)
NOT_FOR_COMPOSE = {
    "AIRFLOW_HOME": "tasks/stack/airflow_service.py runs the embedded Airflow in the home tasks/stack/embedded.py sets",
    "PYTHONPATH": "tasks/stack/embedded.py extends it for the embedded stack's Airflow processes",
    "PATH": "tasks/stack/embedded.py puts this venv's bin first for the embedded stack's Airflow processes",
    "RANK": _TORCHRUN,
    "LOCAL_RANK": _TORCHRUN,
    "WORLD_SIZE": _TORCHRUN,
    "AIRFLOW_CTX_DAG_ID": _RUN_CONTEXT,
    "AIRFLOW_CTX_DAG_RUN_ID": _RUN_CONTEXT,
    "AIRFLOW__API__BASE_URL": "Airflow's own setting, read where a task runs inside Airflow; a container "
    "gets VIGIL_AIRFLOW_URL from dags/vigil_common.py:container_job instead",
}
# Secrets stay with the services that use them.
SECRET_SCOPE = {
    "VIGIL_ADMIN_TOKEN": {"airflow-worker", "serving"},
    "X_BEARER_TOKEN": {"airflow-worker"},
    "MASTODON_ACCESS_TOKEN": {"airflow-worker"},
    "MINIO_ROOT_PASSWORD": {"minio", "minio-init"},
}
# Read by compose, not by the containers: image tags, ports, bucket names... (all in .env.example)
ENV_READ_IN_CODE = re.compile(
    r"""(?:environ(?:\.get)?|getenv)\s*[(\[]\s*["'](?P<read>[A-Z][A-Z0-9_]*)["']"""  # os.environ["X"], getenv("X")
    r"""|["'](?P<test>[A-Z][A-Z0-9_]*)["']\s+(?:not\s+)?in\s+os\.environ\b"""  # "X" in os.environ
    r"""|\bCredential\([^)]*\benv=["'](?P<credential>[A-Z][A-Z0-9_]*)["']"""  # a collector's secret (collect/base.py)
)


def compose_spec_schema() -> dict:
    """The compose-spec JSON schema as vendored (with its license) by the pinned check-jsonschema."""
    resource = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(resource.read_text())


def schema_errors(document: dict) -> list[str]:
    validator = Draft202012Validator(compose_spec_schema())
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in validator.iter_errors(document)
    ]


# -- the file is valid Compose --------------------------------------------------------------------


def test_compose_file_matches_the_compose_spec_schema():
    assert schema_errors(load_compose_raw()) == []


def test_the_schema_check_rejects_a_misspelled_key():
    # The negative control: the schema is live, so the check above can fail.
    broken = copy.deepcopy(load_compose_raw())
    broken["services"]["serving"]["restrat"] = broken["services"]["serving"].pop("restart")
    assert any("restrat" in error for error in schema_errors(broken))


def test_interpolated_compose_file_still_matches_the_schema(compose):
    assert schema_errors(compose) == []


# -- .env.example documents every variable, and missing secrets stop compose ----------------------


def test_every_variable_without_a_default_is_in_env_example():
    documented = read_env_file(ENV_EXAMPLE)
    refs = variable_refs(COMPOSE_FILE.read_text())
    undocumented = sorted({r.name for r in refs if r.required and r.name not in documented})
    assert undocumented == []


def test_every_env_example_entry_is_used_by_the_compose_file():
    used = {r.name for r in variable_refs(COMPOSE_FILE.read_text())}
    assert sorted(set(read_env_file(ENV_EXAMPLE)) - used) == []


def test_env_example_holds_no_secret_and_compose_refuses_to_start_without_one():
    example = read_env_file(ENV_EXAMPLE)
    secrets = [k for k in example if re.search(r"PASSWORD|SECRET|TOKEN|FERNET", k)]
    assert secrets and all(example[k] == "" for k in secrets), {k: example[k] for k in secrets}
    with pytest.raises(MissingVariable, match="make_env.py"):
        load_compose(example)


def test_env_file_is_ignored_by_git():
    result = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO)
    assert result.returncode == 0, ".env must be listed in .gitignore"


# -- everything the file refers to exists ---------------------------------------------------------


def test_build_contexts_and_dockerfiles_exist(compose):
    for name, service in compose["services"].items():
        if "build" not in service:
            continue
        context = REPO / service["build"]["context"]
        assert context.is_dir(), f"{name}: build context {context} missing"
        dockerfile = dockerfile_of(service)
        if name == "trainer" and not dockerfile.exists() and trainer_pending():
            continue  # docker/trainer/ arrives with tasks/train.py (the model helper's part)
        assert dockerfile.is_file(), f"{name}: {dockerfile.relative_to(REPO)} missing"


def test_every_docker_image_folder_is_built_by_compose(compose):
    built = {dockerfile_of(s).resolve() for s in compose["services"].values() if "build" in s}
    folders = {p.resolve() for p in (REPO / "docker").glob("*/Dockerfile")}
    assert folders - built == set(), "a Dockerfile that compose never builds"


def test_third_party_images_are_pinned(compose):
    for name, service in compose["services"].items():
        if "build" in service:
            continue
        image = service["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        assert tag and tag != "latest", f"{name}: image {image!r} is not pinned to a version"


def test_bind_mounts_volumes_and_dependencies_exist(compose):
    declared_volumes = set(compose.get("volumes") or {})
    services = set(compose["services"])
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if source.startswith(("./", "../")):
                assert (REPO / source).exists(), f"{name}: bind mount source {source} missing"
            elif not source.startswith("/"):
                assert source in declared_volumes, f"{name}: volume {source!r} not declared"
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency!r}"
        for network in service.get("networks", []):
            assert network in (compose.get("networks") or {}), f"{name}: network {network!r} not declared"


def test_postgres_init_script_is_executable(compose):
    mounts = [m for m in compose["services"]["postgres"]["volumes"] if m.startswith("./")]
    assert mounts
    for mount in mounts:
        script = REPO / mount.split(":")[0]
        assert script.stat().st_mode & 0o111, f"{script} must be executable for the postgres entrypoint"


# -- the code gets the environment it reads --------------------------------------------------------


def test_services_set_the_environment_the_code_reads(compose):
    missing = [
        f"{service}: {name}"
        for name, services in CODE_ENV.items()
        for service in services
        if name not in effective_env(compose, service)
    ]
    assert missing == []


def test_every_environment_name_read_in_tasks_is_accounted_for():
    """A new os.environ read in tasks/ must be given to the services running it (CODE_ENV) or be explained."""
    unknown = {}
    for path in sorted((REPO / "tasks").rglob("*.py")):
        for match in ENV_READ_IN_CODE.finditer(path.read_text()):
            name = match["read"] or match["test"] or match["credential"]
            if name not in CODE_ENV and name not in NOT_FOR_COMPOSE:
                unknown.setdefault(name, []).append(str(path.relative_to(REPO)))
    assert unknown == {}, (
        "environment read in tasks/ but neither set in docker-compose.yaml (CODE_ENV) nor "
        "listed in NOT_FOR_COMPOSE with a reason"
    )


def test_every_vigil_variable_set_in_compose_is_a_settings_field(compose):
    # Settings ignores unknown VIGIL_* names, so a typo here would silently fall back to a default.
    services = [s for s in compose["services"] if not (s == "trainer" and trainer_pending())]
    for name in {n for s in services for n in effective_env(compose, s) if n.startswith("VIGIL_")}:
        path = name.removeprefix("VIGIL_").lower().split("__")
        model = Settings
        for part in path[:-1]:
            assert part in model.model_fields, f"{name}: Settings has no section {part!r}"
            model = model.model_fields[part].annotation
        assert path[-1] in model.model_fields, f"{name}: no field {path[-1]!r} in {model.__name__}"


def test_secrets_reach_only_the_services_that_use_them(compose):
    for secret, allowed in SECRET_SCOPE.items():
        holders = {
            name for name in compose["services"] if secret in service_environment(compose["services"][name])
        }
        assert holders == allowed, secret


def settings_of(compose: dict, name: str, monkeypatch) -> Settings:
    """The Settings a service's process builds: only its own environment, its image's include folder."""
    env = effective_env(compose, name)
    for key in list(os.environ):
        if key.startswith(("VIGIL_", "MLFLOW_")):
            monkeypatch.delenv(key)
    image = parse_dockerfile(dockerfile_of(compose["services"][name])).pop()
    include_copies = [c for c in image.all("COPY") if c.flags_and_args()[1][-1] == env["VIGIL_INCLUDE_DIR"]]
    assert [c.flags_and_args()[1][:-1] for c in include_copies] == [["include"]], (
        f"{name}: VIGIL_INCLUDE_DIR is not where its image copies include/"
    )
    env["VIGIL_INCLUDE_DIR"] = str(REPO / "include")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def host_port(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname, parsed.port


def test_airflow_and_serving_share_one_store_and_registry(compose, generated_env, monkeypatch):
    seen = set()
    for name in VIGIL_CODE:
        with monkeypatch.context() as patch:
            s = settings_of(compose, name, patch)
        seen.add((s.store_url, s.inbox, s.s3_endpoint_url, s.mlflow_tracking_uri))
    assert seen == {
        (
            f"s3://{generated_env['VIGIL_BUCKET']}/store",
            f"s3://{generated_env['VIGIL_BUCKET']}/inbox",
            "http://minio:9000",
            "http://mlflow:5000",
        )
    }


def test_the_urls_in_settings_point_at_services_listening_there(compose, monkeypatch):
    services = compose["services"]
    s = settings_of(compose, "airflow-worker", monkeypatch)
    assert host_port(s.s3_endpoint_url) == ("minio", 9000)
    assert any(p.endswith(":9000") for p in services["minio"]["ports"])
    assert host_port(s.mlflow_tracking_uri) == ("mlflow", 5000)
    assert "--port=5000" in services["mlflow"]["command"]
    serving_env = effective_env(compose, "serving")
    assert host_port(s.serving_url) == ("serving", int(serving_env["VIGIL_SERVING__PORT"]))
    assert serving_env["VIGIL_SERVING__HOST"] == "0.0.0.0"


def test_the_worker_launches_the_trainer_image_on_the_compose_network(compose, monkeypatch):
    s = settings_of(compose, "airflow-worker", monkeypatch)
    assert s.training.launcher == "docker"
    assert s.training.trainer_image == compose["services"]["trainer"]["image"]
    assert s.training.docker_network == compose["networks"]["default"]["name"]
    assert s.admin_token is not None and s.admin_token.get_secret_value()


def test_the_worker_alone_gets_the_docker_socket(compose):
    holders = {
        name
        for name, s in compose["services"].items()
        if any("/var/run/docker.sock" in m for m in s.get("volumes", []))
    }
    assert holders == {"airflow-worker"}
    assert compose["services"]["airflow-worker"]["group_add"] == ["998"]


def test_serving_loads_the_champion_and_shares_the_admin_token(compose, monkeypatch):
    with monkeypatch.context() as patch:
        serving = settings_of(compose, "serving", patch)
    worker = settings_of(compose, "airflow-worker", monkeypatch)
    assert serving.serving.model_alias == "champion"
    assert serving.admin_token.get_secret_value() == worker.admin_token.get_secret_value()
    assert compose["services"]["serving"]["restart"] == "unless-stopped"
    assert compose["services"]["serving"]["depends_on"]["mlflow"]["condition"] == "service_healthy"


def test_mlflow_server_settings(compose):
    mlflow = compose["services"]["mlflow"]
    args = dict(a.removeprefix("--").split("=", 1) for a in mlflow["command"] if a.startswith("--"))
    assert args["artifacts-destination"].startswith("s3://")
    allowed = args["allowed-hosts"].split(",")
    assert "mlflow" in allowed and "mlflow:5000" in allowed
    env = service_environment(mlflow)
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql") and env[
        "MLFLOW_BACKEND_STORE_URI"
    ].endswith("/mlflow")
    # The S3 endpoint is the server's alone: clients use proxied artifacts.
    holders = {
        n for n, s in compose["services"].items() if "MLFLOW_S3_ENDPOINT_URL" in service_environment(s)
    }
    assert holders == {"mlflow"}


def test_published_ports_bind_to_localhost_by_default(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_trainer_is_a_build_target_not_a_service(compose):
    trainer = compose["services"]["trainer"]
    assert trainer["profiles"] == ["build"]
    assert "restart" not in trainer and "ports" not in trainer


def test_init_service_imports_the_pools_file(compose):
    init = compose["services"]["airflow-init"]
    script = init["command"][-1]
    assert "airflow db migrate" in script and "airflow users create" in script
    match = re.search(r'airflow pools import "\$\{VIGIL_INCLUDE_DIR\}/(\S+)"', script)
    assert match, script
    assert (REPO / "include" / match.group(1)).is_file()
    for name in AIRFLOW[1:]:
        assert (
            compose["services"][name]["depends_on"]["airflow-init"]["condition"]
            == "service_completed_successfully"
        ), name


def test_the_worker_rolls_out_serving_through_the_docker_socket(compose, monkeypatch):
    """The deploy DAG (worker) recreates the container compose named, through the socket compose mounted."""
    s = settings_of(compose, "airflow-worker", monkeypatch)
    assert s.deploy.rollout == "docker"
    assert s.deploy.serving_container == compose["services"]["serving"]["container_name"]
    socket = "/" + s.deploy.docker_url.removeprefix("unix://").lstrip("/")
    worker_mounts = [m.split(":")[:2] for m in compose["services"]["airflow-worker"]["volumes"]]
    assert [socket, socket] in worker_mounts
    # The post-deploy check and rollback reach serving by its service name, with the shared admin token.
    assert host_port(s.serving_url)[0] == "serving" and s.admin_token.get_secret_value()


def test_airflow_loads_the_plugins_the_image_copies(compose):
    image = parse_dockerfile(REPO / "docker" / "airflow" / "Dockerfile").pop()
    copies = {tuple(c.flags_and_args()[1][:-1]): c.flags_and_args()[1][-1] for c in image.all("COPY")}
    assert (REPO / "plugins").is_dir()
    for name in AIRFLOW:
        assert effective_env(compose, name)["AIRFLOW__CORE__PLUGINS_FOLDER"] == copies[("plugins",)], name


def test_the_trainer_image_carries_the_commit_it_was_built_from(generated_env, monkeypatch):
    """Build arg VIGIL_GIT_COMMIT (from the shell of `docker compose build`) -> image ENV -> Settings -> the
    value tasks/train/tracking.py tags every MLflow run with (tests/model/test_train.py checks the tag)."""
    from tasks.train.tracking import git_commit

    commit = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
    env = effective_env(load_compose({**generated_env, "VIGIL_GIT_COMMIT": commit}), "trainer")
    for key in [k for k in os.environ if k.startswith("VIGIL_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("VIGIL_INCLUDE_DIR", str(REPO / "include"))
    assert Settings().training.git_commit == commit
    assert git_commit(Settings()) == commit
    # Built without it, the image says nothing rather than something false (and it has no .git to ask).
    assert effective_env(load_compose(generated_env), "trainer")["VIGIL_TRAINING__GIT_COMMIT"] == ""
