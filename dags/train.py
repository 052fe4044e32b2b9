"""
### train_detector — fine-tune the detector on the newest dataset snapshot

Runs when curation publishes a snapshot (the `curated_dataset` Asset), but trains only when at least
`training.min_new_images` labeled images arrived since the last training (the newest registered model
version's `snapshot` tag); a manual run from the form always trains. The form can pick the profile,
the snapshot, epochs, learning rate, LoRA rank and a free-text reason recorded in MLflow.

The launcher (`training.launcher`) decides where `python -m tasks.train` runs:

* `local` — a subprocess of this virtualenv (embedded mode, CPU, tiny profile);
* `docker` — the `docker/trainer` image through the DockerOperator, with every GPU (`device_requests`),
  an enlarged `/dev/shm`, the compose network, MLflow/S3 settings (credentials as private env), the
  work volume for checkpoints (a restarted job resumes), in the `gpu` pool (one slot).

The entry point registers a new model version with alias `challenger`; the last task emits a
`challenger` Asset event with the version in its extra, which schedules the promotion gate.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, chain, dag, task

from tasks.settings import Settings

from vigil_common import CHALLENGER, CURATED_DATASET, DEFAULT_ARGS, container_job

SETTINGS = Settings()
TRAINING = SETTINGS.training
PARAMS = {
    "profile": Param(
        "",
        type="string",
        enum=["", "tiny", "qwen2.5-vl-3b"],
        title="Profile",
        description="Model size: empty = the configured setup (include/"
        f"{TRAINING.model_config_file}); otherwise include/model_config.<profile>.yaml.",
    ),
    "snapshot": Param(
        "",
        type="string",
        pattern=r"^(|latest|v\d{4,})$",
        title="Dataset snapshot",
        description="Snapshot version to train on, e.g. v0003. Empty = the config's (latest).",
    ),
    "epochs": Param(
        None,
        type=["null", "integer"],
        minimum=1,
        maximum=1000,
        title="Epochs",
        description="Upper bound on epochs (early stopping on validation AUC may stop sooner). "
        "Empty = the config's.",
    ),
    "learning_rate": Param(
        None,
        type=["null", "number"],
        exclusiveMinimum=0,
        maximum=1,
        title="Learning rate",
        description="Peak learning rate. Empty = the config's.",
    ),
    "lora_r": Param(
        None,
        type=["null", "integer"],
        minimum=1,
        maximum=512,
        title="LoRA rank",
        description="Rank of the LoRA adapters (method lora only). Empty = the config's.",
    ),
    "reason": Param(
        "",
        type="string",
        maxLength=500,
        title="Reason",
        description="Why this model is trained (recorded in MLflow and on the model version).",
    ),
}
# The same entry point as `vigil train`; empty form fields render as empty strings, which it ignores.
TRAIN_COMMAND = [
    "python",
    "-m",
    "tasks.train",
    "--profile",
    "{{ params.profile or '' }}",
    "--snapshot",
    "{{ params.snapshot or '' }}",
    "--epochs",
    "{{ params.epochs or '' }}",
    "--learning-rate",
    "{{ params.learning_rate or '' }}",
    "--lora-r",
    "{{ params.lora_r or '' }}",
    "--reason",
    "{{ params.reason or '' }}",
]


@dag(
    dag_id="train_detector",
    schedule=[CURATED_DATASET],
    catchup=False,
    max_active_runs=1,
    max_consecutive_failed_dag_runs=3,
    default_args={**DEFAULT_ARGS, "retries": 1},
    params=PARAMS,
    tags=["vigil", "training"],
    doc_md=__doc__,
)
def train_detector():
    @task.short_circuit
    def enough_new_images(params: dict, dag_run=None) -> bool:
        """Manual runs train; data-triggered runs only when enough new labeled images arrived."""
        from tasks.train.launch import should_train

        run_type = getattr(dag_run.run_type, "value", dag_run.run_type)
        return should_train(str(run_type), snapshot=params.get("snapshot") or "latest")

    if TRAINING.launcher == "docker":
        result = container_job("train", TRAIN_COMMAND, SETTINGS, execution_timeout=timedelta(hours=24)).output
    else:

        @task(execution_timeout=timedelta(hours=6))
        def train(params: dict) -> dict:
            """Run `python -m tasks.train` in this virtualenv; returns its result."""
            from tasks.train.launch import run_local

            return run_local(params)

        result = train()

    @task(outlets=[CHALLENGER])
    def announce_challenger(result, outlet_events=None) -> dict:
        """Emit the `challenger` Asset event carrying the registered model version."""
        from tasks.train.launch import challenger_extra

        extra = challenger_extra(result)
        outlet_events[CHALLENGER].extra = extra
        return extra

    chain(enough_new_images(), result, announce_challenger(result))


train_detector()
