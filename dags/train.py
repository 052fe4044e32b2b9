"""
### train_detector — train the detector on the newest dataset snapshot

Runs when curation publishes a snapshot (the `curated_dataset` Asset) or the monitor measures an
accuracy drop on labeled traffic (the `accuracy_drop` Asset), but trains only when at least
`training.min_new_images` labeled images arrived since the last training (the newest registered model
version's `snapshot` tag), or when the accuracy drop was on the current champion and the labels that
showed it are in the snapshot (`include/monitor.yaml`: `retrain.accuracy_drop`); a manual run from the
form always trains. The form can pick the profile,
the snapshot, epochs, learning rate, LoRA rank and a free-text reason recorded in MLflow; every field
may stay empty, which means the configured value (`include/model_config.yaml`).

The `train` task's log shows the trainer's own log lines at their level, a progress line every 30 s
(epoch, step, loss, validation AUC, samples/s, time left) and a summary per epoch. The MLflow run
carries this Airflow run's URL (tag `vigil.airflow_run_url`); the run's **Vigil** tab links back to it.
A run unfinished `training.deadline_minutes` after it was queued is marked *Deadline missed*.

The launcher (`training.launcher`) decides where `python -m tasks.train` runs:

* `local` — a subprocess of this virtualenv (embedded mode, CPU: the probe, or the tiny VLM);
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

from vigil_common import ACCURACY_DROP, CHALLENGER, CURATED_DATASET, DEFAULT_ARGS, container_job, deadline

SETTINGS = Settings()
TRAINING = SETTINGS.training
# Every field may stay empty: the form then submits the configured defaults (a Param whose type
# lacks "null" is required in Airflow's form, and an empty required field blocks the Trigger button).
PARAMS = {
    "profile": Param(
        None,
        type=["null", "string"],
        enum=[None, "probe", "tiny", "qwen2.5-vl-3b"],
        values_display={
            None: f"configured setup ({TRAINING.model_config_file})",
            "probe": "probe (CPU: pretrained backbone + trained head)",
            "tiny": "tiny VLM (CPU, tests)",
            "qwen2.5-vl-3b": "qwen2.5-vl-3b (GPU)",
        },
        title="Profile",
        description="Detector family and size. Empty: the configured setup (include/"
        f"{TRAINING.model_config_file}); a profile: its reviewed file (include/model_config.yaml or "
        "include/model_config.<profile>.yaml).",
    ),
    "snapshot": Param(
        None,
        type=["null", "string"],
        pattern=r"^(|latest|v\d{4,})$",
        title="Dataset snapshot",
        description="Snapshot version to train on, e.g. v0003, or latest. Empty: the config's "
        "data.snapshot (latest).",
    ),
    "epochs": Param(
        None,
        type=["null", "integer"],
        minimum=1,
        maximum=1000,
        title="Epochs",
        description="Upper bound on epochs (early stopping on validation AUC may stop sooner). "
        "Empty: the config's train.epochs.",
    ),
    "learning_rate": Param(
        None,
        type=["null", "number"],
        exclusiveMinimum=0,
        maximum=1,
        title="Learning rate",
        description="Peak learning rate. Empty: the config's train.learning_rate.",
    ),
    "lora_r": Param(
        None,
        type=["null", "integer"],
        minimum=1,
        maximum=512,
        title="LoRA rank",
        description="Rank of the LoRA adapters (method lora only). Empty: the config's lora.r.",
    ),
    "reason": Param(
        None,
        type=["null", "string"],
        maxLength=500,
        title="Reason",
        description="Why this model is trained, recorded in MLflow and on the model version. "
        "Empty: none recorded.",
    ),
}
# The same entry point as `vigil train`; empty fields render as empty strings, which it ignores.
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
    # New curated data, or an accuracy drop the monitor measured on labeled traffic.
    schedule=(CURATED_DATASET | ACCURACY_DROP),
    catchup=False,
    max_active_runs=1,
    max_consecutive_failed_dag_runs=3,
    default_args={**DEFAULT_ARGS, "retries": 1},
    params=PARAMS,
    tags=["vigil", "training"],
    description="Fine-tune the detector on the newest dataset snapshot and register it as challenger.",
    doc_md=__doc__,
    deadline=deadline(
        "training",
        TRAINING.deadline_minutes,
        "Look at the train task's log (progress lines give the pace and the time left) and, with the "
        "docker launcher, at the gpu pool's queue (training.deadline_minutes sets this deadline).",
    ),
)
def train_detector():
    @task.short_circuit
    def enough_new_images(params: dict, dag_run=None) -> bool:
        """Manual runs train; triggered runs when enough new labeled images arrived, or when labeled
        traffic showed an accuracy drop on the champion and those labels are in the snapshot."""
        from tasks.monitor.retrain import accuracy_drop_warrants_training
        from tasks.train.launch import should_train

        run_type = getattr(dag_run.run_type, "value", dag_run.run_type)
        snapshot = params.get("snapshot") or "latest"
        return should_train(str(run_type), snapshot=snapshot) or accuracy_drop_warrants_training(
            snapshot=snapshot
        )

    if TRAINING.launcher == "docker":
        result = container_job("train", TRAIN_COMMAND, SETTINGS, execution_timeout=timedelta(hours=24)).output
    else:

        @task(execution_timeout=timedelta(hours=6))
        def train(params: dict) -> dict:
            """Run `python -m tasks.train` in this virtualenv (its log lines keep their level); its result."""
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
