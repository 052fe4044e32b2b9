"""docker/make_env.py: the .env a user starts the stack with, run as a user runs it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

from cryptography.fernet import Fernet

from tests.helpers.deploy_files import ENV_EXAMPLE, REPO, load_compose, read_env_file

SCRIPT = REPO / "docker" / "make_env.py"


def make_env(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--output", str(tmp_path / ".env"), *args],
        capture_output=True,
        text=True,
        check=True,
    )


def test_generates_every_secret_and_the_docker_group(tmp_path):
    socket = tmp_path / "docker.sock"
    socket.touch()
    make_env(tmp_path, "--docker-socket", str(socket))
    env = read_env_file(tmp_path / ".env")
    example = read_env_file(ENV_EXAMPLE)
    assert set(env) == set(example)
    generated = {k for k, v in example.items() if v == "" and env[k] != ""}
    assert {
        "POSTGRES_PASSWORD",
        "MLFLOW_DB_PASSWORD",
        "MINIO_ROOT_PASSWORD",
        "AWS_SECRET_ACCESS_KEY",
        "AIRFLOW_ADMIN_PASSWORD",
        "AIRFLOW_FERNET_KEY",
        "AIRFLOW_SECRET_KEY",
        "AIRFLOW_JWT_SECRET",
        "VIGIL_ADMIN_TOKEN",
        "DOCKER_GID",
    } == generated
    assert env["DOCKER_GID"] == str(socket.stat().st_gid)
    assert env["X_BEARER_TOKEN"] == ""  # a third party's secret: only the user has it
    Fernet(env["AIRFLOW_FERNET_KEY"].encode())  # a valid Fernet key, or this raises
    # Secrets go into URLs (postgresql://airflow:PASSWORD@...) and onto command lines (never "-..."):
    for key in generated - {"AIRFLOW_FERNET_KEY", "DOCKER_GID"}:
        assert env[key].isalnum() and len(env[key]) >= 32, key
    assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600
    load_compose(env)  # every required variable is now set


def test_two_runs_generate_different_secrets(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    make_env(tmp_path / "a")
    make_env(tmp_path / "b")
    a, b = read_env_file(tmp_path / "a" / ".env"), read_env_file(tmp_path / "b" / ".env")
    assert (
        a["POSTGRES_PASSWORD"] != b["POSTGRES_PASSWORD"]
        and a["AIRFLOW_FERNET_KEY"] != b["AIRFLOW_FERNET_KEY"]
    )


def test_never_overwrites_an_existing_env(tmp_path):
    (tmp_path / ".env").write_text("POSTGRES_PASSWORD=mine\n")
    result = make_env(tmp_path)
    assert (tmp_path / ".env").read_text() == "POSTGRES_PASSWORD=mine\n"
    assert "not touching it" in result.stdout


def test_without_a_docker_socket_it_says_what_to_set(tmp_path):
    result = make_env(tmp_path, "--docker-socket", str(tmp_path / "absent.sock"))
    assert read_env_file(tmp_path / ".env")["DOCKER_GID"] == ""
    assert "DOCKER_GID" in result.stderr and "stat -c %g /var/run/docker.sock" in result.stderr
    assert os.access(SCRIPT, os.X_OK)
