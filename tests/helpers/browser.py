"""A real browser (Debian's chromium via Playwright) against a real ``airflow standalone``: the way a
person meets the UI. Selectors are those of Airflow 3.3's UI (checked in chromium).

* :func:`airflow_for_tests` starts standalone with this repository's DAGs and plugins;
* :func:`chromium` launches the browser; :func:`login` goes through Airflow's own login form;
* :func:`trigger` opens a DAG's Trigger dialog, fills fields (others keep their defaults), submits,
  and returns the new run id.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]


@dataclass
class AirflowUI:
    url: str
    password: str
    home: Path

    def token(self) -> str:
        return api(self.url, None, "POST", "/auth/token", {"username": "admin", "password": self.password})[
            "access_token"
        ]

    def api(self, method: str, path: str, body: dict | None = None):
        return api(self.url, self.token(), method, path, body)

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        """The DAG processor parses the repository's DAGs after start-up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.api("GET", f"/api/v2/dags/{dag_id}") is not None:
                return
            time.sleep(1)
        raise TimeoutError(f"DAG {dag_id} not parsed after {timeout:.0f}s")


def api(url: str, token: str | None, method: str, path: str, body: dict | None = None):
    """One REST call; None for 404, the parsed JSON otherwise (other errors raise)."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, method=method, headers=headers, data=data)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


@contextmanager
def airflow_for_tests(home: Path, env: dict[str, str]):
    """``airflow standalone`` with this repository's DAGs and plugins and ``env``; yields an :class:`AirflowUI`."""
    from tasks import stack

    service = stack.start_airflow(
        home,
        port=stack.free_port(),
        env={
            **env,
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        },
    )
    try:
        stack.wait_healthy(service, timeout=240)
        password = None
        for _ in range(120):
            password = stack.airflow_admin_password(home)
            if password:
                break
            time.sleep(0.5)
        yield AirflowUI(service.url, password, home)
    finally:
        stack.stop(service, timeout=5)


@contextmanager
def chromium():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def login(page, base_url: str, password: str, username: str = "admin") -> None:
    """Log in through Airflow's login form."""
    page.goto(f"{base_url}/auth/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url, timeout=30_000)


def open_trigger_dialog(page, base_url: str, dag_id: str):
    from playwright.sync_api import expect

    page.goto(f"{base_url}/dags/{dag_id}")
    page.get_by_role("button", name="Trigger Dag").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("heading", name=re.compile(r"Trigger Dag"))).to_be_visible()
    dialog.get_by_test_id("trigger-dag-submit").wait_for()
    page.wait_for_timeout(300)  # the form's validation settles
    return dialog


def set_field(page, dialog, name: str, value) -> None:
    """Fill one Param field (the form's labels are not tied to their inputs: use the field names)."""
    control = dialog.locator(f'[name="element_{name}"]').first
    kind = control.evaluate("e => e.type")
    if kind == "hidden":  # an enum: a select; ``value`` is the option's label
        dialog.locator(f"#element_{name}").click()
        page.get_by_role("option", name=str(value), exact=True).click()
    elif kind == "checkbox":  # a boolean: a switch
        if control.is_checked() != bool(value):
            dialog.locator(f'[id="switch:element_{name}"]').click()
    else:
        control.fill("" if value is None else str(value))


def trigger(
    page, base_url: str, dag_id: str, fields: dict | None = None, *, unpause: bool | None = None
) -> str:
    """Trigger ``dag_id`` from its page with ``fields`` filled; returns the new run id."""
    from playwright.sync_api import expect

    dialog = open_trigger_dialog(page, base_url, dag_id)
    for name, value in (fields or {}).items():
        set_field(page, dialog, name, value)
    unpause_box = dialog.get_by_text(re.compile(r"^Unpause .* on trigger$"))
    if unpause is not None and unpause_box.count():
        checkbox = dialog.get_by_role("checkbox", name=re.compile(r"Unpause"))
        if checkbox.is_checked() != unpause:
            unpause_box.click()
    submit = dialog.get_by_test_id("trigger-dag-submit")
    expect(submit).to_be_enabled()
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith(f"/api/v2/dags/{dag_id}/dagRuns")
    ) as info:
        submit.click()
    response = info.value
    if not response.ok:
        raise AssertionError(f"trigger of {dag_id} failed: {response.status} {response.text()[:500]}")
    run_id = response.json()["dag_run_id"]
    page.wait_for_url(re.compile(rf"/dags/{re.escape(dag_id)}/runs/"), timeout=15_000)
    assert unquote(page.url.rsplit("/runs/", 1)[1].split("/")[0].split("?")[0]) == run_id
    return run_id
