"""
### promote — the promotion gate: challenger vs champion on the same frozen test sets

Runs when training registers a challenger (the `challenger` Asset), or by hand for any version.
`evaluate` (in the trainer image on the GPU when training runs in containers) scores the
challenger **and** the current champion on the newest snapshot's test split,
its `source=` and `generator=` slices (every earlier source and generator: no forgetting), the test
images the champion never saw, and the golden set if configured; the policy in `include/gate.yaml`
decides. The gate report (champion and challenger side by side per slice) is stored under
`reports/gate/<model>/v<version>/` and logged to the challenger's MLflow run; the task log states the
decision and every check.

* passed: `champion` moves to the challenger, the old champion becomes `previous`, and `promote`
  emits a `champion` Asset event (the version in its extra), which schedules `deploy`;
* failed: the version is tagged `rejected` with the reasons; no event.

With `human_approval: true` in the policy, a passed gate waits in **Required actions** for a person
to approve before the alias moves.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task

from tasks.settings import Settings

from vigil_common import CHALLENGER, CHAMPION, DEFAULT_ARGS, container_job, run

SETTINGS = Settings()


def _human_approval() -> bool:
    """Read from the policy file at parse time (cheap YAML), so the approval step shows in the graph."""
    from tasks.promote.policy import load_policy

    try:
        return load_policy(SETTINGS).human_approval
    except Exception:  # noqa: BLE001 - a broken policy fails the evaluate task with its message instead
        return False


HUMAN_APPROVAL = _human_approval()


@dag(
    dag_id="promote",
    schedule=[CHALLENGER],
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "retries": 1},
    params={
        "version": Param(
            "",
            type="string",
            pattern=r"^(|\d+)$",
            title="Model version",
            description="Registered version to gate. Empty = the one that triggered this run, "
            "else the current `challenger` alias.",
        ),
    },
    tags=["vigil", "promotion"],
    doc_md=__doc__,
)
def promote():
    @task
    def resolve_version(params: dict, triggering_asset_events=None) -> str:
        """The form's version, else the triggering `challenger` event's, else the `challenger` alias."""
        from tasks.promote.gate import version_to_gate

        extras = [event.extra for events in (triggering_asset_events or {}).values() for event in events]
        return run(version_to_gate, params.get("version"), extras, SETTINGS)

    version = resolve_version()
    if SETTINGS.training.launcher == "docker":
        # Scoring two detectors needs the GPU: `python -m tasks.promote` in the trainer image.
        evaluated = container_job(
            "evaluate",
            ["python", "-m", "tasks.promote", "--version", "{{ ti.xcom_pull(task_ids='resolve_version') }}"],
            SETTINGS,
            execution_timeout=timedelta(hours=6),
        ).output
        version >> evaluated
    else:

        @task(execution_timeout=timedelta(hours=6))
        def evaluate(version: str) -> dict:
            """Evaluate challenger and champion on the same frozen test sets; store and log the report."""
            from tasks.promote.gate import evaluate as run_gate
            from tasks.promote.gate import summary

            return summary(run_gate(SETTINGS, version))

        evaluated = evaluate(version)

    @task
    def read_report(result) -> dict:
        """The gate's summary (from the container's last output line when it ran in one)."""
        from tasks.promote.gate import read_summary

        return read_summary(result)

    @task.branch
    def decision(report: dict) -> str:
        passed = report["decision"] == "promoted"
        return ("approve" if HUMAN_APPROVAL else "promote_champion") if passed else "reject"

    @task
    def reject(report: dict) -> dict:
        """Tag the version `rejected` with the reasons."""
        from tasks.promote.gate import apply

        return apply(SETTINGS, report)

    @task(outlets=[CHAMPION])
    def promote_champion(report: dict, outlet_events=None) -> dict:
        """Move `champion` to the challenger (the old one becomes `previous`); emit the `champion` event."""
        from tasks.promote.gate import apply

        result = apply(SETTINGS, report)
        outlet_events[CHAMPION].extra = {
            "model_name": report["model_name"],
            "version": result["version"],
            "previous": result["previous"],
        }
        return result

    report = read_report(evaluated)
    branch = decision(report)
    promoted = promote_champion(report)
    branch >> reject(report)
    if HUMAN_APPROVAL:
        from airflow.providers.standard.operators.hitl import ApprovalOperator

        approve = ApprovalOperator(
            task_id="approve",
            subject="Promote {{ ti.xcom_pull(task_ids='read_report')['model_name'] }} version "
            "{{ ti.xcom_pull(task_ids='read_report')['challenger']['version'] }} to champion?",
            body="The gate passed. Report: {{ ti.xcom_pull(task_ids='read_report')['report_url'] }}",
        )
        branch >> approve >> promoted
    else:
        branch >> promoted


promote()
