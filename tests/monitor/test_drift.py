"""The drift tests on samples with known drift and none; the window's Evidently report works offline."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tasks.monitor.config import DriftPolicy
from tasks.monitor.drift import Sample, compare

DIM = 16


def sample(n: int, rng, shift_share: float = 0.0, threshold: float = 0.5) -> Sample:
    p = rng.beta(0.4, 0.4, n)
    e = rng.normal(size=(n, DIM)).astype(np.float32)
    shifted = rng.random(n) < shift_share
    e[shifted] += np.linspace(1.0, 0.0, DIM, dtype=np.float32)
    p[shifted] = np.clip(rng.normal(0.45, 0.08, shifted.sum()), 0, 1)
    return Sample(p, p >= threshold, e)


@pytest.fixture(scope="module")
def reference():
    return sample(2000, np.random.default_rng(0))


def test_a_window_like_the_reference_drifts_nowhere(reference):
    results, report = compare(reference, sample(1000, np.random.default_rng(1)), DriftPolicy())
    assert report is None
    assert not results["score"]["drifted"] and results["score"]["ks_p_value"] > 0.05
    assert not results["verdict"]["drifted"]
    assert not results["embedding"]["drifted"] and results["embedding"]["roc_auc"] < 0.55
    assert results["rows"] == 1000 and results["reference_rows"] == 2000
    assert sum(results["score"]["histogram"]) == pytest.approx(1.0)


def test_a_new_generator_moves_every_signal(reference):
    results, _ = compare(reference, sample(1000, np.random.default_rng(2), shift_share=0.3), DriftPolicy())
    score = results["score"]
    assert score["drifted"] and score["ks_p_value"] <= 0.05 and score["wasserstein"] >= 0.1
    assert (
        results["verdict"]["drifted"] and results["verdict"]["share"] < results["verdict"]["reference_share"]
    )
    assert results["embedding"]["drifted"] and results["embedding"]["roc_auc"] > 0.55


def test_significant_but_immaterial_shifts_are_not_drift(reference):
    # A huge window makes a tiny shift significant: the material bounds (Wasserstein, share change) hold it.
    rng = np.random.default_rng(3)
    window = sample(60_000, rng)
    nudged = Sample(np.clip(window.p_fake + 0.01, 0, 1), window.p_fake + 0.01 >= 0.5, window.embeddings)
    results, _ = compare(reference, nudged, DriftPolicy())
    assert results["score"]["wasserstein"] < 0.1 and not results["score"]["drifted"]
    assert not results["verdict"]["drifted"]
    assert results["embedding"]["rows"] == 5000  # the domain classifier sees a sample of the window


def test_small_reference_uses_the_bootstrap_and_missing_embeddings_skip_that_test():
    rng = np.random.default_rng(4)
    small = sample(300, rng)
    results, _ = compare(small, sample(500, rng, shift_share=0.5), DriftPolicy())
    assert results["embedding"]["threshold"] == "bootstrap" and results["embedding"]["drifted"]
    no_embeddings = Sample(small.p_fake, small.fake, None)
    results, _ = compare(no_embeddings, sample(500, rng), DriftPolicy())
    assert results["embedding"] == {"drifted": False, "skipped": "the reference has no embeddings"}
    other_dims = Sample(small.p_fake, small.fake, np.zeros((300, 4), np.float32))
    results, _ = compare(other_dims, sample(500, rng), DriftPolicy())
    assert "dimensions" in results["embedding"]["skipped"]


def test_the_report_is_one_self_contained_page_with_every_test(reference):
    results, report = compare(
        reference, sample(1000, np.random.default_rng(5), 0.3), DriftPolicy(), report=True
    )
    html = report.html.decode()
    assert html.lstrip().lower().startswith("<!doctype html") or "<html" in html[:500].lower()
    assert not re.search(r"<script[^>]+src=", html) and not re.search(r"<link[^>]+href=\"?https?:", html)
    assert "Drift in embeddings" in html or "embeddings" in html
    snapshot = json.loads(report.json)
    methods = sorted(m["config"].get("method") or "embeddings" for m in snapshot["metrics"])
    assert methods == ["embeddings", "ks", "wasserstein", "z"]
    ks = next(m for m in snapshot["metrics"] if m["config"].get("method") == "ks")
    assert ks["value"] == pytest.approx(results["score"]["ks_p_value"], abs=1e-6)
