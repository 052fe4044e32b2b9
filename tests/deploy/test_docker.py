"""The compose roll-out's container specs, derived from a `docker inspect` document of a compose-made
serving container (no Docker engine here: the API calls themselves are not exercised)."""

from tasks.deploy.docker import recreate_spec, sandbox_spec

INSPECT = {
    "Id": "4f1c0e",
    "Name": "/vigil-serving",
    "Config": {
        "Image": "vigil-serving:latest",
        "Env": [
            "VIGIL_SERVING__PORT=8000",
            "MLFLOW_TRACKING_URI=http://mlflow:5000",
            "VIGIL_ADMIN_TOKEN=s3cret",
        ],
        "Cmd": ["python", "-m", "tasks.serve"],
        "Labels": {"com.docker.compose.project": "vigil", "com.docker.compose.service": "serving"},
        "Healthcheck": {"Test": ["CMD", "python", "-c", "..."], "Interval": 30000000000, "Retries": 3},
        "User": "vigil",
        "WorkingDir": "/home/vigil",
    },
    "HostConfig": {
        "Binds": ["vigil-serving-cache:/home/vigil/vigil:rw"],
        "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0},
        "ShmSize": 67108864,
    },
    "NetworkSettings": {"Networks": {"vigil": {"Aliases": ["vigil-serving", "serving"]}}},
}


def test_the_replacement_keeps_everything_but_pins_the_model():
    spec = recreate_spec(INSPECT, "models:/vigil-detector/7")
    assert spec["image"] == "vigil-serving:latest"
    assert spec["command"] == ["python", "-m", "tasks.serve", "--model", "models:/vigil-detector/7"]
    assert "VIGIL_ADMIN_TOKEN=s3cret" in spec["environment"]
    assert spec["labels"]["com.docker.compose.service"] == "serving"  # compose still owns it
    assert spec["networks"] == {"vigil": ["serving", "vigil-serving"]}  # http://serving:8000 keeps resolving
    assert spec["host_config"]["restart_policy"]["Name"] == "unless-stopped"
    assert spec["healthcheck"]["Retries"] == 3 and spec["user"] == "vigil"


def test_the_sandbox_gets_no_live_traffic_and_is_not_adopted_by_compose():
    spec = sandbox_spec(INSPECT, "models:/vigil-detector/7")
    assert spec["networks"] == {"vigil": []}
    assert "com.docker.compose.service" not in spec["labels"]
    assert spec["host_config"]["restart_policy"] is None and spec["host_config"]["binds"] == []
    assert spec["command"][-1] == "models:/vigil-detector/7"
