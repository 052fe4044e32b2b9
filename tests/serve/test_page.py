"""The upload page in a real browser: Debian's headless chromium driven by Playwright."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")
def test_uploading_an_image_on_the_page_shows_the_verdict(serve, detector, test_images):
    from playwright.sync_api import expect, sync_playwright

    server = serve(detector)
    image = test_images["fake"][0]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        try:
            page = browser.new_page()
            requests_seen: list[str] = []
            page.on("request", lambda request: requests_seen.append(request.url))
            page.goto(server.url + "/")
            page.set_input_files("#file", str(image))
            page.check("#explain")
            page.click("#submit")

            verdict = page.locator("#verdict")
            expect(verdict).to_have_text(
                re.compile(r"Likely (synthetic or manipulated|authentic)"), timeout=30_000
            )
            label = verdict.get_attribute("class")
            assert label in ("synthetic", "authentic")
            assert page.locator("#score").inner_text().startswith("P(fake) ")
            assert page.locator("#explanation").inner_text().split()[0].rstrip(".,") == (
                "Yes" if label == "synthetic" else "No"
            )
            assert "version" in page.locator("#model").inner_text()
            # No request left the server: no CDN, fonts or scripts from elsewhere.
            assert all(url.startswith((server.url, "blob:")) for url in requests_seen), requests_seen
        finally:
            browser.close()
