"""The data-quality journey in a real browser (Debian's chromium via Playwright) against a real
``airflow standalone`` with this repository's plugin, offline: every request that does not go to the
loopback address is blocked (and recorded), as on a machine without internet access.

Browse → Data quality shows the batches with their quarantine counts and the chart of reasons; the batch
page shows the quarantined images (thumbnails, reasons, messages); its Data Docs are styled from files
of the site and show the quarantine counts; the cumulative Data Docs index lists every batch."""

from __future__ import annotations

import re
from urllib.parse import urlparse

import pytest

from tests.helpers.browser import airflow_for_tests, chromium, login

pytestmark = pytest.mark.slow

IFRAME_WIDTH = 1032  # the Airflow dag-run tab's iframe at a 1,400 px window (docs/ui.md)


@pytest.fixture(scope="module")
def quality_ui(tmp_path_factory):
    """Two curated batches (one with 5 of 18 images quarantined), then Airflow on that store."""
    from tasks.settings import Settings
    from tasks.storage import ObjectStore
    from tests.helpers.quality import curate_two_batches

    tmp = tmp_path_factory.mktemp("quality-ui")
    env = {"VIGIL_HOME": str(tmp / "home"), "VIGIL_STORE_URL": (tmp / "store").as_uri()}
    settings = Settings(home=env["VIGIL_HOME"], store_url=env["VIGIL_STORE_URL"])
    store = ObjectStore.from_settings(settings)
    batch_id, clean_id = curate_two_batches(store, settings)
    with airflow_for_tests(tmp / "airflow", env) as ui:
        yield {"ui": ui, "store": store, "batch_id": batch_id, "clean_id": clean_id}


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def offline(browser, quality_ui):
    """A logged-in tab that can reach only the loopback address; ``blocked`` lists what it tried."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    blocked: list[str] = []

    def only_loopback(route):
        host = urlparse(route.request.url).hostname or ""
        if route.request.url.startswith(("data:", "about:")) or host in ("127.0.0.1", "localhost", "::1"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_loopback)
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    login(tab, quality_ui["ui"].url, quality_ui["ui"].password)
    yield tab, blocked
    context.close()


def test_data_quality_page_shows_the_batch_and_opens_its_data_docs(offline, quality_ui):
    page, _ = offline
    url, batch_id = quality_ui["ui"].url, quality_ui["batch_id"]
    page.goto(url + "/vigil/data-quality")
    row = page.locator(f"tr#{batch_id}")
    cells = row.locator("td").all_inner_texts()
    assert cells[0].startswith(batch_id) and "inbox" in cells[0] and cells[1].startswith("passed")
    assert cells[2] == "18" and cells[3].split()[0] == "5"  # images, quarantined
    assert "empty: 1" in cells[5] and "not_an_image: 1" in cells[5] and "v0001" in cells[1]

    with page.expect_response(lambda r: "/data_docs/validations/" in r.url) as docs:
        row.get_by_role("link", name="Data Docs").click()
    response = docs.value
    assert response.status == 200 and response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"].startswith("sandbox")
    assert f"/vigil/data-quality/{batch_id}/data_docs/validations/raw_batch/{batch_id}/" in page.url
    page.wait_for_load_state("load")
    assert batch_id in page.locator("body").inner_text()

    # The batch page: the quarantined files with their reasons.
    page.goto(f"{url}/vigil/data-quality/{batch_id}")
    body = page.locator("main").inner_text()
    assert "zero.jpg" in body and "not a raster image: HTML document" in body

    # Traversal out of the Data Docs folder is refused, also percent-encoded.
    quality_ui["store"].write_bytes("secret.txt", b"TOP-SECRET")
    for path in (
        "..%2F..%2F..%2Fsecret.txt",
        "%2e%2e/%2e%2e/%2e%2e/secret.txt",
        "static/..%2F..%2F..%2F..%2Fsecret.txt",
    ):
        for route in ("docs", "data_docs"):
            response = page.request.get(f"{url}/vigil/data-quality/{batch_id}/{route}/{path}")
            assert response.status in (400, 404), path
            assert b"TOP-SECRET" not in response.body()
    for path in ("..%2F..%2Fsecret.txt", "%2e%2e/secret.txt", "..%2F..%2F..%2Fpyproject.toml"):
        response = page.request.get(f"{url}/vigil/data-quality/data_docs/static/{path}")
        assert response.status in (400, 404), path
        assert b"TOP-SECRET" not in response.body() and b"[project]" not in response.body()


def test_the_data_quality_journey_offline(offline, quality_ui, browser):
    page, blocked = offline
    url, batch_id, clean_id = quality_ui["ui"].url, quality_ui["batch_id"], quality_ui["clean_id"]

    # Browse → Data quality, inside Airflow's UI.
    page.goto(url + "/")
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name="Data quality").click()
    page.wait_for_url("**/plugin/vigil-data-quality")
    frame = page.frame_locator("iframe")
    row = frame.locator(f"tr#{batch_id}")
    row.wait_for()
    cells = row.locator("td").all_inner_texts()
    assert cells[2] == "18" and cells[3].split()[0] == "5" and "28%" in cells[3]
    assert frame.locator(f"tr#{clean_id}").locator("td").nth(3).inner_text().split()[0] == "0"
    # The chart: a stacked bar of the first batch's five reasons, none for the clean batch.
    segments = frame.locator("svg#rejections-chart rect.segment")
    assert sorted(segments.evaluate_all("els => els.map(e => e.dataset.code + ':' + e.dataset.count)")) == [
        "decompression_bomb:1",
        "empty:1",
        "near_constant:1",
        "not_an_image:1",
        "too_small:1",
    ]
    assert all(box["height"] > 0 for box in (segments.nth(i).bounding_box() for i in range(5)))
    legend = frame.locator("figure.dq-chart .legend").inner_text()
    assert "near_constant" in legend and "not_an_image" in legend

    # The table fits the dag-run tab's frame: no horizontal scrolling, the Data Docs links in view.
    narrow = browser.new_context(viewport={"width": IFRAME_WIDTH, "height": 900})
    try:
        narrow.add_cookies(page.context.cookies())
        tab = narrow.new_page()
        tab.goto(url + "/vigil/data-quality")
        scroll, inner = tab.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll <= inner == IFRAME_WIDTH
        for link in tab.locator("table.dq a.docs").all():
            box = link.bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= IFRAME_WIDTH
    finally:
        narrow.close()

    # The batch page: the quarantined images, with thumbnails, reasons and messages.
    row.get_by_role("link", name=batch_id).click()
    items = frame.locator("li.q-item")
    items.first.wait_for()
    assert sorted(items.evaluate_all("els => els.map(e => e.dataset.code)")) == [
        "decompression_bomb",
        "empty",
        "near_constant",
        "not_an_image",
        "too_small",
    ]
    blank = frame.locator('li.q-item[data-code="near_constant"]')
    assert "blank.png" in blank.inner_text() and "below images.min_pixel_std" in blank.inner_text()
    assert (
        "not a raster image: HTML document"
        in frame.locator('li.q-item[data-code="not_an_image"]').inner_text()
    )
    thumbnails = frame.locator("li.q-item img")
    assert thumbnails.count() == 2
    for i in range(2):
        thumbnails.nth(i).scroll_into_view_if_needed()
        thumbnails.nth(i).evaluate("img => img.decode()")
        assert thumbnails.nth(i).evaluate("img => img.naturalWidth") > 0  # a decoded image
        response = page.request.get(url + thumbnails.nth(i).get_attribute("src"))
        assert response.headers["content-type"] == "image/png"
        assert response.headers["x-content-type-options"] == "nosniff"
    assert frame.locator('li.q-item[data-code="not_an_image"] img').count() == 0  # never the HTML itself

    # Its Data Docs, offline: styled by a stylesheet of the site, showing the quarantine counts.
    page.goto("about:blank")
    default_font = page.evaluate("() => getComputedStyle(document.body).fontFamily")  # a bare page's
    blocked.clear()
    stylesheets = []
    page.on(
        "response",
        lambda r: (
            stylesheets.append((r.url, r.status, r.headers.get("content-type")))
            if r.url.endswith(".css")
            else None
        ),
    )
    page.goto(f"{url}/vigil/data-quality/{batch_id}")
    page.get_by_role("link", name="Data Docs").first.click()
    page.wait_for_url(re.compile(r"/data_docs/validations/"))
    page.wait_for_load_state("load")
    assert (
        f"{url}/vigil/data-quality/data_docs/static/bootstrap-4.3.1.min.css",
        200,
        "text/css; charset=utf-8",
    ) in stylesheets
    styled = page.evaluate(
        "() => [getComputedStyle(document.body).fontFamily,"
        " getComputedStyle(document.querySelector('table')).borderCollapse]"
    )
    assert styled[0] != default_font and styled[1] == "collapse"
    text = page.locator("body").inner_text()
    assert "rejection_code" in text
    for code in ("empty", "not_an_image", "near_constant", "too_small", "decompression_bomb"):
        assert code in text
    # The rejected-share expectation: 13 of 18 not rejected (72 %, at least 50 % needed), the reasons
    # with their counts.
    assert "values must be null, at least 50 % of the time" in text and "72.222% null" in text
    assert re.search(r"Unexpected Value\s+Count\s+decompression_bomb\s+1\s+empty\s+1", text)
    assert blocked == []  # nothing but the site was asked for

    # The cumulative index lists both batches, without any request outside the site.
    page.goto(f"{url}/vigil/data-quality/data_docs/index.html")
    page.wait_for_load_state("load")
    for each in (batch_id, clean_id):
        assert page.locator(f"tr#{each}").count() == 1
    assert "not_an_image: 1" in page.locator(f"tr#{batch_id}").inner_text()
    assert page.evaluate("() => getComputedStyle(document.body).fontFamily") != default_font
    with page.expect_response(lambda r: "/data_docs/validations/" in r.url) as opened:
        page.locator(f"tr#{clean_id} a").first.click()
    assert opened.value.status == 200 and clean_id in page.url
    assert blocked == []
