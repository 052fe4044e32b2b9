"""How the training entry point is started, and whether it should be.

* :func:`main` is ``python -m tasks.train`` / ``vigil train``: it loads the reviewed config, applies
  overrides, and — when several GPUs are visible and it is not already a worker — re-executes itself
  under ``torchrun`` with one process per GPU (DDP, or DeepSpeed ZeRO-2 when the config says so).
  Its last stdout line is the result as JSON (the DockerOperator's XCom, the local launcher's return).
* :func:`run_local` is the ``local`` launcher: the same entry point as a subprocess of this venv.
* :func:`trainer_arguments` builds the command-line arguments both launchers pass.
* :func:`new_images_since_last_training` is the Airflow short-circuit's question.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from typing import Any

from tasks.data.snapshots import read_snapshot
from tasks.logs import run_logged, setup_logging
from tasks.model.config import config_path, load_config
from tasks.registry import Registry, Tags
from tasks.settings import Settings
from tasks.storage import ObjectStore

log = logging.getLogger("vigil.train")
# No progress bars from libraries (tqdm, Hugging Face downloads): the trainer reports progress as log
# lines (tasks.train.trainer.ProgressLines), and a task log shows a bar's redraws as one endless line.
QUIET_PROGRESS = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
# Form/CLI parameter -> config field it overrides.
OVERRIDES = {
    "snapshot": "data.snapshot",
    "epochs": "train.epochs",
    "learning_rate": "train.learning_rate",
    "lora_r": "lora.r",
}


def _optional(kind: type):
    """An argparse type where an empty string means "not given" (the Airflow form's empty fields)."""

    def convert(text: str):
        return None if text == "" else kind(text)

    convert.__name__ = kind.__name__
    return convert


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--config",
        type=_optional(str),
        help="training setup YAML (default: include/<settings.training.model_config_file>)",
    )
    parser.add_argument(
        "--profile",
        type=_optional(str),
        help="probe | tiny | qwen2.5-vl-3b: that profile's reviewed config (include/model_config.yaml or include/model_config.<profile>.yaml)",
    )
    parser.add_argument(
        "--snapshot", type=_optional(str), help="dataset snapshot version (default: the config's)"
    )
    parser.add_argument("--epochs", type=_optional(int))
    parser.add_argument("--learning-rate", type=_optional(float))
    parser.add_argument("--lora-r", type=_optional(int))
    parser.add_argument("--reason", default="", help="why this model is trained (recorded in MLflow)")
    return parser


def trainer_arguments(params: dict[str, Any]) -> list[str]:
    """CLI arguments of the entry point for the Airflow form's params (empty values are left out)."""
    args: list[str] = []
    for name in ("profile", "snapshot", "epochs", "learning_rate", "lora_r", "reason"):
        value = params.get(name)
        if value not in (None, ""):
            args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def docker_size_bytes(size: str) -> int:
    """``8g``/``512m``/``1024`` -> bytes (Docker's size notation)."""
    units = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    text = size.strip().lower()
    try:
        return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)
    except (ValueError, IndexError):
        raise ValueError(
            f"invalid size {size!r}: use a number of bytes or a number with b, k, m or g"
        ) from None


def container_environment(settings: Settings) -> tuple[dict[str, str], dict[str, str]]:
    """(environment, private_environment) of the trainer container: where MLflow and the store are, and
    the credentials to reach them (private: never rendered or logged by Airflow)."""
    env = {
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "VIGIL_STORE_URL": str(settings.store_url),
        "VIGIL_MODEL_NAME": settings.model_name,
        "VIGIL_VLM_MODEL_NAME": settings.vlm_model_name,
        "VIGIL_HOME": "/vigil",
        "HF_HOME": "/vigil/hf-cache",
        "VIGIL_TRAINING__MODEL_CONFIG_FILE": settings.training.model_config_file,
        "VIGIL_TRAINING__EXPERIMENT": settings.training.experiment,
        "PYTHONUNBUFFERED": "1",
        **QUIET_PROGRESS,
    }
    if settings.s3_endpoint_url:
        env["VIGIL_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    if os.environ.get("AWS_DEFAULT_REGION"):
        env["AWS_DEFAULT_REGION"] = os.environ["AWS_DEFAULT_REGION"]
    secrets = (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "HF_TOKEN",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_TOKEN",
    )
    return env, {name: os.environ[name] for name in secrets if os.environ.get(name)}


def challenger_extra(result: dict[str, Any] | str) -> dict[str, Any]:
    """The ``challenger`` Asset event's extra, from the entry point's result (a dict, or its JSON line)."""
    result = parse_result(result) if isinstance(result, str) else result
    keys = (
        "model_name",
        "version",
        "model_uri",
        "run_id",
        "snapshot",
        "profile",
        "threshold",
        "val_roc_auc",
        "test_roc_auc",
        "job_id",
    )
    missing = [k for k in ("model_name", "version") if not result.get(k)]
    if missing:
        raise RuntimeError(f"the training result lacks {missing}: {result}")
    return {k: result.get(k) for k in keys}


def visible_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no CUDA runtime means no GPU
        return 0


def relaunch_command(argv: list[str], gpus: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={gpus}",
        "-m",
        "tasks.train",
        *argv,
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.train", description="Train the detector.")
    args = add_arguments(parser).parse_args(argv)
    return run(args)


def run(args: argparse.Namespace) -> int:

    setup_logging()
    settings = Settings()
    path = args.config or str(config_path(settings, args.profile))
    config = load_config(path, settings, args.profile)
    config = config.with_overrides({field: getattr(args, name) for name, field in OVERRIDES.items()})
    gpus = visible_gpus()
    if gpus > 1 and "LOCAL_RANK" not in os.environ:
        argv = (["--config", args.config] if args.config else []) + trainer_arguments(vars(args))
        command = relaunch_command(argv, gpus)
        log.info("%d GPUs visible: relaunching as %s", gpus, " ".join(command))
        os.execv(command[0], command)
    from tasks.train.job import train

    result = train(config, settings=settings, reason=args.reason, config_source=str(path))
    if result:
        sys.stdout.flush()
        print(json.dumps(result, sort_keys=True), flush=True)
    return 0


def parse_result(stdout: str) -> dict[str, Any]:
    """The entry point's result: its last non-empty stdout line, as JSON."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError("the trainer printed no result")
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise RuntimeError(
            f"the trainer's last output line is not its JSON result: {lines[-1][:300]!r}"
        ) from exc


def run_local(params: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    """The ``local`` launcher: ``python -m tasks.train`` in this venv. Its log lines are re-logged here
    as they come, each at its own level (the Airflow task log would show raw stderr as errors)."""
    command = [sys.executable, "-m", "tasks.train", *trainer_arguments(params)]
    log.info("running %s", " ".join(command))
    try:
        stdout = run_logged(command, env={**os.environ, **QUIET_PROGRESS, **(env or {})})
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"training failed with exit code {exc.returncode}; see the log above") from None
    return parse_result(stdout)


def new_images_since_last_training(
    settings: Settings | None = None, snapshot: str = "latest"
) -> tuple[int, str]:
    """Labeled images in ``snapshot`` that the last registered model of the configured family did not
    have in its snapshot, or had with another label (a correction by feedback), and an explanation."""
    settings = settings or Settings()
    store = ObjectStore.from_settings(settings)
    current = read_snapshot(store, snapshot)
    labeled = _labels(current)
    name = settings.model_name_for(load_config(config_path(settings)).family)
    last = Registry(settings, name=name).latest()
    last_snapshot = (last.tags or {}).get(Tags.SNAPSHOT) if last else None
    if not last_snapshot:
        return len(
            labeled
        ), f"no model trained yet; snapshot {current.version} has {len(labeled)} labeled images"
    new = len(labeled - _labels(read_snapshot(store, last_snapshot)))
    return new, (
        f"snapshot {current.version} has {new} labeled images that snapshot {last_snapshot} "
        f"(of {name} version {last.version}, the last training) did not have "
        "with that label"
    )


def _labels(snapshot) -> set[tuple[str, str]]:
    table = snapshot.labeled()
    return set(zip(table["image_id"], table["label"], strict=True))


def should_train(run_type: str, settings: Settings | None = None, snapshot: str = "latest") -> bool:
    """Manual runs always train; data-triggered runs only when ``settings.training.min_new_images`` arrived."""
    settings = settings or Settings()
    if run_type == "manual":
        log.info("manual run: training regardless of the number of new images")
        return True
    new, why = new_images_since_last_training(settings, snapshot or "latest")
    needed = settings.training.min_new_images
    log.info("%s; at least %d needed: %s", why, needed, "training" if new >= needed else "skipping")
    return new >= needed
