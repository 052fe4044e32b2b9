"""Great Expectations: the suite from include/, Data Docs and a JSON summary per batch in the store."""

from __future__ import annotations

import pytest

from tasks.curate import curate
from tasks.curate.expectations import SUITE_FILE, SuiteSpec, load_suite
from tasks.settings import ConfigError, Settings, load_yaml
from tests.helpers.curation import add_batch, good_images


def test_data_docs_and_summary_per_batch(local_store, tmp_path, monkeypatch):
    monkeypatch.setenv("VIGIL_HOME", str(tmp_path / "home"))
    settings = Settings(store_url=local_store.url)
    balanced = add_batch(local_store, good_images(12))
    only_fake = add_batch(local_store, good_images(12, start=20, label="fake"), source="fakes")

    summary = curate(settings, local_store)

    assert summary["version"] == "v0001" and summary["new_images"] == 24  # findings do not block publication
    suite = load_yaml(settings.include(SUITE_FILE), SuiteSpec)
    for batch, balance_ok in ((balanced, True), (only_fake, False)):
        report = local_store.read_json(f"reports/{batch.batch_id}/summary.json")
        assert report["status"] == "passed" and report["version"] == "v0001"
        gx = report["expectations"]
        assert gx["suite"] == "raw_batch" and gx["evaluated"] == len(suite.expectations)
        assert [r["expectation"] for r in gx["results"]] == [e.type for e in suite.expectations]
        balance = next(r for r in gx["results"] if r["column"] == "is_fake")
        assert balance["success"] is balance_ok and balance["why"].startswith("class balance")
        assert balance["observed_value"] == (0.5 if balance_ok else 1.0)
        assert gx["success"] is balance_ok and gx["unsuccessful"] == (0 if balance_ok else 1)
        unique = next(r for r in gx["results"] if r["expectation"] == "expect_column_values_to_be_unique")
        assert unique["success"] and unique["column"] == "sha256"
        width = next(r for r in gx["results"] if r["column"] == "width")
        assert width["kwargs"]["min_value"] == settings.images.min_side  # $PARAMETER filled from the settings

        docs = f"reports/{batch.batch_id}/data_docs"
        assert report["links"]["data_docs"] == local_store.uri(f"{docs}/index.html")
        index_html = local_store.read_bytes(f"{docs}/index.html").decode()
        pages = [k for k in local_store.list(f"{docs}/validations") if k.endswith(".html")]
        assert len(pages) == 1 and f"/{batch.batch_id}/" in pages[0]
        assert "is_fake" in local_store.read_bytes(pages[0]).decode()  # the class-balance expectation
        assert "raw_batch" in index_html
        assert not [k for k in local_store.list(docs) if k.endswith((".otf", ".gif"))]  # unused GX assets


def test_bad_suite_names_file_and_expectation(tmp_path):
    (tmp_path / "expectations").mkdir()
    (tmp_path / SUITE_FILE).write_text(
        "name: raw_batch\nexpectations:\n"
        "  - type: expect_column_values_to_be_unique\n    kwargs: {column: sha256}\n"
        "  - type: expect_column_values_to_be_uniqe\n    kwargs: {column: sha256}\n"
    )
    with pytest.raises(
        ConfigError, match=r"raw_batch.yaml: expectations\[1\] \(expect_column_values_to_be_uniqe\)"
    ):
        load_suite(Settings(include_dir=tmp_path))
    (tmp_path / SUITE_FILE).write_text("name: raw_batch\nexpectations:\n  - kind: x\n")
    with pytest.raises(ConfigError, match=r"raw_batch.yaml: expectations\[0\].type: Field required"):
        load_suite(Settings(include_dir=tmp_path))
