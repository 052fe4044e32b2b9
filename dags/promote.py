"""
### promote — the promotion gate: challenger vs champion on the same frozen test sets

Runs when training registers a challenger (the `challenger` Asset), or by hand for any version.
`evaluate` (in the trainer image on the GPU when training runs in containers) scores the
challenger **and** the current champion on the newest snapshot's test split,
its `source=` and `generator=` slices (every earlier source and generator: no forgetting), the test
images the champion never saw, and the golden set if configured; the policy in `include/gate.yaml`
decides. A rule with nothing to judge (no new test image since the champion's snapshot, a slice too
small) is reported as *not applicable*, not failed. The gate report (champion and challenger side by
side per slice, with bars) is stored under `reports/gate/<model>/v<version>/`, logged to the
challenger's MLflow run, and shown in this run's **Vigil** tab; the task log states every check.

* passed: `champion` moves to the challenger, the old champion becomes `previous`, and `promote`
  emits a `champion` Asset event (the version in its extra), which schedules `deploy`;
* failed: the version is tagged `rejected` with the reasons, and the `reject` task **fails the run**
  with them, so a rejection never looks like a success; no event.

**Override** (a person with the right to trigger this DAG, and listed in `promotion.override_users`
when that is set): trigger with *Model version*, *Promote even if the gate rejects it* and an
*Override reason*. The gate evaluates and reports as usual; a rejected version is then promoted
anyway, and the reason, the user and this run are recorded on the version (tags `gate_override_*`)
and in the gate report (decision `overridden`).

With `human_approval: true` in the policy, a passed gate waits in **Required actions** for a person
to approve before the alias moves.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, TaskGroup, dag, task

from tasks.settings import Settings

from vigil_common import CHALLENGER, CHAMPION, DEFAULT_ARGS, container_job, model_param, run

SETTINGS = Settings()


def _human_approval() -> bool:
    """Read from the policy file at parse time (cheap YAML), so the approval step shows in the graph."""
    from tasks.promote.policy import load_policy

    try:
        return load_policy(SETTINGS).human_approval
    except Exception:  # noqa: BLE001 - a broken policy fails the evaluate task with its message instead
        return False


HUMAN_APPROVAL = _human_approval()
REPORT = "ti.xcom_pull(task_ids='read_report')"


@dag(
    dag_id="promote",
    schedule=[CHALLENGER],
    catchup=False,
    max_active_runs=1,
    # A rejection fails its run on purpose; consecutive rejections must not pause the gate.
    max_consecutive_failed_dag_runs=0,
    default_args={**DEFAULT_ARGS, "retries": 1},
    params={
        "model": model_param(
            SETTINGS,
            "Registered model to gate (each detector family has its own champion). Empty: "
            f"the triggering `challenger` event's model, else {SETTINGS.model_name}.",
        ),
        "version": Param(
            None,
            type=["null", "string"],
            pattern=r"^(|\d+)$",
            title="Model version",
            description="Registered version to gate, e.g. 3. Empty: the version of the triggering "
            "`challenger` event, else the current `challenger` alias.",
        ),
        "override": Param(
            False,
            type="boolean",
            title="Promote even if the gate rejects it",
            description="Off: the gate decides. On: a rejected Model version is promoted anyway; needs "
            "Model version and Override reason, and is recorded on the version and in the gate report.",
        ),
        "override_reason": Param(
            None,
            type=["null", "string"],
            maxLength=500,
            title="Override reason",
            description="Why the version is promoted against the gate (required with the override). "
            "Empty: no override.",
        ),
    },
    tags=["vigil", "promotion"],
    description="Gate the challenger against the champion on frozen test sets; promote, reject, or "
    "promote by a person's override.",
    doc_md=__doc__,
)
def promote():
    with TaskGroup("gate", prefix_group_id=False, tooltip="challenger and champion on the same test sets"):

        @task
        def resolve_version(params: dict, triggering_asset_events=None, dag_run=None, ti=None) -> str:
            """The form's model and version, else the triggering `challenger` event's, else the serving
            model's `challenger` alias (the model name goes to XCom key ``model_name``); an override that
            cannot be done (no version, no reason, no right) fails here, before evaluating."""
            from tasks.promote.gate import model_to_gate, version_to_gate

            extras = [event.extra for events in (triggering_asset_events or {}).values() for event in events]
            ti.xcom_push(key="model_name", value=run(model_to_gate, SETTINGS, params, extras))
            return run(version_to_gate, SETTINGS, params, extras, dag_run.triggering_user_name)

        version = resolve_version()
        if SETTINGS.training.launcher == "docker":
            # Scoring two detectors needs the GPU: `python -m tasks.promote` in the trainer image.
            evaluated = container_job(
                "evaluate",
                [
                    "python",
                    "-m",
                    "tasks.promote",
                    "--model",
                    "{{ ti.xcom_pull(task_ids='resolve_version', key='model_name') }}",
                    "--version",
                    "{{ ti.xcom_pull(task_ids='resolve_version') }}",
                ],
                SETTINGS,
                execution_timeout=timedelta(hours=6),
            ).output
            version >> evaluated
        else:

            @task(execution_timeout=timedelta(hours=6))
            def evaluate(version: str, ti=None) -> dict:
                """Evaluate challenger and champion on the same frozen test sets; store and log the report."""
                from tasks.promote.gate import evaluate as run_gate
                from tasks.promote.gate import summary

                model_name = ti.xcom_pull(task_ids="resolve_version", key="model_name")
                return summary(run_gate(SETTINGS, version, model_name=model_name))

            evaluated = evaluate(version)

        @task
        def read_report(result) -> dict:
            """The gate's summary (from the container's last output line when it ran in one)."""
            from tasks.promote.gate import read_summary

            return read_summary(result)

        report = read_report(evaluated)

    with TaskGroup("outcome", prefix_group_id=False, tooltip="promote, or reject and fail the run"):

        @task.branch
        def decision(report: dict, params: dict) -> str:
            """Promote a passed gate (after a person's approval when the policy asks) or an override."""
            if report["decision"] == "promoted":
                return "approve" if HUMAN_APPROVAL else "promote_champion"
            return "promote_champion" if params.get("override") else "reject"

        @task(retries=0)
        def reject(report: dict) -> None:
            """Tag the version `rejected` with the reasons, then fail the run with them."""
            from tasks.promote.gate import reject as reject_version

            run(reject_version, SETTINGS, report)

        @task(outlets=[CHAMPION])
        def promote_champion(report: dict, params: dict, dag_run=None, outlet_events=None) -> dict:
            """Move `champion` to the challenger (the old one becomes `previous`), recording an override
            with its reason and user; emit the `champion` event."""
            from tasks.promote.gate import apply, override_request

            override = run(override_request, SETTINGS, params, dag_run.triggering_user_name)
            result = run(apply, SETTINGS, report, override=override)
            outlet_events[CHAMPION].extra = {
                "model_name": report["model_name"],
                "version": result["version"],
                "previous": result["previous"],
            }
            return result

        branch = decision(report)
        promoted = promote_champion(report)
        branch >> reject(report)
        if HUMAN_APPROVAL:
            from airflow.providers.standard.operators.hitl import ApprovalOperator

            approve = ApprovalOperator(
                task_id="approve",
                subject=f"Promote {{{{ {REPORT}['model_name'] }}}} version "
                f"{{{{ {REPORT}['challenger']['version'] }}}} to champion?",
                body="The gate passed. The report, per slice: [this run's Vigil tab]"
                "({{ ti.log_url.split('/dags/')[0] }}/vigil/runs/promote/{{ run_id | urlencode }}).",
            )
            branch >> approve >> promoted
        else:
            branch >> promoted


promote()
