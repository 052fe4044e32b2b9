"""Monitoring and review in a real browser (Debian's chromium via Playwright) against a real ``airflow
standalone`` with this repository's plugin, offline (only the loopback address is reachable), after a real
monitoring run raised a drift alert; and the review JSON API's authorisation against the same server.

A reviewer (Airflow role ``user``) opens Browse → Review, labels an image fake; the image is then in the
inbox as a trusted label, and the decision is recorded with the reviewer's Airflow user name. A viewer
sees the queue but cannot decide. Browse → Monitoring shows the charts, the alert and the window's
Evidently report, which renders without any request leaving the machine."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

import pytest
import requests

from tests.helpers.browser import airflow_for_tests, chromium, login
from tests.helpers.monitor import Stream, monitored_store, png

pytestmark = pytest.mark.slow

USERS = "admin:admin,reviewer:user,viewer:viewer"  # simple auth manager: name:role


def item(store, item_id: str, colour, reasons, p_fake: float, claims=()) -> dict:
    from tasks.review.candidates import keep_candidate

    return {
        "item_id": item_id,
        "prediction_id": item_id,
        "reasons": list(reasons),
        "image_key": keep_candidate(store, png(colour, side=256), "png"),
        "p_fake": p_fake,
        "threshold": 0.5,
        "verdict": "fake" if p_fake >= 0.5 else "real",
        "model_name": "vigil-detector",
        "model_version": "1",
        "source": "web",
        "predicted_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "image_sha256": "0" * 64,
        "window_id": None,
        "campaign": None,
        "claims": list(claims),
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory, mlflow_server):
    """A monitoring run with a drift alert, three waiting review items, then Airflow on that store."""
    from tasks.monitor.config import MonitorConfig
    from tasks.review import queue
    from tasks.storage import ObjectStore

    tmp = tmp_path_factory.mktemp("monitor-ui")
    settings, store, model = monitored_store(tmp, mlflow_server)
    stream = Stream(settings, store, model, MonitorConfig())
    for shift in (0, 0, 0.3, 0.3):
        summary = stream.add(shift_share=shift)
    [alert] = summary["alerts"]
    items = [
        item(
            store,
            "pred-claim",
            (220, 40, 40),
            ["claim"],
            0.12,
            [{"claimed_label": "fake", "client": "ip:9f", "time": "t"}],
        ),
        item(store, "pred-near", (40, 220, 40), ["near_threshold"], 0.53),
        item(store, "pred-audit", (40, 40, 220), ["audit"], 0.03),
    ]
    originals = {i["item_id"]: store.read_bytes(i["image_key"]) for i in items}
    queue.enqueue(store, items, MonitorConfig().review)
    env = {
        "VIGIL_HOME": str(settings.home),
        "VIGIL_STORE_URL": settings.store_url,
        "VIGIL_INBOX": settings.inbox,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": USERS,
    }
    with airflow_for_tests(tmp / "airflow", env) as ui:
        passwords = json.loads((ui.home / "simple_auth_manager_passwords.json.generated").read_text())
        yield {
            "ui": ui,
            "store": store,
            "inbox": ObjectStore(settings.inbox),
            "alert": alert,
            "originals": originals,
            "passwords": passwords,
        }


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


def offline_tab(browser, stack, username: str):
    """A logged-in tab that reaches only the loopback address; ``blocked`` lists what it tried."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    blocked: list[str] = []

    def only_loopback(route):
        host = urlparse(route.request.url).hostname or ""
        if route.request.url.startswith(("data:", "about:", "blob:")) or host in (
            "127.0.0.1",
            "localhost",
            "::1",
        ):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_loopback)
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    login(tab, stack["ui"].url, stack["passwords"][username], username=username)
    return context, tab, blocked


def token(stack, username: str) -> str:
    response = requests.post(
        stack["ui"].url + "/auth/token",
        json={"username": username, "password": stack["passwords"][username]},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()["access_token"]


def test_a_reviewer_labels_an_image_in_the_browser_and_it_lands_in_the_inbox(browser, stack):
    url, store, inbox = stack["ui"].url, stack["store"], stack["inbox"]
    context, page, blocked = offline_tab(browser, stack, "reviewer")
    try:
        page.goto(url + "/")
        page.get_by_role("button", name="Browse").click()
        page.get_by_role("menuitem", name="Review").click()
        page.wait_for_url("**/plugin/vigil-review")
        frame = page.frame_locator("iframe")
        card = frame.locator("li#item-pred-near")
        card.wait_for()
        # The queue in review order: the claim first, then near the threshold, then the audit sample.
        order = frame.locator("ul.review li").evaluate_all("els => els.map(e => e.dataset.item)")
        assert order == ["pred-claim", "pred-near", "pred-audit"]
        assert "claimed fake by ip:9f" in frame.locator("li#item-pred-claim").inner_text()
        facts = card.inner_text()
        assert "0.530" in facts and "near_threshold" in facts and "v1" in facts and "model says fake" in facts
        thumbnail = card.locator("img")
        thumbnail.evaluate("img => img.decode()")
        assert thumbnail.evaluate("img => img.naturalWidth") > 0
        assert frame.locator("#reviewer").inner_text() == "reviewer"

        card.get_by_role("button", name="Fake").click()
        notice = frame.locator("#notice")
        notice.wait_for()
        assert "reviewer decided fake on pred-near" in notice.inner_text()
        assert "review/1_fake/pred-near.png" in notice.inner_text()
        assert frame.locator("li#item-pred-near").count() == 0
        assert (
            frame.locator('table.decisions tr[data-item="pred-near"] td.reviewer').inner_text() == "reviewer"
        )
        assert blocked == []
    finally:
        context.close()

    # What a person checks: the image is in the inbox as a trusted fake, the decision names the reviewer.
    assert inbox.read_bytes("review/1_fake/pred-near.png") == stack["originals"]["pred-near"]
    record = store.read_json("review/decided/pred-near.json")
    assert record["reviewer"] == "reviewer" and record["decision"] == "fake" and record["label"] == "fake"
    assert datetime.fromisoformat(record["decided_at"]) > datetime.now(UTC) - timedelta(minutes=5)
    assert store.read_json(f"review/decisions/date={record['decided_at'][:10]}/pred-near.json") == record


def test_a_viewer_sees_the_queue_but_cannot_decide(browser, stack):
    url = stack["ui"].url
    context, page, _ = offline_tab(browser, stack, "viewer")
    try:
        page.goto(url + "/vigil/review")
        page.locator("li#item-pred-audit").wait_for()
        assert page.locator("form.decide").count() == 0
        assert "deciding needs the right to trigger train_detector" in page.locator("main").inner_text()
        # Posting the form anyway (with the page's own origin) is refused.
        response = page.request.post(
            url + "/vigil/review/pred-audit/decision", form={"label": "real"}, headers={"Origin": url}
        )
        assert response.status == 403 and "may not decide" in response.text()
    finally:
        context.close()
    assert not stack["store"].exists("review/decided/pred-audit.json")


def test_the_monitoring_page_shows_the_alert_charts_and_the_evidently_report_offline(browser, stack):
    url, alert = stack["ui"].url, stack["alert"]
    context, page, blocked = offline_tab(browser, stack, "viewer")
    try:
        page.goto(url + "/")
        page.get_by_role("button", name="Browse").click()
        page.get_by_role("menuitem", name="Monitoring").click()
        page.wait_for_url("**/plugin/vigil-monitoring")
        frame = page.frame_locator("iframe")
        row = frame.locator(f'tr[id="alert-{alert["alert_id"]}"]')
        row.wait_for()
        assert "drifting in 2 consecutive windows" in row.inner_text()
        for chart in ("score-chart", "drift-chart", "accuracy-chart", "volume-chart", "histogram-chart"):
            box = frame.locator(f"svg#{chart}").bounding_box()
            assert box and box["height"] > 50, chart
        assert frame.locator("svg#score-chart circle.point").count() == 2  # the two drifting windows
        assert frame.locator("#latest-status").inner_text() == "drifting"

        page.goto(f"{url}/vigil/monitoring")
        with page.expect_response(lambda r: r.url.endswith("/report.html")) as opened:
            page.locator(f'tr[id="w-{alert["window_id"]}"] a.report').click()
        response = opened.value
        assert response.status == 200 and response.headers["content-security-policy"].startswith("sandbox")
        page.wait_for_load_state("load")
        page.wait_for_function("() => document.body.innerText.includes('Drift')", timeout=30_000)
        assert blocked == []  # Evidently's report is self-contained
    finally:
        context.close()


def test_the_review_api_needs_a_login_and_the_right_to_decide(stack):
    url, store = stack["ui"].url, stack["store"]
    api = url + "/vigil/api/review"
    assert requests.get(api + "/queue", timeout=30).status_code == 401
    assert requests.post(api + "/pred-audit/decision", json={"label": "real"}, timeout=30).status_code == 401

    viewer = {"Authorization": f"Bearer {token(stack, 'viewer')}"}
    listed = requests.get(api + "/queue", headers=viewer, timeout=30)
    assert listed.status_code == 200 and "pred-audit" in [i["item_id"] for i in listed.json()["items"]]
    refused = requests.post(api + "/pred-audit/decision", json={"label": "real"}, headers=viewer, timeout=30)
    assert refused.status_code == 403 and refused.json()["error"] == "forbidden"

    reviewer = {"Authorization": f"Bearer {token(stack, 'reviewer')}"}
    form = requests.post(api + "/pred-audit/decision", data={"label": "real"}, headers=reviewer, timeout=30)
    assert form.status_code == 415
    bad = requests.post(api + "/pred-audit/decision", json={"label": "maybe"}, headers=reviewer, timeout=30)
    assert bad.status_code == 422 and "real, fake, skip" in bad.json()["message"]
    big = requests.post(
        api + "/pred-audit/decision", json={"label": "x" * 10_000}, headers=reviewer, timeout=30
    )
    assert big.status_code == 413
    missing = requests.post(api + "/nope/decision", json={"label": "real"}, headers=reviewer, timeout=30)
    assert missing.status_code == 404
    assert not store.exists("review/decided/pred-audit.json")

    done = requests.post(api + "/pred-audit/decision", json={"label": "real"}, headers=reviewer, timeout=30)
    assert done.status_code == 200
    assert (
        done.json()["reviewer"] == "reviewer" and done.json()["inbox_key"] == "review/0_real/pred-audit.png"
    )
    admin = {"Authorization": f"Bearer {token(stack, 'admin')}"}
    again = requests.post(api + "/pred-audit/decision", json={"label": "fake"}, headers=admin, timeout=30)
    assert again.status_code == 409 and "real by reviewer" in again.json()["message"]
    decisions = requests.get(api + "/decisions", headers=viewer, timeout=30).json()["decisions"]
    assert {"item_id": "pred-audit", "reviewer": "reviewer"}.items() <= next(
        d for d in decisions if d["item_id"] == "pred-audit"
    ).items()


def test_a_cross_site_form_riding_on_the_login_cookie_is_refused(browser, stack):
    url = stack["ui"].url
    context, page, _ = offline_tab(browser, stack, "admin")
    try:
        response = page.request.post(
            url + "/vigil/review/pred-claim/decision",
            form={"label": "real"},
            headers={"Origin": "http://evil.example"},
        )
        assert response.status == 403 and "Review page of this server" in response.text()
    finally:
        context.close()
    assert not stack["store"].exists("review/decided/pred-claim.json")
