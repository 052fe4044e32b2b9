"""Helpers for the UI page tests: a curated batch with quarantined files, and a gate report in the contract."""

from __future__ import annotations


def curate_batch(store, settings) -> str:
    """Curate one raw batch (12 good images, an empty file and an HTML page named .png); its batch id."""
    from tasks.curate import curate
    from tests.helpers.curation import add_batch, good_images

    files = [
        *good_images(12),
        {"data": b"", "name": "zero.jpg"},
        {"data": b"<!doctype html><html><body>not a picture</body></html>", "name": "page.png"},
    ]
    batch = add_batch(store, files, source="inbox")
    curate(settings, store)
    return batch.batch_id


def gate_report(model_name: str, challenger: dict, champion: dict | None, decision: str = "promoted") -> dict:
    """A gate report in the gate's contract (reports/gate/<model>/v<version>/report.json)."""
    slices = [
        {
            "test_set": "v0002/test",
            "slice": "all",
            "n": 240,
            "challenger": {"roc_auc": 0.97, "balanced_accuracy": 0.91, "ece": 0.04},
            "champion": {"roc_auc": 0.95, "balanced_accuracy": 0.90, "ece": 0.05} if champion else None,
        },
        {
            "test_set": "v0002/test",
            "slice": "generator=A",
            "n": 120,
            "challenger": {"roc_auc": 0.93, "balanced_accuracy": 0.88, "ece": 0.06},
            "champion": {"roc_auc": 0.95, "balanced_accuracy": 0.90, "ece": 0.05} if champion else None,
        },
    ]
    return {
        "model_name": model_name,
        "created_at": "2026-11-22T08:00:00+00:00",
        "challenger": challenger,
        "champion": champion,
        "decision": decision,
        "reasons": ["slice generator=A: roc_auc 0.93 < champion 0.95 - 0.01 <b>tolerance</b>"],
        "checks": [
            {"name": "floor roc_auc", "passed": True, "detail": "0.97 >= 0.80"},
            {"name": "slice generator=A roc_auc", "passed": decision == "promoted", "detail": "0.93 vs 0.95"},
        ],
        "slices": slices,
    }


def write_gate_report(store, report: dict) -> str:
    """Write report.json, report.md and report.html next to each other, as the gate does; the folder key."""
    import html

    prefix = f"reports/gate/{report['model_name']}/v{report['challenger']['version']}"
    store.write_json(f"{prefix}/report.json", report)
    store.write_bytes(f"{prefix}/report.md", f"# Gate report\n\n{report['decision']}\n".encode())
    store.write_bytes(
        f"{prefix}/report.html",
        (
            "<!doctype html><html><head><meta charset='utf-8'><title>Gate report</title></head><body>"
            f"<h1>Gate report v{html.escape(report['challenger']['version'])}: {html.escape(report['decision'])}</h1>"
            "</body></html>"
        ).encode(),
    )
    return prefix
