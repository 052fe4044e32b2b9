"""The Monitoring and Review pages rendered over a real monitoring run's output; stored files stay confined."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image

from tasks.monitor.config import MonitorConfig, ReviewPolicy
from tasks.review import queue
from tasks.review.candidates import keep_candidate
from tasks.settings import ImageSettings
from tasks.ui.files import ReportPathError
from tasks.ui.monitoring import monitoring_page, window_file
from tasks.ui.review import item_thumbnail, queue_json, review_page
from tests.helpers.monitor import Stream, monitored_store, png


def text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


@pytest.fixture(scope="module")
def monitored(tmp_path_factory, mlflow_server):
    """Two stationary windows, then two shifted ones (an alert)."""
    settings, store, model = monitored_store(tmp_path_factory.mktemp("mon-ui"), mlflow_server)
    stream = Stream(settings, store, model, MonitorConfig())
    for shift in (0, 0, 0.3, 0.3):
        summary = stream.add(shift_share=shift)
    return settings, store, model, summary


def test_the_monitoring_page_draws_the_windows_and_links_their_reports(monitored):
    _, store, model, summary = monitored
    html = monitoring_page(store, "/vigil")
    seen = text(html)
    for chart in ("score-chart", "drift-chart", "accuracy-chart", "volume-chart", "histogram-chart"):
        assert f'id="{chart}"' in html
    # One point per window on the mean-score line, a red marker on each of the two drifting windows.
    score_svg = html.split('id="score-chart"', 1)[1].split("</svg>", 1)[0]
    assert len(re.search(r'class="line" points="([^"]+)"', score_svg).group(1).split()) == 4
    assert score_svg.count('class="point"') == 2
    [alert] = summary["alerts"]
    assert f'id="alert-{alert["alert_id"]}"' in html and "drifting in 2 consecutive windows" in seen
    window_id = alert["window_id"]
    assert f'href="/vigil/monitoring/windows/{window_id}/report.html"' in html
    assert f"{model}/v1" in seen and "drifting" in seen and "4" in seen

    report = window_file(store, window_id, "report.html")
    assert report.media_type == "text/html; charset=utf-8" and b"<html" in report.data[:2000].lower()
    assert window_file(store, window_id, "summary.json").media_type.startswith("application/json")
    store.write_bytes("secret.txt", b"TOP-SECRET")
    for bad_id, name in (
        (window_id, "../../../../secret.txt"),
        ("../secret", "report.html"),
        (window_id, "state.json"),
    ):
        with pytest.raises(ReportPathError):
            window_file(store, bad_id, name)


def test_an_empty_store_says_what_to_do(local_store):
    assert "No window yet" in text(monitoring_page(local_store, "/vigil"))


def test_the_review_page_shows_each_item_with_its_facts_and_buttons(local_store):
    store = local_store
    item = {
        "item_id": "pred1",
        "prediction_id": "pred1",
        "reasons": ["claim", "near_threshold"],
        "image_key": keep_candidate(store, png((200, 10, 10), side=400), "png"),
        "p_fake": 0.4712,
        "threshold": 0.5,
        "verdict": "real",
        "model_name": "vigil-detector",
        "model_version": "4",
        "source": "partner-app",
        "predicted_at": "2026-03-01T10:00:00.000+00:00",
        "image_sha256": "0" * 64,
        "window_id": None,
        "campaign": None,
        "claims": [{"claimed_label": "fake", "client": "tok:alice", "time": "2026-03-01T10:05:00+00:00"}],
    }
    queue.enqueue(store, [item], ReviewPolicy())
    html = review_page(store, "/vigil", can_decide=True, user="admin")
    seen = text(html)
    assert 'src="/vigil/review/pred1/image.png"' in html and 'action="/vigil/review/pred1/decision"' in html
    assert "0.471" in seen and "vigil-detector v4" in seen and "partner-app" in seen
    assert "claimed fake by tok:alice" in seen and "claim" in seen and "model says real" in seen
    assert review_page(store, "/vigil", can_decide=False, user="viewer").count("<form") == 0

    thumb = Image.open(io.BytesIO(item_thumbnail(store, ImageSettings(), "pred1")))
    assert thumb.format == "PNG" and max(thumb.size) <= 192
    with pytest.raises(FileNotFoundError):
        item_thumbnail(store, ImageSettings(), "nope")
    assert queue_json(store)["items"][0]["claims"] == item["claims"]
    assert "image" not in queue_json(store)["items"][0] and "image_key" not in queue_json(store)["items"][0]
