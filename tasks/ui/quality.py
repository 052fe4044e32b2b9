"""The Data quality page: every curated batch's report (``reports/<batch_id>/summary.json``, written by
curation) with its counts, quarantine reasons and a link to its Great Expectations Data Docs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tasks.ui import render_page
from tasks.ui.files import ReportFile, check_id, read_report_file

if TYPE_CHECKING:
    from tasks.storage import ObjectStore

REPORTS = "reports"
SUMMARY = "summary.json"
DATA_DOCS = "data_docs"
MAX_LISTED = 500


@dataclass(frozen=True)
class BatchReport:
    """What the list shows of one batch, read from its summary.json."""

    batch_id: str
    source: str
    status: str
    started_at: str
    message: str
    version: str | None
    counts: dict[str, int]
    failure_ratio: float | None
    max_failure_ratio: float | None
    by_code: dict[str, int]
    expectations_success: bool | None
    expectations_evaluated: int
    expectations_unsuccessful: int
    data_docs: list[str]  # Data Docs pages, relative to the site: validation results first, then the rest
    summary: dict[str, Any] = field(repr=False)

    @classmethod
    def from_summary(cls, summary: dict[str, Any], data_docs: list[str]) -> BatchReport:
        expectations = summary.get("expectations") or {}
        return cls(
            batch_id=str(summary.get("batch_id", "")),
            source=str(summary.get("source", "")),
            status=str(summary.get("status", "unknown")),
            started_at=str(summary.get("started_at", "")),
            message=str(summary.get("message", "")),
            version=summary.get("version"),
            counts={k: v for k, v in (summary.get("counts") or {}).items() if isinstance(v, int)},
            failure_ratio=summary.get("failure_ratio"),
            max_failure_ratio=summary.get("max_failure_ratio"),
            by_code=dict((summary.get("quarantine") or {}).get("by_code") or {}),
            expectations_success=expectations.get("success"),
            expectations_evaluated=int(expectations.get("evaluated") or 0),
            expectations_unsuccessful=int(expectations.get("unsuccessful") or 0),
            data_docs=data_docs,
            summary=summary,
        )

    @property
    def data_docs_page(self) -> str | None:
        """The page to open first: the validation results (GX's index lists them only with JavaScript)."""
        return self.data_docs[0] if self.data_docs else None

    @property
    def duplicates(self) -> int:
        c = self.counts
        return (
            c.get("exact_duplicates", 0)
            + c.get("near_duplicates_dropped", 0)
            + c.get("split_conflicts_dropped", 0)
        )

    @property
    def failed_expectations(self) -> list[dict[str, Any]]:
        results = (self.summary.get("expectations") or {}).get("results") or []
        return [r for r in results if not r.get("success")]

    @property
    def quarantine_items(self) -> list[dict[str, Any]]:
        return list((self.summary.get("quarantine") or {}).get("items") or [])


def summary_key(batch_id: str) -> str:
    return f"{REPORTS}/{check_id(batch_id, 'batch id')}/{SUMMARY}"


def data_docs_prefix(batch_id: str) -> str:
    return f"{REPORTS}/{check_id(batch_id, 'batch id')}/{DATA_DOCS}"


def list_batch_reports(store: ObjectStore, source: str | None = None) -> list[BatchReport]:
    """Every batch with a report, newest first (one listing of ``reports/``, one read per summary)."""
    keys = store.list(REPORTS)
    pages: dict[str, list[str]] = {}
    for key in keys:
        parts = key.split("/", 3)
        if len(parts) == 4 and parts[2] == DATA_DOCS and key.endswith(".html"):
            pages.setdefault(parts[1], []).append(parts[3])
    summaries = [k for k in keys if k.count("/") == 2 and k.endswith(f"/{SUMMARY}")]
    reports = []
    for key in summaries:
        batch_id = key.split("/")[1]
        report = BatchReport.from_summary(store.read_json(key), _docs_order(pages.get(batch_id, [])))
        if source is None or report.source == source:
            reports.append(report)
    return sorted(reports, key=lambda r: (r.started_at, r.batch_id), reverse=True)


def read_batch_report(store: ObjectStore, batch_id: str) -> BatchReport:
    key = summary_key(batch_id)
    summary = store.read_json(key)
    prefix = data_docs_prefix(batch_id) + "/"
    pages = [k[len(prefix) :] for k in store.list(prefix) if k.endswith(".html")]
    return BatchReport.from_summary(summary, _docs_order(pages))


def _docs_order(pages: list[str]) -> list[str]:
    return sorted(pages, key=lambda p: (not p.startswith("validations/"), p != "index.html", p))


def data_docs_file(store: ObjectStore, batch_id: str, relative: str) -> ReportFile:
    """A file of the batch's Data Docs site; never anything outside ``reports/<batch_id>/data_docs/``."""
    return read_report_file(store, data_docs_prefix(batch_id), relative or "index.html")


def data_quality_page(store: ObjectStore, base: str, source: str | None = None) -> str:
    reports = list_batch_reports(store, source)
    totals = {
        "batches": len(reports),
        "failed": sum(r.status == "failed" for r in reports),
        "images": sum(r.counts.get("images", 0) for r in reports),
        "quarantined": sum(r.counts.get("quarantined", 0) for r in reports),
        "new_images": sum(r.counts.get("new_images", 0) for r in reports),
    }
    sources = sorted({r.source for r in reports} | ({source} if source else set()))
    return render_page(
        "data_quality.html",
        base=base,
        nav="quality",
        title="Data quality",
        reports=reports[:MAX_LISTED],
        truncated=max(0, len(reports) - MAX_LISTED),
        totals=totals,
        source=source,
        sources=sources,
        store_url=store.url,
    )


def batch_page(store: ObjectStore, base: str, batch_id: str) -> str:
    report = read_batch_report(store, batch_id)
    return render_page("batch.html", base=base, nav="quality", title=f"Batch {batch_id}", report=report)
