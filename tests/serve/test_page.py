"""The upload page and the API docs in a real browser (Debian's chromium driven by Playwright), with
every request that would leave the machine blocked: nothing may come from a CDN."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from tasks.serve.records import claim_key
from tasks.storage import ObjectStore
from tests.helpers.browser import chromium

LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]"}


def offline_page(browser):
    """A page whose requests off loopback are aborted; returns (page, the list of blocked URLs)."""
    page = browser.new_page()
    blocked: list[str] = []

    def route(request_route) -> None:
        url = request_route.request.url
        if url.startswith(("blob:", "data:")) or urlsplit(url).hostname in LOCAL_HOSTS:
            request_route.continue_()
        else:
            blocked.append(url)
            request_route.abort()

    page.route("**/*", route)
    return page, blocked


def rgb(page, selector: str, prop: str) -> str:
    return page.eval_on_selector(selector, f"e => getComputedStyle(e).{prop}")


def test_upload_verdict_in_matching_colour_then_wrong_is_a_claim(serve, detector, test_images):
    from playwright.sync_api import expect

    server = serve(detector)
    settings = server.service.settings
    with chromium() as browser:
        page, blocked = offline_page(browser)
        page.goto(server.url + "/")
        for image in (test_images["fake"][0], test_images["real"][0]):
            page.set_input_files("#file", str(image))
            page.check("#explain")
            with page.expect_response(lambda r: "/v1/detect" in r.url) as detected:
                page.click("#submit")
            answer = detected.value.json()
            verdict = page.locator("#verdict")
            expect(verdict).to_have_text(
                re.compile(r"Likely (synthetic or manipulated|authentic)"), timeout=30_000
            )
            label = verdict.get_attribute("class")
            assert label == answer["label"]
            # The bar ends in the verdict's colour (an "authentic" bar is never red).
            assert rgb(page, "#fill", "backgroundColor") == rgb(page, "#verdict", "color")
            assert page.locator("#fill").get_attribute("class") == f"fill {label}"
            assert page.locator("#score").inner_text().startswith("P(fake) ")
            assert page.locator("#explanation").inner_text().split()[0].rstrip(".,") == (
                "Yes" if label == "synthetic" else "No"
            )
            assert "version" in page.locator("#model").inner_text()
            expect(page.locator("#feedback")).to_contain_text("does not change any label by itself")

        # "Wrong" on the last verdict: a claim for the other label, acknowledged as such.
        with page.expect_response(lambda r: r.url.endswith("/v1/feedback")) as sent:
            page.click("#wrong")
        assert sent.value.status == 200
        expect(page.locator("#ack")).to_contain_text("recorded as a claim", timeout=10_000)
        expect(page.locator("#wrong")).to_be_disabled()
        assert blocked == []
    other = {"synthetic": "authentic", "authentic": "synthetic"}[label]
    claim = ObjectStore(settings.store_url).read_json(claim_key(answer["prediction_id"], other))
    assert claim["status"] == "pending" and claim["predicted"] == label
    assert ObjectStore(settings.inbox).list("feedback") == []  # a claim from the page is no label


def test_the_api_docs_work_offline(serve, detector):
    from playwright.sync_api import expect

    server = serve(detector)
    with chromium() as browser:
        page, blocked = offline_page(browser)
        page.goto(server.url + "/docs")
        operations = page.locator(".opblock-summary-path")
        expect(operations.first).to_be_visible(timeout=30_000)
        listed = set(operations.all_inner_texts())
        assert {"/v1/detect", "/v1/detect/batch", "/v1/feedback", "/admin/reload", "/readyz"} <= {
            text.replace("\u200b", "") for text in listed
        }, listed

        page.goto(server.url + "/redoc")
        expect(page.get_by_text("Vigil detection API").first).to_be_visible(timeout=30_000)
        expect(page.get_by_text("/v1/feedback").first).to_be_attached()
        assert blocked == []
