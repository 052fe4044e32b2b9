"""The people's journeys, clicked through in a real browser (Debian's chromium via Playwright) against a
real ``airflow standalone`` running this repository's DAGs, a real MLflow server and a real store:

1. every manually triggered DAG's Trigger dialog submits with its defaults, and with filled values,
   and the run gets exactly that conf;
2. "trigger retraining manually": train_detector from its form with the defaults trains for real; its
   log has no ERROR line, keeps the trainer's levels and tells progress in lines; the Vigil tab links
   the MLflow run, whose tags link back; the (tiny) deadline alert is marked missed;
3. the gate promotes the first model by itself, shows a rejected challenger as a failed run with the
   reasons, per-slice bars and how to override; a person overrides it with a reason from the form,
   and the version, the report, the Vigil tab and the Models page say so.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from urllib.parse import quote

import pytest

from tests.helpers.browser import airflow_for_tests, chromium, login, open_trigger_dialog, trigger
from tests.helpers.journeys import journey_env, open_vigil_tab, run_api, run_path, task_states, wait_for_run

pytestmark = pytest.mark.slow

DAGS = ("collect_inbox", "curate", "train_detector", "promote", "deploy")
DEFAULTS = {
    "collect_inbox": {"max_images": None},
    "curate": {"retry_batches": []},
    "train_detector": {
        "profile": None,
        "snapshot": None,
        "epochs": None,
        "learning_rate": None,
        "lora_r": None,
        "reason": None,
    },
    "promote": {"model": None, "version": None, "override": False, "override_reason": None},
    "deploy": {"model": None, "version": None, "tune": True},
}
# dag_id -> (what a person fills in, the conf the run must get)
FILLED = {
    "collect_inbox": ({"max_images": 5}, {"max_images": 5}),
    "curate": ({"retry_batches": "inbox-a\ninbox-b"}, {"retry_batches": ["inbox-a", "inbox-b"]}),
    "train_detector": (
        {
            "profile": "tiny VLM (CPU, tests)",
            "snapshot": "v0001",
            "epochs": 2,
            "learning_rate": 0.0005,
            "reason": "B",
        },
        {
            "profile": "tiny",
            "snapshot": "v0001",
            "epochs": 2,
            "learning_rate": 0.0005,
            "lora_r": None,
            "reason": "B",
        },
    ),
    "promote": (
        {"version": "1", "override": True, "override_reason": "checked"},
        {"model": None, "version": "1", "override": True, "override_reason": "checked"},
    ),
    "deploy": ({"version": "1", "tune": False}, {"model": None, "version": "1", "tune": False}),
}
OVERRIDE_REASON = "generator B is new; QA checked 40 of its fakes by hand"
DEADLINE = "training within 3 s"  # VIGIL_TRAINING__DEADLINE_MINUTES=0.05: every training run misses it


@pytest.fixture(scope="module")
def world(tmp_path_factory, mlflow_server, demo_root, publish_demo):
    """Airflow standalone with the DAGs and the plugin, all DAGs paused (as after a fresh start), over a
    store with snapshot v0001 (generator A) and the journeys' gate policy."""
    from tasks.settings import Settings
    from tasks.storage import ObjectStore

    tmp = tmp_path_factory.mktemp("journeys")
    env = journey_env(tmp, mlflow_server, VIGIL_TRAINING__DEADLINE_MINUTES="0.05")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        settings = Settings()
        store = ObjectStore.from_settings(settings)
        publish_demo(store, demo_root / "demo_a")
        with airflow_for_tests(tmp / "airflow", env) as ui:
            for dag_id in DAGS:
                ui.wait_for_dag(dag_id)
            yield {"ui": ui, "settings": settings, "store": store, "mlflow": mlflow_server, "state": {}}


@pytest.fixture(scope="module")
def page(world):
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        tab = context.new_page()
        tab.set_default_timeout(30_000)
        login(tab, world["ui"].url, world["ui"].password)
        yield tab
        context.close()


def log_lines(page) -> list[str]:
    """The lines the task log viewer shows ("[time] LEVEL - message")."""
    return [line for line in page.locator("body").inner_text().splitlines() if re.match(r"^\[\d{4}-", line)]


def test_every_trigger_form_submits_with_its_defaults_and_with_filled_values(page, world):
    ui = world["ui"]
    dialog = open_trigger_dialog(page, ui.url, "train_detector")
    shown = dialog.inner_text()
    for what in ("Empty: the configured setup", "Empty: the config's data.snapshot", "Empty: none recorded"):
        assert what in shown  # each field says what leaving it empty means
    page.keyboard.press("Escape")

    created = []
    for dag_id in DAGS:
        run_id = trigger(page, ui.url, dag_id, {}, unpause=False)  # nothing typed in: the defaults
        created.append((dag_id, run_id))
        run = ui.api("GET", run_api(dag_id, run_id))
        assert run["conf"] == DEFAULTS[dag_id], dag_id
        assert run["state"] == "queued" and run["run_type"] == "manual"
        fields, conf = FILLED[dag_id]
        run_id = trigger(page, ui.url, dag_id, fields, unpause=False)
        created.append((dag_id, run_id))
        assert ui.api("GET", run_api(dag_id, run_id))["conf"] == conf, dag_id
    for dag_id, run_id in created:  # the DAGs stay paused: these runs never start; remove them
        ui.api("DELETE", run_api(dag_id, run_id))


def test_retraining_from_the_form_logs_at_the_right_level_and_links_mlflow(page, world):
    from mlflow import MlflowClient

    ui, mlflow_url = world["ui"], world["mlflow"]
    ui.api("PATCH", "/api/v2/dags/promote", {"is_paused": False})  # the gate follows training by itself
    run_id = trigger(page, ui.url, "train_detector", {}, unpause=True)
    run = wait_for_run(ui, "train_detector", run_id)
    assert run["state"] == "success", task_states(ui, "train_detector", run_id)
    assert run["conf"] == DEFAULTS["train_detector"]
    world["state"]["train_run"] = run_id

    # The train task's log, as a person reads it: the trainer's lines at their level, progress lines.
    page.goto(f"{ui.url}{run_path('train_detector', run_id)}/tasks/train")
    page.get_by_text(re.compile(r"epoch 1/\d+: ")).first.wait_for()
    lines = log_lines(page)
    levels = Counter(line.split("] ", 1)[1].split(" - ", 1)[0] for line in lines)
    assert levels["INFO"] >= 15 and levels["ERROR"] == 0 and levels["CRITICAL"] == 0, levels
    assert any("INFO - training job " in line for line in lines)  # the trainer's own lines, at INFO
    # Progress in lines: epochs with their loss and validation AUC (the Hugging Face trainer also tells
    # "progress: epoch 1/30 | step 1/60 (2%) | loss ... | samples/s | ETA ...").
    assert any(re.search(r"INFO - (progress: )?epoch \d+/\d+[:| ].*loss.*AUC", line) for line in lines)
    assert all(len(line) < 1500 and "\r" not in line for line in lines)  # no squashed progress bars
    page.get_by_role("combobox").filter(has_text="All Log Levels").click()
    page.get_by_role("option", name="ERROR").click()
    page.wait_for_url(re.compile(r"log_level=error"))
    page.wait_for_timeout(1000)
    assert log_lines(page) == []  # filtered to errors: nothing
    # The same log through the REST API (the source of both): no error record at all.
    entries = ui.api(
        "GET",
        run_api("train_detector", run_id) + "/taskInstances/train/logs/1?full_content=true",
    )["content"]
    assert not [e for e in entries if isinstance(e, dict) and e.get("level") in ("error", "critical")]

    # The Vigil tab: this run's version and the link to its MLflow run, which links back.
    frame = open_vigil_tab(page, ui.url, "train_detector", run_id)
    text = frame.locator("main").inner_text()
    assert "Training" in text and "v1 (alias challenger)" in text and "v0001" in text
    result = ui.api(
        "GET",
        run_api("train_detector", run_id) + "/taskInstances/train/xcomEntries/return_value",
    )["value"]
    client = MlflowClient(mlflow_url)
    mlflow_run = client.get_run(result["run_id"])
    link = frame.get_by_role("link", name=result["run_id"]).get_attribute("href")
    assert link == f"{mlflow_url}/#/experiments/{mlflow_run.info.experiment_id}/runs/{result['run_id']}"
    airflow_url = f"{ui.url}/dags/train_detector/runs/{quote(run_id, safe='')}"
    assert mlflow_run.data.tags["vigil.airflow_run_url"] == airflow_url
    assert client.get_experiment(mlflow_run.info.experiment_id).tags["mlflow.experimentKind"] == (
        "custom_model_development"
    )
    name = world["settings"].model_name
    assert client.get_model_version(name, "1").tags["airflow_run_url"] == airflow_url
    import mlflow

    mlflow.set_tracking_uri(mlflow_url)
    info = mlflow.models.get_model_info(f"models:/{result['model_id']}")
    assert info.signature.inputs.input_names() == ["image"] and info.saved_input_example_info
    assert {m.key for m in mlflow.get_logged_model(result["model_id"]).metrics} >= {
        "test_roc_auc",
        "threshold",
    }

    # The deadline alert: marked missed on the run's page, and the triggerer logged why.
    page.goto(ui.url + run_path("train_detector", run_id))
    page.get_by_text(DEADLINE).wait_for()
    assert page.get_by_text("Missed", exact=True).count() >= 1
    expected = (
        f"DEADLINE MISSED: train_detector run {run_id} (training) is not finished 3 s after it was queued"
    )
    log = ui.home / "standalone.log"
    for _ in range(60):
        if expected in log.read_text(errors="replace"):
            break
        time.sleep(1)
    assert expected in log.read_text(errors="replace")


def test_the_gate_shows_a_rejection_as_such_and_a_person_overrides_it_with_a_reason(
    page, world, demo_root, publish_demo, untrained_dir, register
):
    from playwright.sync_api import expect

    from tasks.registry import CHAMPION, Registry

    ui, settings = world["ui"], world["settings"]
    assert "train_run" in world["state"], "the training journey must have run"
    registry = Registry(settings)
    # The challenger event of the training run scheduled the gate: the first model meets the floors.
    deadline = time.monotonic() + 600
    while (
        not (runs := ui.api("GET", "/api/v2/dags/promote/dagRuns")["dag_runs"])
        and time.monotonic() < deadline
    ):
        time.sleep(3)
    [first] = runs
    assert first["run_type"] == "asset_triggered"
    assert wait_for_run(ui, "promote", first["dag_run_id"])["state"] == "success"
    assert registry.aliases()[CHAMPION] == "1"

    # Generator B arrives (snapshot v0002) and a challenger that learned nothing is registered.
    publish_demo(world["store"], demo_root / "demo_b")
    challenger = register(untrained_dir, settings, "v0002")
    assert challenger == "2"

    # A person gates it from the form: rejected, and the run says so instead of a plain green.
    run_id = trigger(page, ui.url, "promote", {"version": "2"})
    run = wait_for_run(ui, "promote", run_id)
    assert run["state"] == "failed"
    assert task_states(ui, "promote", run_id)["reject"] == "failed"
    page.goto(ui.url + run_path("promote", run_id))
    expect(page.get_by_text("Failed", exact=True).first).to_be_visible()  # the run's state, in red
    frame = open_vigil_tab(page, ui.url, "promote", run_id)
    assert frame.locator("h2").first.inner_text() == "Gate of version 2 rejected"
    reasons = frame.locator("ul.reasons").inner_text()
    assert re.search(r"new data \(n=16\): roc_auc [\d.]+ must be >= champion [\d.]+ \+ 0\.5", reasons)
    assert "To promote it anyway" in frame.locator(".callout").inner_text()
    bars = frame.locator('svg.slice-bars g.slice[data-slice="new data"]')
    assert bars.locator("rect.champion").count() == 1 and bars.locator("rect.challenger").count() == 1
    assert bars.get_attribute("data-status") == "failed"
    assert registry.aliases()[CHAMPION] == "1"

    # The override, from the same form: version, switch, reason.
    fields = {"version": "2", "override": True, "override_reason": OVERRIDE_REASON}
    run_id = trigger(page, ui.url, "promote", fields)
    assert wait_for_run(ui, "promote", run_id)["state"] == "success"
    assert registry.aliases()[CHAMPION] == "2"
    tags = registry.get("2").tags
    assert tags["gate_override_reason"] == OVERRIDE_REASON and tags["gate_override_by"] == "admin"
    frame = open_vigil_tab(page, ui.url, "promote", run_id)
    assert frame.locator("h2").first.inner_text() == "Gate of version 2 overridden"
    assert "Promoted by override of admin" in frame.locator("p.override").inner_text()
    assert OVERRIDE_REASON in frame.locator("p.override").inner_text()

    # The Models page: version 2 promoted by override, with who and why, and its gate's bars.
    page.goto(ui.url + "/plugin/vigil-models")
    models = page.frame_locator("iframe")
    row = models.locator("tr#v2")
    assert "promoted by override" in row.inner_text() and OVERRIDE_REASON in row.inner_text()
    assert "champion" in row.locator(".badge.champion").inner_text()
    gate = models.locator("section#gate-v2")
    assert "overridden" in gate.locator("h2").inner_text()
    assert gate.locator("svg.slice-bars g.slice").count() >= 4
