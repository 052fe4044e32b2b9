"""The world the journey tests walk through: a store with a published demo snapshot, a gate policy whose
outcome is known in advance, and the Vigil settings of the Airflow that runs the DAGs.

The policy (``gate.journeys.yaml``) lets any first model through its floors, and asks a challenger to
beat the champion on the test images new since the champion's snapshot by 0.5 AUC, which a model with
random weights cannot: a rejection is certain, and its reason is one line.

The Airflow helpers wait for runs and open a run's "Vigil" tab the way a person does.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[2]
POLICY_FILE = "gate.journeys.yaml"
POLICY = """\
floors: {roc_auc: 0.0, balanced_accuracy: 0.0, max_ece: 1.0}
slices: {metric: roc_auc, min_samples: 10, max_regression: 1.0}
new_data: {min_improvement: 0.5}
robustness: {max_drop: 1.0}
"""


def include_with_policy(folder: Path) -> Path:
    """A copy of include/ (links) with the journeys' gate policy next to the real ones."""
    folder.mkdir(parents=True, exist_ok=True)
    for item in (REPO / "include").iterdir():
        (folder / item.name).symlink_to(item)
    (folder / POLICY_FILE).write_text(POLICY)
    return folder


def journey_env(tmp: Path, mlflow_uri: str, **overrides: str) -> dict[str, str]:
    """Vigil's settings for the Airflow of the journeys (and for the test process that checks them)."""
    return {
        "VIGIL_HOME": str(tmp / "home"),
        "VIGIL_STORE_URL": (tmp / "store").as_uri(),
        "VIGIL_INCLUDE_DIR": str(include_with_policy(tmp / "include")),
        "VIGIL_PROMOTION__POLICY_FILE": POLICY_FILE,
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "VIGIL_MODEL_NAME": f"journeys-{uuid.uuid4().hex[:8]}",
        "VIGIL_TRAINING__EXPERIMENT": f"journeys-{uuid.uuid4().hex[:8]}",
        "AIRFLOW_VAR_VIGIL_MLFLOW_UI_URL": mlflow_uri,
        **overrides,
    }


def run_path(dag_id: str, run_id: str) -> str:
    """A run's page in the Airflow UI."""
    return f"/dags/{dag_id}/runs/{quote(run_id, safe='')}"


def run_api(dag_id: str, run_id: str) -> str:
    """A run in Airflow's REST API."""
    return f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"


def wait_for_run(ui, dag_id: str, run_id: str, timeout: float = 900) -> dict:
    """The run once it is finished (success or failed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = ui.api("GET", run_api(dag_id, run_id))
        if run and run["state"] in ("success", "failed"):
            return run
        time.sleep(3)
    raise TimeoutError(f"{dag_id} run {run_id} did not finish within {timeout:.0f}s")


def task_states(ui, dag_id: str, run_id: str) -> dict[str, str]:
    found = ui.api("GET", run_api(dag_id, run_id) + "/taskInstances")["task_instances"]
    return {ti["task_id"]: ti["state"] for ti in found}


def open_vigil_tab(page, base_url: str, dag_id: str, run_id: str):
    """The run's page in the Airflow UI, then its "Vigil" tab; returns the tab's frame."""
    page.goto(base_url + run_path(dag_id, run_id))
    page.locator('a[href$="/plugin/vigil-run"]').click()
    frame = page.frame_locator("iframe")
    frame.locator("h1").wait_for()
    return frame
