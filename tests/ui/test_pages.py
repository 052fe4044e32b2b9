"""The pages' rendering over real stores (both backends) and a real MLflow registry; stored files stay confined."""

from __future__ import annotations

import io
import json
import re
import uuid

import pytest
from PIL import Image

from tasks.ui.files import ReportPathError
from tasks.ui.models import gate_file, models_page, slice_rows
from tasks.ui.quality import batch_page, data_docs_file, data_quality_page, list_batch_reports, static_file
from tests.helpers.ui import curate_batch, gate_report, write_gate_report


def text(html: str) -> str:
    """The page's visible text, whitespace collapsed (what a reader sees)."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_data_quality_page_lists_the_curated_batch_with_counts_reasons_and_data_docs(store, settings):
    batch_id = curate_batch(store, settings)
    html = data_quality_page(store, "/vigil")
    seen = text(html)
    assert batch_id in seen and "passed" in seen
    [report] = list_batch_reports(store)
    assert (
        report.counts["images"] == 14
        and report.counts["accepted"] == 12
        and report.counts["quarantined"] == 2
    )
    assert report.by_code == {"empty": 1, "not_an_image": 1}
    assert "empty: 1" in seen and "not_an_image: 1" in seen and "v0001" in seen
    # The Data Docs link opens the validation results.
    page = report.data_docs_page
    assert page.startswith(f"validations/raw_batch/{batch_id}/") and page.endswith(".html")
    assert f'href="/vigil/data-quality/{batch_id}/data_docs/{page}"' in html
    assert 'href="/vigil/data-quality/data_docs/index.html"' in html  # the index of every batch
    assert list_batch_reports(store, source="mastodon") == []

    validation = data_docs_file(store, batch_id, page)
    assert validation.media_type == "text/html; charset=utf-8" and batch_id.encode() in validation.data
    index = data_docs_file(store, batch_id, "")
    assert index.media_type == "text/html; charset=utf-8" and page.encode() in index.data
    css = static_file("bootstrap-4.3.1.min.css")  # the pages' shared stylesheet, shipped with Vigil
    assert css.media_type == "text/css; charset=utf-8" and b".table" in css.data
    for bad in ("../quality.py", "..", ".hidden", "a/b.css", "nope.css"):
        with pytest.raises((ReportPathError, FileNotFoundError)):
            static_file(bad)

    detail_html = batch_page(store, "/vigil", batch_id)
    assert f'href="/vigil/data-quality/{batch_id}/data_docs/index.html"' in detail_html
    detail = text(detail_html)
    assert "zero.jpg" in detail and "page.png" in detail and "not a raster image: HTML document" in detail


def test_the_batch_page_browses_every_quarantined_image_with_thumbnails_and_reasons(store, settings):
    from tasks.ui.quality import quarantine_thumbnail, rejection_chart
    from tests.helpers.quality import curate_two_batches

    batch_id, clean_id = curate_two_batches(store, settings)
    html = batch_page(store, "/vigil", batch_id)
    items = re.findall(r'<li class="q-item" data-code="([a-z_]+)">(.*?)</li>', html, re.S)
    assert sorted(code for code, _ in items) == [
        "decompression_bomb",
        "empty",
        "near_constant",
        "not_an_image",
        "too_small",
    ]
    by_code = dict(items)
    assert (
        "blank.png" in by_code["near_constant"] and "below images.min_pixel_std" in by_code["near_constant"]
    )
    assert "not a raster image: HTML document" in text(by_code["not_an_image"])
    # Thumbnails where the bytes are a raster image safe to decode; none for the others.
    thumbs = re.findall(rf'src="/vigil/data-quality/{batch_id}/quarantine/([0-9a-f]{{64}})\.png"', html)
    assert (
        len(thumbs) == 2
        and "no preview" in by_code["empty"]
        and "no preview" in by_code["decompression_bomb"]
    )
    for sha in thumbs:
        thumb = quarantine_thumbnail(store, settings.images, batch_id, f"{sha}.png")
        assert thumb.media_type == "image/png" and thumb.data.startswith(b"\x89PNG\r\n\x1a\n")
        image = Image.open(io.BytesIO(thumb.data))
        assert image.format == "PNG" and max(image.size) <= 128
    # Never the raw bytes, never HTML, never outside the batch's quarantine.
    rows = {r["original_name"]: r for r in store.read_json(f"reports/{batch_id}/quarantine.json")}
    for name in ("page.png", "zero.jpg", "bomb.png"):
        with pytest.raises(FileNotFoundError):
            quarantine_thumbnail(store, settings.images, batch_id, f"{rows[name]['sha256']}.png")
    with pytest.raises(FileNotFoundError):  # a real rejection, but of another batch
        quarantine_thumbnail(store, settings.images, clean_id, f"{thumbs[0]}.png")
    for bad in ("../secret.png", f"{thumbs[0]}.json", "x.png"):
        with pytest.raises(ReportPathError):
            quarantine_thumbnail(store, settings.images, batch_id, bad)
    # Filtered by reason.
    only = batch_page(store, "/vigil", batch_id, code="too_small")
    assert re.findall(r'data-code="([a-z_]+)">', only) == ["too_small"]
    assert "page 1 of" not in html

    # The chart: one stacked bar per batch, one segment per reason, in the legend.
    chart = rejection_chart(list_batch_reports(store))
    assert [b["batch_id"] for b in chart["bars"]] == [batch_id, clean_id]  # oldest first
    assert {s["code"]: s["count"] for s in chart["bars"][0]["segments"]} == {
        "decompression_bomb": 1,
        "empty": 1,
        "near_constant": 1,
        "not_an_image": 1,
        "too_small": 1,
    }
    assert chart["bars"][1]["segments"] == []
    page = data_quality_page(store, "/vigil")
    svg = re.search(r'<svg id="rejections-chart".*?</svg>', page, re.S).group(0)
    assert len(re.findall(r'<rect class="segment" data-code="', svg)) == 5 and "<script" not in page


def test_the_batch_page_pages_through_more_rejections_than_the_summary_lists(
    local_store, tmp_path, monkeypatch
):
    from tasks.curate import curate
    from tasks.settings import Settings
    from tasks.ui.quality import PER_PAGE
    from tests.helpers.curation import add_batch, good_images

    monkeypatch.setenv("VIGIL_HOME", str(tmp_path / "home"))
    count = 205  # the summary lists 200
    pages = [{"data": f"<html>page {i}</html>".encode(), "name": f"page{i:03d}.png"} for i in range(count)]
    batch = add_batch(local_store, [*good_images(10), *pages])
    curate(Settings(store_url=local_store.url), local_store)  # fails: too many rejected, all quarantined

    assert len(local_store.read_json(f"reports/{batch.batch_id}/summary.json")["quarantine"]["items"]) == 200
    seen = []
    last = -(-count // PER_PAGE)
    for number in range(1, last + 1):
        html = batch_page(local_store, "/vigil", batch.batch_id, page=number)
        names = re.findall(r'<div class="name"[^>]*>(page\d+\.png)</div>', html)
        assert f"page {number} of {last}" in text(html) and len(names) == (
            PER_PAGE if number < last else count % PER_PAGE
        )
        seen += names
    assert sorted(seen) == sorted(p["name"] for p in pages)  # every rejection, once
    assert len(seen) == count
    assert "?page=2#quarantine" in batch_page(local_store, "/vigil", batch.batch_id)


@pytest.mark.parametrize(
    "relative",
    [
        "../summary.json",
        "../../../secret.txt",
        "a/../../summary.json",
        "/etc/passwd",
        "..\\summary.json",
        ".hidden",
        "static//x.css",
        "./index.html",
    ],
)
def test_data_docs_paths_cannot_leave_the_batch_folder(local_store, relative):
    local_store.write_bytes("secret.txt", b"secret")
    local_store.write_json("reports/b1/summary.json", {"batch_id": "b1"})
    local_store.write_bytes("reports/b1/data_docs/index.html", b"<html></html>")
    with pytest.raises(ReportPathError):
        data_docs_file(local_store, "b1", relative)


@pytest.mark.parametrize("batch_id", ["..", "../reports", "b1/..", ".b1", ""])
def test_batch_ids_that_are_not_plain_names_are_refused(local_store, batch_id):
    with pytest.raises(ReportPathError):
        data_docs_file(local_store, batch_id, "index.html")


def test_gate_files_are_only_the_three_report_files(local_store):
    report = gate_report("m", {"version": "2", "run_id": "r2", "snapshot": "v0002"}, None)
    write_gate_report(local_store, report)
    local_store.write_bytes("reports/gate/m/v2/notes.txt", b"private")
    assert gate_file(local_store, "m", "2", "report.html").media_type == "text/html; charset=utf-8"
    assert json.loads(gate_file(local_store, "m", "2", "report.json").data)["decision"] == "promoted"
    with pytest.raises(FileNotFoundError):
        gate_file(local_store, "m", "2", "notes.txt")
    with pytest.raises(ReportPathError):
        gate_file(local_store, "m", "../../secret", "report.html")


def test_report_text_is_escaped(local_store):
    evil = "<script>alert(1)</script>"
    local_store.write_json(
        "reports/b1/summary.json",
        {
            "batch_id": "b1",
            "source": evil,
            "status": "failed",
            "message": evil,
            "started_at": "2026-01-01",
            "counts": {"images": 1, "quarantined": 1},
            "quarantine": {
                "by_code": {evil: 1},
                "items": [{"code": evil, "message": evil, "original_name": evil}],
            },
        },
    )
    for html in (data_quality_page(local_store, "/vigil"), batch_page(local_store, "/vigil", "b1")):
        assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_slice_rows_put_champion_and_challenger_side_by_side_and_colour_the_change():
    report = gate_report("m", {"version": "3"}, {"version": "2"})
    metrics, rows = slice_rows(report)
    assert metrics == ["roc_auc", "balanced_accuracy", "ece"]
    overall, generator_a = rows
    cells = {c["metric"]: c for c in overall["cells"]}
    assert cells["roc_auc"]["delta"] == pytest.approx(0.02) and cells["roc_auc"]["verdict"] == "better"
    assert (
        cells["ece"]["delta"] == pytest.approx(-0.01) and cells["ece"]["verdict"] == "better"
    )  # lower is better
    assert {c["metric"]: c["verdict"] for c in generator_a["cells"]} == {
        "roc_auc": "worse",
        "balanced_accuracy": "worse",
        "ece": "worse",
    }
    # No champion (the first model): no delta, no colour.
    _, [first, _] = slice_rows(gate_report("m", {"version": "1"}, None))
    assert all(c["delta"] is None and c["verdict"] == "" for c in first["cells"])


def test_models_page_shows_versions_aliases_tags_inference_and_gate_report(
    mlflow_server, local_store, tmp_path
):
    from mlflow import MlflowClient

    from tasks.registry import Registry
    from tasks.settings import Settings

    name = f"ui-{uuid.uuid4().hex[:8]}"
    settings = Settings(mlflow_tracking_uri=mlflow_server, model_name=name)
    client = MlflowClient(mlflow_server, registry_uri=mlflow_server)
    experiment = client.create_experiment(f"ui-tests-{name}")
    client.create_registered_model(name)
    for i in (1, 2, 3):
        run = client.create_run(experiment)
        client.log_text(run.info.run_id, "detector", "model/detector.txt")
        client.create_model_version(
            name,
            f"runs:/{run.info.run_id}/model",
            run.info.run_id,
            tags={"snapshot": f"v000{i}", "profile": "tiny", "method": "full", "threshold": "0.25"},
        )
    registry = Registry(settings, client)
    registry.promote("1", "first")
    registry.promote("2", "better")
    client.set_registered_model_alias(name, "challenger", "3")
    registry.reject("3", ["slice generator=A: roc_auc 0.93 < champion 0.95 - 0.01"])
    client.set_model_version_tag(name, "2", "inference", json.dumps({"batch_size": 16, "dtype": "float32"}))
    write_gate_report(
        local_store,
        gate_report(
            name,
            {"version": "3", "run_id": "x", "snapshot": "v0003"},
            {"version": "2", "run_id": "y", "snapshot": "v0002"},
            "rejected",
        ),
    )

    html = models_page(settings, local_store, "/vigil", "http://mlflow.example:5000")
    seen = text(html)
    assert re.search(r'<tr id="v2">.*?champion.*?</tr>', html, re.S)
    assert re.search(r'<tr id="v1">.*?previous.*?</tr>', html, re.S)
    row3 = re.search(r'<tr id="v3">.*?</tr>', html, re.S).group(0)
    assert "challenger" in row3 and "rejected" in row3 and "roc_auc 0.93 &lt; champion" in row3
    assert "batch_size=16" in seen and "dtype=float32" in seen and "not tuned" in seen
    run = client.get_model_version(name, "2").run_id
    assert f'href="http://mlflow.example:5000/#/experiments/{experiment}/runs/{run}"' in html
    assert "Gate report v3" in seen and "generator=A" in seen and "+0.020" in seen and "-0.020" in seen
    assert 'class="n worse"' in html and 'class="n better"' in html
    assert 'href="/vigil/models/3/gate/report.html"' in html
    assert "&lt;b&gt;tolerance&lt;/b&gt;" in html  # reasons are escaped


def test_models_page_says_when_the_registry_is_unreachable(local_store):
    from tasks.settings import Settings
    from tasks.stack import free_port

    settings = Settings(mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}", model_name="nothing")
    seen = text(models_page(settings, local_store, "/vigil", settings.mlflow_tracking_uri))
    assert "Could not read the registry" in seen
