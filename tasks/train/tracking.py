"""MLflow for a training job: the run (resumed after a restart), its inputs, the logged model and the registry.

Layout of a training run in the experiment ``settings.training.experiment``:

* params: the whole setup as dotted paths (``train.learning_rate``...), ``snapshot``, ``job_id``,
  ``reason``, ``start`` (base or champion version), data counts;
* experiment tag ``mlflow.experimentKind`` = ``custom_model_development`` (the MLflow UI then opens the
  experiment on its runs and models, not on the GenAI traces page);
* tags: ``mlflow.source.git.commit``, ``vigil.job_id``, ``vigil.snapshot``, ``vigil.profile``, and the
  Airflow run that trained it: ``vigil.airflow_dag_id``, ``vigil.airflow_run_id``, ``vigil.airflow_run_url``;
* input: the snapshot manifest as a dataset (source = manifest URI, digest = manifest sha256), context ``training``;
* metrics: ``train_loss``/``learning_rate``/``grad_norm`` per step, ``val_*`` per epoch, ``best_val_roc_auc``,
  ``threshold``, ``test_*`` (overall metrics and robustness deltas of the test report);
* the logged model ``model`` (pyfunc with a signature and an input example; ``artifacts/detector`` is the
  detector folder) carries the run's step-0 metrics (``test_*``, ``final_val_*``, ``best_val_roc_auc``,
  ``threshold``: MLflow links them when the model is logged), so the MLflow UI compares versions; the
  gate adds ``gate/<slice>/<metric>`` on the test split it used (:mod:`tasks.promote.gate`);
* artifacts: ``evaluation/test/``
  (report.json, report.md, roc.png, reliability.png, confusion.png), ``config/model_config.yaml``,
  ``training/trainer_state.json``;
* registry: a new version of ``settings.model_name`` with alias ``challenger`` and tags ``snapshot``,
  ``base_model``, ``revision``, ``profile``, ``method``, ``threshold``, ``job_id``, ``val_roc_auc``,
  ``test_roc_auc``, ``reason``, ``airflow_run_url``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tasks.registry import CHALLENGER, Registry, use_mlflow
from tasks.storage import sha256_hex

if TYPE_CHECKING:
    from tasks.settings import Settings
    from tasks.storage import ObjectStore

log = logging.getLogger("vigil.train")
RUN_FILE = "mlflow_run.json"
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def airflow_run(settings: Settings) -> dict[str, str] | None:
    """The Airflow run this process works for, with its address in the Airflow UI; None outside Airflow.

    Airflow exports ``AIRFLOW_CTX_DAG_ID`` and ``AIRFLOW_CTX_DAG_RUN_ID`` to a task (and its children);
    the containers get them from ``dags/vigil_common.container_job``. The UI's address is Airflow's
    ``api.base_url`` (``AIRFLOW__API__BASE_URL``), else ``settings.airflow_url``.
    """
    dag_id, run_id = os.environ.get("AIRFLOW_CTX_DAG_ID"), os.environ.get("AIRFLOW_CTX_DAG_RUN_ID")
    if not dag_id or not run_id:
        return None
    base = (os.environ.get("AIRFLOW__API__BASE_URL") or settings.airflow_url).rstrip("/")
    url = f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
    return {"dag_id": dag_id, "run_id": run_id, "url": url}


def airflow_tags(settings: Settings) -> dict[str, str]:
    """MLflow run tags that link back to the Airflow run (empty outside Airflow)."""
    found = airflow_run(settings)
    if found is None:
        return {}
    return {
        "vigil.airflow_dag_id": found["dag_id"],
        "vigil.airflow_run_id": found["run_id"],
        "vigil.airflow_run_url": found["url"],
    }


def git_commit(settings: Settings) -> str | None:
    """The code version: ``training.git_commit`` (set when the trainer image is built), else the checkout's HEAD."""
    if settings.training.git_commit:
        return settings.training.git_commit
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def system_metrics_enabled() -> bool:
    """System metrics need psutil; MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false switches them off."""
    if os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "true").lower() in ("false", "0", "no"):
        return False
    try:
        import psutil  # noqa: F401
    except ImportError:
        return False
    return True


def start_run(work: Path, settings: Settings, run_name: str, tags: dict[str, str]):
    """Start the job's MLflow run, or resume it when the job restarts (its id is kept in the work folder)."""
    import mlflow

    use_mlflow(settings)  # the version this run registers goes to the same server
    experiment = mlflow.set_experiment(settings.training.experiment)
    if (experiment.tags or {}).get("mlflow.experimentKind") != EXPERIMENT_KIND["mlflow.experimentKind"]:
        mlflow.set_experiment_tags(EXPERIMENT_KIND)
    run_file = work / RUN_FILE
    run_id = json.loads(run_file.read_text())["run_id"] if run_file.exists() else None
    run = mlflow.start_run(
        run_id=run_id,
        run_name=None if run_id else run_name,
        experiment_id=experiment.experiment_id,
        log_system_metrics=system_metrics_enabled(),
        tags=None if run_id else tags,
    )
    if run_id:
        log.info("resuming MLflow run %s", run_id)
    else:
        run_file.write_text(json.dumps({"run_id": run.info.run_id}))
    # Also on a resumed run: the Airflow run that finishes the job is the one to link to.
    if links := airflow_tags(settings):
        mlflow.set_tags(links)
        log.info("MLflow run %s belongs to Airflow run %s", run.info.run_id, links["vigil.airflow_run_url"])
    return run


def log_snapshot_input(store: ObjectStore, manifest_key: str, table, version: str) -> None:
    """The snapshot as the run's dataset input: source = the manifest's URI, digest = its sha256."""
    import mlflow

    digest = sha256_hex(store.read_bytes(manifest_key))[:20]
    columns = [c for c in ("image_id", "split", "label", "source", "label_source", "generator") if c in table]
    dataset = mlflow.data.from_pandas(
        table[columns], source=store.uri(manifest_key), name=f"snapshot-{version}", digest=digest
    )
    mlflow.log_input(dataset, context="training")


def log_params(params: dict[str, Any]) -> None:
    """Log params once (a resumed run already has them; MLflow refuses to change a logged param)."""
    import mlflow

    existing = mlflow.active_run().data.params if mlflow.active_run() else {}
    new = {k: ("" if v is None else str(v))[:6000] for k, v in params.items() if k not in existing}
    if new:
        mlflow.log_params(new)


def log_and_register(
    detector_dir: Path, settings: Settings, tags: dict[str, str], description: str, name: str | None = None
) -> dict[str, str]:
    """Log the detector folder as a pyfunc model (signature, input example), register a new version
    of ``name`` (default ``settings.model_name``), alias it ``challenger``, tag it. MLflow links the
    run's metrics logged so far at step 0 (test report, final validation metrics, threshold) to it."""
    import warnings

    import mlflow

    with warnings.catch_warnings():
        # The signature is given: MLflow's advice to infer it from type hints does not apply.
        warnings.filterwarnings(
            "ignore", message=r".*Add type hints to the `predict` method", category=UserWarning
        )
        from tasks.model.pyfunc import DetectorPyfunc, input_example, pip_requirements, signature

        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=DetectorPyfunc(),
            artifacts={"detector": str(detector_dir)},
            pip_requirements=pip_requirements(),
            signature=signature(),
            input_example=input_example(),
        )
    if found := airflow_run(settings):
        tags = {**tags, "airflow_run_url": found["url"]}
    name = name or settings.model_name
    version = Registry(settings, name=name).register(info.model_uri, tags, description)
    log.info("registered %s version %s with alias %r", name, version, CHALLENGER)
    return {
        "model_uri": f"models:/{name}/{version}",
        "logged_model_uri": info.model_uri,
        "model_id": info.model_id,
        "version": version,
    }
