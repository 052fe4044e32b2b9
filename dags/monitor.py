"""
### monitor — drift, accuracy and the review queue, from the prediction log

Scheduled by `schedule` in `include/monitor.yaml` (and on demand; `vigil monitor` is the same run).
Each run turns the prediction-log parts serving wrote since the last run into windows (whole parts,
at least `window.min_rows` rows; the cost follows the new rows, not the log) and, per model version
and per source:

* **score drift** — P(fake) against the version's reference (its scores on its own snapshot's test
  split): Kolmogorov-Smirnov *and* normed Wasserstein; **verdict drift** — the share of `fake`
  verdicts (z-test and a least change); **embedding drift** — Evidently's domain classifier on the
  detector's image embeddings;
* **estimated accuracy** without labels (confidence-based: calibrated P(fake)) and **measured
  accuracy** on trusted labels (review decisions, trusted feedback) with a Wilson interval.

An Evidently report per window (HTML + JSON) goes to `monitor/windows/`, linked from **Browse →
Monitoring**; the task log states each group's verdict with its numbers.

* **announce_drift**: a group drifting in `alert.consecutive_windows` consecutive windows raises a
  `drift_alert` Asset event (window, metrics, reason) and opens a review campaign: images of that
  window join the review queue (**Browse → Review**). Drift does not retrain by itself.
* **announce_accuracy_drop**: labeled traffic shows an accuracy drop on the champion
  (`retrain.accuracy_drop`): an `accuracy_drop` Asset event, which `train_detector` may listen on.

See docs/monitoring.md.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Metadata, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from tasks.monitor.config import load_monitor_config
from tasks.settings import Settings

from vigil_common import ACCURACY_DROP, DEFAULT_ARGS, DRIFT_ALERT, run

SETTINGS = Settings()
CONFIG = load_monitor_config(SETTINGS)  # a malformed file fails the import, naming the field
START_DATE = datetime(2025, 1, 1, tzinfo=UTC)


@dag(
    dag_id="monitor",
    description="Drift, accuracy and the review queue from the prediction log; drift opens a review campaign.",
    schedule=CONFIG.schedule,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    max_consecutive_failed_dag_runs=5,
    default_args={**DEFAULT_ARGS, "execution_timeout": timedelta(hours=1)},
    tags=["vigil", "monitoring"],
    doc_md=__doc__,
)
def monitor():
    @task
    def monitor_windows() -> dict:
        """Test the new windows of the prediction log, fill the review queue, count the new labels."""
        from tasks.monitor.run import monitor as run_monitor

        return run(run_monitor)

    @task(outlets=[DRIFT_ALERT])
    def announce_drift(summary: dict):
        """One `drift_alert` event per alert (window, metrics, reason); skipped when there is none."""
        from tasks.monitor.run import alert_events

        events = alert_events(summary)
        if not events:
            raise AirflowSkipException("no drift alert in this run")
        for extra in events:
            yield Metadata(DRIFT_ALERT, extra=extra)

    @task(outlets=[ACCURACY_DROP])
    def announce_accuracy_drop(summary: dict):
        """An `accuracy_drop` event when labeled traffic newly shows one on the champion; else skipped."""
        from tasks.monitor.run import accuracy_drop_event

        extra = accuracy_drop_event(summary)
        if extra is None:
            raise AirflowSkipException(f"no new accuracy drop: {summary['accuracy'].get('reason')}")
        yield Metadata(ACCURACY_DROP, extra=extra)

    summary = monitor_windows()
    announce_drift(summary)
    announce_accuracy_drop(summary)


monitor()
