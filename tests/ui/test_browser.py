"""The pages in a real browser (Debian's chromium via Playwright) against a real Airflow api-server
(``airflow standalone`` of the embedded stack, loading this repository's plugins/), with real reports:
a curated batch, two registered versions of the trained tiny detector and a gate report."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.helpers.ui import curate_batch, gate_report, write_gate_report

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
MLFLOW_UI = "http://mlflow.example.test:5000"  # the browser-facing URL, from the Airflow variable


def register(trained_dir: Path, settings, reason: str) -> str:
    """Register the trained tiny detector as a new version (challenger), as training does; its version."""
    import mlflow

    from tasks.registry import use_mlflow
    from tasks.train.tracking import log_and_register

    use_mlflow(settings)
    experiment = mlflow.set_experiment("vigil-ui-tests")
    with mlflow.start_run(experiment_id=experiment.experiment_id):
        result = log_and_register(
            trained_dir,
            settings,
            {"snapshot": "v0001", "profile": "tiny", "method": "full", "reason": reason},
            reason,
        )
    return result["version"]


@pytest.fixture(scope="module")
def airflow_ui(request, tmp_path_factory, mlflow_server):
    """Airflow standalone with the plugin, a store with a curated batch and gate reports, a registry with
    a champion and a challenger. Yields what the tests need to know."""
    from tasks import stack
    from tasks.registry import Registry
    from tasks.settings import Settings
    from tasks.storage import ObjectStore

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    tmp = tmp_path_factory.mktemp("ui")
    env = {
        "VIGIL_HOME": str(tmp / "home"),
        "VIGIL_STORE_URL": (tmp / "store").as_uri(),
        "MLFLOW_TRACKING_URI": mlflow_server,
        "VIGIL_MODEL_NAME": f"ui-{uuid.uuid4().hex[:8]}",
    }
    home = tmp / "airflow"
    # Start Airflow first: it becomes healthy while the detector trains and the reports are made.
    service = stack.start_airflow(
        home,
        port=stack.free_port(),
        env={
            **env,
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW_VAR_VIGIL_MLFLOW_UI_URL": MLFLOW_UI,
        },
    )
    try:
        settings = Settings(
            home=env["VIGIL_HOME"],
            store_url=env["VIGIL_STORE_URL"],
            mlflow_tracking_uri=mlflow_server,
            model_name=env["VIGIL_MODEL_NAME"],
        )
        store = ObjectStore.from_settings(settings)
        batch_id = curate_batch(store, settings)
        trained_dir = request.getfixturevalue("trained_dir")
        first = register(trained_dir, settings, "first model")
        Registry(settings).promote(first, "first model: no champion to beat")
        write_gate_report(
            store,
            gate_report(
                settings.model_name, {"version": first, "run_id": "r1", "snapshot": "v0001"}, None, "promoted"
            ),
        )
        second = register(trained_dir, settings, "retrained on new batches")
        client = Registry(settings).client
        client.set_model_version_tag(
            settings.model_name,
            second,
            "inference",
            json.dumps({"batch_size": 16, "dtype": "float32"}, separators=(",", ":")),
        )
        write_gate_report(
            store,
            gate_report(
                settings.model_name,
                {"version": second, "run_id": "r2", "snapshot": "v0002"},
                {"version": first, "run_id": "r1", "snapshot": "v0001"},
                "rejected",
            ),
        )
        stack.wait_healthy(service, timeout=240)
        password = None
        for _ in range(60):
            password = stack.airflow_admin_password(home)
            if password:
                break
            time.sleep(0.5)
        yield {
            "url": service.url,
            "password": password,
            "batch_id": batch_id,
            "champion": first,
            "challenger": second,
            "model_name": settings.model_name,
            "store": store,
        }
    finally:
        stack.stop(service, timeout=5)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser, airflow_ui):
    """A browser tab logged in through Airflow's own login form, starting from a Vigil page."""
    context = browser.new_context()
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    tab.goto(airflow_ui["url"] + "/vigil/data-quality")
    assert "/auth/login" in tab.url  # sent to the login page first
    tab.fill("input[name=username]", "admin")
    tab.fill("input[name=password]", airflow_ui["password"])
    tab.click("button[type=submit]")
    tab.wait_for_url("**/vigil/data-quality")  # and back to the page after logging in
    yield tab
    context.close()


def test_pages_are_not_served_without_the_airflow_login(browser, airflow_ui):
    url, batch_id = airflow_ui["url"], airflow_ui["batch_id"]
    context = browser.new_context()
    try:
        tab = context.new_page()
        for path in (
            "/vigil/models",
            f"/vigil/data-quality/{batch_id}",
            f"/vigil/data-quality/{batch_id}/docs/index.html",
        ):
            response = tab.goto(url + path)
            assert "/auth/login" in tab.url, path
            assert batch_id not in tab.content() and "Gate report" not in tab.content()
            assert response.ok  # the login page itself
        # A forged token is no login either.
        context.add_cookies([{"name": "_token", "value": "forged.jwt.token", "url": url}])
        tab.goto(url + "/vigil/models")
        assert "/auth/login" in tab.url
    finally:
        context.close()
    # API clients get a status, not a redirect.
    request = urllib.request.Request(url + "/vigil/data-quality", headers={"Accept": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401


def test_models_page_shows_champion_challenger_and_the_gate_report_per_slice(page, airflow_ui):
    url, champion, challenger = airflow_ui["url"], airflow_ui["champion"], airflow_ui["challenger"]
    page.goto(url + "/vigil/models")
    assert page.locator(f"tr#v{champion} .badge.champion").inner_text() == "champion"
    assert page.locator(f"tr#v{challenger} .badge.challenger").inner_text() == "challenger"
    challenger_row = page.locator(f"tr#v{challenger}").inner_text()
    assert (
        "batch_size=16" in challenger_row
        and "dtype=float32" in challenger_row
        and "rejected" in challenger_row
    )
    run_link = (
        page.locator(f"tr#v{challenger}").get_by_role("link", name="run", exact=True).get_attribute("href")
    )
    assert run_link.startswith(MLFLOW_UI + "/#/experiments/") and "/runs/" in run_link

    gate = page.locator(f"section#gate-v{challenger}")
    assert "rejected" in gate.locator("h2").inner_text()
    assert "roc_auc 0.93 < champion 0.95" in gate.locator("ul.reasons").inner_text()
    slice_row = gate.locator("table.slices tbody tr", has_text="generator=A")
    cells = slice_row.locator("td").all_inner_texts()
    assert cells[:3] == ["v0002/test", "generator=A", "120"]
    assert cells[3:6] == ["0.950", "0.930", "-0.020"]  # roc_auc: champion | challenger | delta
    assert "worse" in slice_row.locator("td").nth(5).get_attribute("class")

    gate.get_by_role("link", name="HTML").click()
    page.wait_for_url(f"**/vigil/models/{challenger}/gate/report.html")
    assert page.locator("h1").inner_text() == f"Gate report v{challenger}: rejected"


def test_pages_are_reachable_from_the_airflow_ui(page, airflow_ui):
    """The Browse menu entries and the "Vigil" tab of a DAG run (that run's page) show inside Airflow's UI."""
    url = airflow_ui["url"]
    page.goto(url + "/plugin/vigil-models")
    assert page.frame_locator("iframe").locator("h1").inner_text().startswith("Models")

    token = _token(url, airflow_ui["password"])
    for _ in range(60):  # the DAG processor parses the repository's DAGs after start-up
        if _api(url, token, "GET", "/api/v2/dags/curate") is not None:
            break
        page.wait_for_timeout(1000)
    run_id = f"manual__ui_{uuid.uuid4().hex[:6]}"
    _api(url, token, "POST", "/api/v2/dags/curate/dagRuns", {"logical_date": None, "dag_run_id": run_id})
    page.goto(f"{url}/dags/curate/runs/{run_id}")
    page.locator('a[href$="/plugin/vigil-run"]').click()
    frame = page.frame_locator("iframe")
    # The tab shows that run (still queued: the DAG is paused), not a generic page.
    assert frame.locator("h1").inner_text().startswith(f"curate run {run_id}")
    assert "No result (yet): curate_batches is" in frame.locator("main").inner_text()
    frame.get_by_role("link", name="Data quality").click()  # the page's own navigation
    frame.locator(f"tr#{airflow_ui['batch_id']}").wait_for()


def _token(url: str, password: str) -> str:
    return _api(url, None, "POST", "/auth/token", {"username": "admin", "password": password})["access_token"]


def _api(url: str, token: str | None, method: str, path: str, body: dict | None = None):
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(
        url + path,
        method=method,
        headers=headers,
        data=json.dumps(body).encode() if body is not None else None,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def test_a_failed_run_is_explained_by_the_end_of_its_task_log(airflow_ui, capsys):
    """What `make demo` prints when a run fails (here, because this module already runs an Airflow with
    the DAGs): a version from the form that does not exist fails `promote` at once, and says so."""
    from tasks.demo.run import explain_failure
    from tasks.stack.airflow_client import AirflowClient

    client = AirflowClient(airflow_ui["url"], "admin", airflow_ui["password"])
    client.wait_for_dags(["promote"])
    client.unpause("promote")
    run_id = client.trigger("promote", conf={"version": "999999"})
    run = client.wait_for_run("promote", run_id, timeout=300)
    assert run["state"] == "failed"
    states = {
        ti["task_id"]: (ti["state"], ti["try_number"]) for ti in client.task_instances("promote", run_id)
    }
    assert states["resolve_version"] == ("failed", 1)  # not retried: a missing version stays missing

    explain_failure(client, "promote", run)
    printed = capsys.readouterr().out
    assert "resolve_version failed (try 1); end of its log:" in printed
    assert f"{airflow_ui['model_name']} has no version '999999'" in printed
