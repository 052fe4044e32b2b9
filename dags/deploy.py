"""
### deploy — tune, validate and roll out the new champion; roll back on any failure

Runs when the gate promotes a model (the `champion` Asset), or by hand for a model and version. Each
detector family has its own champion: the serving model (probe) is served to every image; a VLM
champion is the cascade's second stage, tested alone in the sandbox and reloaded next to the serving
model (with `serving.cascade` off the run is skipped, saying why).

1. `tune` — benchmarks inference settings (dtype, int8, compile, batch size, threads, max_pixels) for
   the champion on this hardware and stores the pick as `inference.json` on the model version; the
   serving app applies it when it loads the model.
2. `smoke_test_sandbox` — the serving app on the new version in a sandbox (embedded: a subprocess on a
   free port), checked for readiness, the right version, verdicts on known test images and latency.
3. `roll_out` — embedded: `POST /admin/reload` on the running server; compose: the serving container
   is recreated on the version through the Docker API.
4. `post_deploy_check` — the same smoke test against the live server.

If any step fails, `rollback` moves `champion` back to `previous`, reloads serving, and fails the run
with a message that says what happened. Thresholds: the `deploy` settings section. The graph groups
the steps in two phases, `tuning` and `release`; a run unfinished `deploy.deadline_minutes` after it
was queued is marked *Deadline missed*.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, TaskGroup, chain, dag, task

from tasks.settings import Settings

from vigil_common import CHAMPION, DEFAULT_ARGS, container_job, deadline, model_param

SETTINGS = Settings()
STEPS = ("tune", "smoke_test_sandbox", "roll_out", "post_deploy_check")


def _step(ti, run, *args):
    """Run one step for the resolved model; on failure leave its error in XCom (key ``error``)."""
    model_name = ti.xcom_pull(task_ids="resolve_version", key="model_name")
    try:
        return run(SETTINGS, *args, model_name=model_name)
    except Exception as exc:
        ti.xcom_push(key="error", value=f"{type(exc).__name__}: {exc}"[:2000])
        raise


@dag(
    dag_id="deploy",
    schedule=[CHAMPION],
    catchup=False,
    max_active_runs=1,
    # A failed deployment rolls back and fails its run; the next champion must still be deployed.
    max_consecutive_failed_dag_runs=0,
    default_args={**DEFAULT_ARGS, "retries": 0},
    params={
        "model": model_param(
            SETTINGS,
            "Registered model whose champion to deploy. Empty: the triggering `champion` "
            f"event's model, else {SETTINGS.model_name}.",
        ),
        "version": Param(
            None,
            type=["null", "string"],
            pattern=r"^(|\d+)$",
            title="Model version",
            description="Version to deploy, e.g. 3. Empty: the version of the triggering `champion` "
            "event, else the current `champion` alias.",
        ),
        "tune": Param(
            True,
            type="boolean",
            title="Tune inference settings",
            description="On: benchmark inference settings on this hardware before deploying. Off: keep "
            "the version's stored settings (defaults if it was never tuned).",
        ),
    },
    tags=["vigil", "deployment"],
    description="Tune, smoke-test and roll out the new champion; roll back on any failure.",
    doc_md=__doc__,
    deadline=deadline(
        "deployment",
        SETTINGS.deploy.deadline_minutes,
        "Look at the step that is still running (tune, smoke_test_sandbox, roll_out, post_deploy_check) "
        "and its log; serving keeps the previous champion until roll_out (deploy.deadline_minutes sets "
        "this deadline).",
    ),
)
def deploy():
    @task
    def resolve_version(params: dict, triggering_asset_events=None, ti=None) -> str:
        """The form's model and version, else the triggering `champion` event's, else the serving
        model's `champion` alias (the model name goes to XCom key ``model_name``). A VLM champion
        with the cascade off is not served: the run is skipped, saying so."""
        from airflow.sdk.exceptions import AirflowSkipException

        from tasks.deploy import NothingToDeploy, champion_version, deploy_model

        extras = [event.extra for events in (triggering_asset_events or {}).values() for event in events]
        model_name = deploy_model(SETTINGS, params.get("model"), extras)
        ti.xcom_push(key="model_name", value=model_name)
        try:
            return champion_version(SETTINGS, params.get("version"), extras, model_name)
        except NothingToDeploy as exc:
            raise AirflowSkipException(str(exc)) from exc

    version = resolve_version()

    with TaskGroup("tuning", prefix_group_id=False, tooltip="inference settings for this hardware"):

        @task.short_circuit(ignore_downstream_trigger_rules=False)
        def tuning_wanted(params: dict) -> bool:
            """The form's "Tune inference settings" (on for runs started by a new champion)."""
            return bool(params.get("tune", True))

        if SETTINGS.deploy.rollout == "docker":
            # Measured where it will run: `python -m tasks.tune` in the serving image.
            tuned = container_job(
                "tune",
                [
                    "python",
                    "-m",
                    "tasks.tune",
                    "--model",
                    "models:/{{ ti.xcom_pull(task_ids='resolve_version', key='model_name') }}/"
                    "{{ ti.xcom_pull(task_ids='resolve_version') }}",
                ],
                SETTINGS,
                image=SETTINGS.deploy.serving_image,
                gpus=False,
                execution_timeout=timedelta(hours=1),
            )
        else:

            @task(execution_timeout=timedelta(hours=1))
            def tune(version: str, ti=None) -> dict:
                """Benchmark inference settings on this hardware; the pick is stored on the model version."""
                from tasks.deploy import tune_champion

                return _step(ti, tune_champion, version)

            tuned = tune(version)
        version >> tuning_wanted() >> tuned

    with TaskGroup("release", prefix_group_id=False, tooltip="sandbox smoke test, roll-out, live check"):

        @task(trigger_rule="none_failed")  # also after a skipped tuning
        def smoke_test_sandbox(version: str, ti=None) -> dict:
            """The serving app on the new version in a sandbox: ready, right version, verdicts, latency."""
            from tasks.deploy import validate_in_sandbox

            return _step(ti, validate_in_sandbox, version)

        @task
        def roll_out(version: str, ti=None) -> dict:
            """Serve the new version: reload the live server, or recreate its container."""
            from tasks.deploy import roll_out as run

            return _step(ti, run, version)

        @task
        def post_deploy_check(version: str, ti=None) -> dict:
            """The sandbox's smoke test against the live server."""
            from tasks.deploy import post_check

            return _step(ti, post_check, version)

        checks = [smoke_test_sandbox(version), roll_out(version), post_deploy_check(version)]
        chain(*checks)
    tuned >> checks[0]

    @task(trigger_rule="one_failed")
    def rollback(version: str, ti=None) -> None:
        """Only after a failure: champion back to previous, serving reloaded, and the run fails."""
        from airflow.sdk.exceptions import AirflowFailException

        from tasks.deploy import rollback as run

        errors = [f"{step}: {error}" for step in STEPS if (error := ti.xcom_pull(task_ids=step, key="error"))]
        model_name = ti.xcom_pull(task_ids="resolve_version", key="model_name")
        reason = "; ".join(errors) or "a deploy step failed"
        raise AirflowFailException(run(SETTINGS, version, reason, model_name=model_name))

    [tuned, *checks] >> rollback(version)


deploy()
