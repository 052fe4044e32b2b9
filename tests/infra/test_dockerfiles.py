"""The Dockerfiles of the images compose builds, read statically (no Docker engine runs here).

Every build must find what it copies in its context (and not have it dropped by a .dockerignore),
run as a non-root user, pin its base image, and keep secrets out of the context; the server images
have a health check on the endpoint compose waits for. Requirements files pin the same versions as
the root requirements.txt, so the images run the code that the tests ran.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers.deploy_files import (
    REPO,
    DockerIgnore,
    Stage,
    canonical,
    dockerfile_of,
    parse_dockerfile,
    read_pins,
    trainer_pending,
)

# What each image must offer beyond the common rules.
HEALTH_PATHS = {"serving": "/readyz", "mlflow": "/health"}
ENTRY_POINTS = {"serving": ["python", "-m", "tasks.serve"]}
# The root requirements.txt is the embedded/CI set (one CPU machine). Packages only an image needs are
# absent from it; each is listed here with the reason. Every other pin must equal the root pin.
IMAGE_ONLY_PACKAGES: dict[str, dict[str, str]] = {
    "trainer": {
        "deepspeed": "ZeRO-2 across several GPUs (include/deepspeed_zero2.json); the embedded mode trains "
        "on one CPU, where DeepSpeed has nothing to do"
    },
}


def builds(compose: dict) -> dict[str, tuple[Path, Path]]:
    """Image folder name -> (build context, Dockerfile), one entry per Dockerfile compose builds."""
    found = {}
    for name, service in compose["services"].items():
        if "build" not in service:
            continue
        dockerfile = dockerfile_of(service)
        if name == "trainer" and not dockerfile.exists() and trainer_pending():
            continue  # docker/trainer/ arrives with tasks/train.py (the model helper's part)
        found[dockerfile.parent.name] = (REPO / service["build"]["context"], dockerfile)
    return found


@pytest.fixture(scope="module")
def images(compose) -> dict[str, tuple[Path, Path, list[Stage]]]:
    return {
        name: (context, dockerfile, parse_dockerfile(dockerfile))
        for name, (context, dockerfile) in builds(compose).items()
    }


def root_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and not line.startswith("#"):
            pins[canonical(name)] = version
    return pins


def test_compose_builds_the_images(images):
    assert {"airflow", "serving", "mlflow"} <= set(images)


def test_base_images_are_pinned_python_311(images):
    for name, (_, dockerfile, stages) in images.items():
        for stage in stages:
            if stage.base in {s.name for s in stages}:
                continue  # FROM an earlier stage
            repo, _, tag = stage.base.rpartition(":")
            assert repo and tag and tag != "latest", f"{dockerfile}: base {stage.base!r} is not pinned"
        if name != "trainer":  # the CUDA base of the trainer names its own Python
            assert "3.11" in stages[-1].base, f"{dockerfile}: Vigil runs on Python 3.11 (pyproject.toml)"


def test_images_run_as_a_non_root_user(images):
    for _, dockerfile, stages in images.values():
        users = stages[-1].all("USER")
        assert users, f"{dockerfile}: no USER: the image would run as root"
        assert users[-1].text.split(":")[0] not in {"root", "0"}, f"{dockerfile}: runs as {users[-1].text}"


def test_server_images_have_health_checks_on_the_right_endpoint(images):
    for name, path in HEALTH_PATHS.items():
        _, dockerfile, stages = images[name]
        checks = stages[-1].all("HEALTHCHECK")
        assert len(checks) == 1, f"{dockerfile}: one HEALTHCHECK expected"
        assert re.search(rf"127\.0\.0\.1:\d+{re.escape(path)}\b", checks[0].text), checks[0].text


def test_entry_points(images):
    for name, command in ENTRY_POINTS.items():
        cmd = images[name][2][-1].all("CMD")
        assert cmd and cmd[-1].flags_and_args()[1] == command


def test_copy_sources_exist_and_survive_the_dockerignore(images):
    for context, dockerfile, stages in images.values():
        ignore = DockerIgnore.for_build(context, dockerfile)
        for stage in stages:
            for copy in stage.all("COPY") + stage.all("ADD"):
                flags, args = copy.flags_and_args()
                if "from" in flags:
                    continue
                for source in args[:-1]:
                    assert (context / source).exists(), f"{dockerfile}:{copy.line}: {source} not in {context}"
                    assert not ignore.excludes(source), (
                        f"{dockerfile}:{copy.line}: {source} is excluded by {ignore.source}"
                    )


def test_build_mounts_refer_to_earlier_stages(images):
    for _, dockerfile, stages in images.values():
        for index, stage in enumerate(stages):
            for run in stage.all("RUN"):
                for ref in re.findall(r"--mount=\S*\bfrom=([\w.-]+)", run.text):
                    assert ref in {s.name for s in stages[:index]}, (
                        f"{dockerfile}:{run.line}: unknown stage {ref}"
                    )


def test_secrets_and_local_state_never_enter_a_build_context(images):
    for name, (context, dockerfile, _) in images.items():
        ignore = DockerIgnore.for_build(context, dockerfile)
        for path in (".env", ".venv", ".vigil", ".git"):
            if (context / path).exists() or path == ".env":
                assert ignore.excludes(path), f"{name}: {path} would be sent to the Docker daemon"


def test_dockerignore_matching_follows_docker_rules(tmp_path):
    (tmp_path / ".dockerignore").write_text("*\n!tasks\n**/__pycache__\n!README.md\n")
    ignore = DockerIgnore.parse(tmp_path / ".dockerignore")
    assert ignore.excludes(".env") and ignore.excludes("dags/x.py")
    assert not ignore.excludes("tasks") and not ignore.excludes("tasks/settings.py")
    assert ignore.excludes("tasks/__pycache__/settings.cpython-311.pyc")
    assert not ignore.excludes("README.md")


def test_images_copy_include_where_vigil_include_dir_points(images):
    for name, (_, dockerfile, stages) in images.items():
        env = stages[-1].env()
        if "VIGIL_INCLUDE_DIR" not in env:
            assert name in {"mlflow"}, f"{dockerfile}: Vigil's code needs VIGIL_INCLUDE_DIR"
            continue
        targets = [c.flags_and_args()[1] for c in stages[-1].all("COPY")]
        assert ["include", env["VIGIL_INCLUDE_DIR"]] in targets, (
            f"{dockerfile}: include/ not copied to VIGIL_INCLUDE_DIR"
        )


def test_airflow_base_image_matches_the_pinned_airflow(images):
    base = images["airflow"][2][-1].base
    pins = read_pins(REPO / "docker" / "airflow" / "requirements.txt")
    assert base.startswith(f"apache/airflow:{pins['apache-airflow']}-"), base


# -- requirements files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "requirements", sorted((REPO / "docker").glob("*/requirements.txt")), ids=lambda p: p.parent.name
)
def test_image_requirements_pin_the_root_versions(requirements):
    image = requirements.parent.name
    pins = read_pins(requirements)
    root = root_pins()
    image_only = IMAGE_ONLY_PACKAGES.get(image, {})
    mismatched = {
        name: (version, root.get(name))
        for name, version in pins.items()
        if name not in image_only and root.get(name) != version
    }
    assert mismatched == {}, f"{requirements.relative_to(REPO)}: (image pin, root pin)"


def test_image_only_packages_are_pinned_in_their_image_and_absent_from_the_root():
    # An entry that is in the root set (or no longer in its image) would exempt a shared pin from the check.
    root = root_pins()
    for image, packages in IMAGE_ONLY_PACKAGES.items():
        pins = read_pins(REPO / "docker" / image / "requirements.txt")
        for name, reason in packages.items():
            assert name in pins, (
                f"docker/{image}/requirements.txt does not pin {name}: drop it from IMAGE_ONLY_PACKAGES"
            )
            assert name not in root, f"{name} is in requirements.txt: its image pin must equal the root pin"
            assert reason.strip(), name


def test_heavy_model_libraries_stay_out_of_the_airflow_image():
    pins = read_pins(REPO / "docker" / "airflow" / "requirements.txt")
    assert not {"torch", "transformers", "peft", "accelerate"} & set(pins)
