"""What every Vigil DAG shares: the Assets that chain the stages, and task defaults.

Stages are connected by data, not by calls: a collection run emits a ``raw_batch`` event, which
schedules curation; a published snapshot emits ``curated_dataset``, which schedules training; a
registered challenger schedules the promotion gate; a new champion schedules deployment. The monitor
emits ``drift_alert`` (a group drifting in consecutive windows: a review campaign opens) and
``accuracy_drop`` (labeled traffic shows the champion is worse than on its test split).
"""

from datetime import timedelta

from airflow.sdk import Asset, Param

from tasks.errors import PermanentError

RAW_BATCH = Asset(name="raw_batch", uri="vigil://raw-batch")
CURATED_DATASET = Asset(name="curated_dataset", uri="vigil://curated-dataset")
CHALLENGER = Asset(name="challenger", uri="vigil://model/challenger")
CHAMPION = Asset(name="champion", uri="vigil://model/champion")
# -- monitoring (dags/monitor.py) --
DRIFT_ALERT = Asset(name="drift_alert", uri="vigil://monitor/drift-alert")
ACCURACY_DROP = Asset(name="accuracy_drop", uri="vigil://monitor/accuracy-drop")

DEFAULT_ARGS = {
    "owner": "vigil",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}


def model_param(settings, description: str):
    """The form's Model field of promote and deploy: each detector family has its own registered model."""
    return Param(
        None,
        type=["null", "string"],
        enum=[None, settings.model_name, settings.vlm_model_name],
        values_display={
            None: "the triggering event's model, else the serving model",
            settings.model_name: f"{settings.model_name} (probe family, serves every image)",
            settings.vlm_model_name: f"{settings.vlm_model_name} (VLM family, the cascade's second stage)",
        },
        title="Model",
        description=description,
    )


def deadline(what: str, minutes: float, hint: str):
    """A deadline alert (Airflow 3's SLA): a run unfinished ``minutes`` after it was queued is marked
    "Deadline missed" in the UI, and :func:`tasks.alerts.deadline_missed` logs ``hint`` in the triggerer.

    Measured from the queue time, which every run has (a manual or REST run may have no logical date).
    """
    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

    from tasks.alerts import duration_text

    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(minutes=minutes),
        callback=AsyncCallback(
            "tasks.alerts.deadline_missed", kwargs={"what": what, "minutes": minutes, "hint": hint}
        ),
        name=f"{what} within {duration_text(minutes)}",
    )


def run(func, *args, **kwargs):
    """One call into ``tasks/``: a :class:`~tasks.errors.PermanentError` (a missing credential, a bad
    config, a version that does not exist) fails the task at once, without its retries."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        return func(*args, **kwargs)
    except PermanentError as exc:
        raise AirflowFailException(str(exc)) from None


def container_job(
    task_id: str, command: list[str], settings, *, image: str | None = None, gpus: bool = True, **kwargs
):
    """A DockerOperator running ``command`` on the compose network (the ``docker`` launcher).

    With ``gpus`` (training, the gate): the trainer image with every GPU, an enlarged ``/dev/shm``, the
    work and Hugging Face cache volumes, the ``gpu`` pool. Without (inference tuning): ``image`` as is.
    MLflow/S3 settings come as environment, credentials as private environment (never rendered); the
    Airflow run as ``AIRFLOW_CTX_*`` and its UI's address as ``VIGIL_AIRFLOW_URL``, as a local task
    has them (MLflow runs link back to it). The container's last stdout line (its JSON result) is the
    task's XCom.
    """
    from airflow.providers.docker.operators.docker import DockerOperator
    from docker.types import DeviceRequest, Mount

    from tasks.train.launch import container_environment, docker_size_bytes

    training = settings.training
    environment, private_environment = container_environment(settings)
    if not gpus:  # no work volume: the image's own home and caches
        environment = {k: v for k, v in environment.items() if k not in ("VIGIL_HOME", "HF_HOME")}
    environment |= {
        "AIRFLOW_CTX_DAG_ID": "{{ dag.dag_id }}",
        "AIRFLOW_CTX_DAG_RUN_ID": "{{ run_id }}",
        "VIGIL_AIRFLOW_URL": "{{ ti.log_url.split('/dags/')[0] }}",  # the UI's base URL (api.base_url)
    }
    gpu_options = (
        {
            "device_requests": [DeviceRequest(count=training.gpus, capabilities=[["gpu"]])],
            "shm_size": docker_size_bytes(training.shm_size),
            "mounts": [
                Mount(target="/vigil", source=training.work_volume, type="volume"),
                Mount(target="/vigil/hf-cache", source=training.hf_cache_volume, type="volume"),
            ],
            "pool": training.gpu_pool,
        }
        if gpus
        else {}
    )
    return DockerOperator(
        task_id=task_id,
        image=image or training.trainer_image,
        command=command,
        docker_url=training.docker_url,
        network_mode=training.docker_network,
        environment=environment,
        private_environment=private_environment,
        mount_tmp_dir=False,
        auto_remove="success",
        do_xcom_push=True,
        **gpu_options,
        **kwargs,
    )
