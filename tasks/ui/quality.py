"""The Data quality pages: every curated batch's report (``reports/<batch_id>/summary.json``, written by
curation) with its counts, a chart of the rejection reasons over time and a link to its Great
Expectations Data Docs; a batch page with its quarantined images (thumbnails, reasons, messages); the
stored Data Docs sites and their cumulative index."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from tasks.ui import render_page
from tasks.ui.files import ReportFile, ReportPathError, check_id, read_report_file

if TYPE_CHECKING:
    from tasks.settings import ImageSettings
    from tasks.storage import ObjectStore

REPORTS = "reports"
SUMMARY = "summary.json"
DATA_DOCS = "data_docs"
QUARANTINE = "quarantine"
QUARANTINE_INDEX = "quarantine.json"
MAX_LISTED = 500
PER_PAGE = 48  # quarantined images per batch page
THUMBNAIL_SIDE = 128
CHART_BATCHES = 40  # the chart shows the newest batches, oldest on the left
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


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
    validation_page: str | None = None

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
            validation_page=expectations.get("validation_page"),
        )

    @property
    def data_docs_page(self) -> str | None:
        """The page to open first: the validation results of the batch."""
        return self.validation_page or (self.data_docs[0] if self.data_docs else None)

    @property
    def quarantined(self) -> int:
        return self.counts.get("quarantined", 0)

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


def data_docs_index_file(store: ObjectStore, relative: str) -> ReportFile:
    """A file of the cumulative Data Docs site (``reports/data_docs/``: index.html, index.json)."""
    return read_report_file(store, f"{REPORTS}/{DATA_DOCS}", relative or "index.html")


def static_file(name: str) -> ReportFile:
    """One of the shipped Data Docs assets (Bootstrap, jQuery, fonts ...), by its plain file name only."""
    from tasks.curate.data_docs import STATIC_DIR
    from tasks.ui.files import media_type

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name or ""):
        raise ReportPathError(f"invalid static file name {name!r}")
    path = STATIC_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"no static file {name!r}")
    return ReportFile(path.read_bytes(), media_type(name))


def quarantine_items(store: ObjectStore, report: BatchReport) -> list[dict[str, Any]]:
    """Every quarantined image of the batch (``reports/<batch_id>/quarantine.json``; older reports: the
    summary's first 200)."""
    key = f"{REPORTS}/{check_id(report.batch_id, 'batch id')}/{QUARANTINE_INDEX}"
    if store.exists(key):
        return list(store.read_json(key))
    return report.quarantine_items


def quarantine_thumbnail(store: ObjectStore, policy: ImageSettings, batch_id: str, name: str) -> ReportFile:
    """A small PNG of a quarantined image, made here from its bytes (never the bytes themselves, which
    may be anything, e.g. HTML named .png); only from ``quarantine/<batch_id>/``. FileNotFoundError when
    there is nothing safe to show (no bytes, not a raster image, over the size or pixel limits)."""
    from tasks.curate.pipeline import quarantined_key
    from tasks.curate.process import PREVIEWABLE_CODES

    sha256 = name.removesuffix(".png")
    if not _SHA256.match(sha256):
        raise ReportPathError(f"invalid quarantined image {name!r}: <sha256>.png")
    prefix = f"{QUARANTINE}/{check_id(batch_id, 'batch id')}"
    reason = store.read_json(f"{prefix}/{sha256}.json")
    raw_key = reason.get("raw_key")
    if not raw_key or reason.get("code") not in PREVIEWABLE_CODES:
        raise FileNotFoundError(f"no preview of a {reason.get('code')} rejection")
    key = quarantined_key(prefix, sha256, raw_key)
    if store.size(key) > policy.max_file_bytes:
        raise FileNotFoundError("no preview: the file is over images.max_file_bytes")
    return ReportFile(thumbnail(store.read_bytes(key), policy), "image/png")


def thumbnail(data: bytes, policy: ImageSettings, side: int = THUMBNAIL_SIDE) -> bytes:
    """At most ``side`` x ``side`` pixels, upright RGB, as PNG; FileNotFoundError if it cannot be made."""
    from PIL import Image

    from tasks.images import encode_png, sniff_format, upright_rgb

    fmt = sniff_format(data)
    if fmt is None:
        raise FileNotFoundError("no preview: not a raster image")
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as image:
            width, height = image.size
            if width * height > policy.max_pixels or max(width, height) > policy.max_side:
                raise FileNotFoundError("no preview: over images.max_pixels or images.max_side")
            image.draft("RGB", (side, side))  # JPEG: decode at a reduced scale
            image.thumbnail((side, side))
            rgb, _ = upright_rgb(image)
            return encode_png(rgb)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any decoder failure means no preview
        raise FileNotFoundError(f"no preview: {fmt} could not be decoded ({exc})") from None


# Colours of the reason codes in the chart, in the order of docs/curation.md's table.
CODE_COLOURS = {
    "empty": "#9aa5b1",
    "too_large_file": "#c05621",
    "not_an_image": "#d64545",
    "format_not_allowed": "#a0559e",
    "decompression_bomb": "#7b2cbf",
    "too_large_dimensions": "#b7791f",
    "too_small": "#2b6cb0",
    "animated": "#2c7a7b",
    "truncated": "#dd6b20",
    "corrupt": "#822727",
    "near_constant": "#718096",
    "missing_raw": "#1a202c",
    "checksum_mismatch": "#d53f8c",
}
OTHER_COLOUR = "#4a5568"


def rejection_chart(reports: list[BatchReport], limit: int = CHART_BATCHES) -> dict[str, Any]:
    """Stacked bars of quarantined images per batch and reason code, oldest batch on the left: the
    geometry of a small SVG drawn by the template (no script)."""
    shown = sorted(reports, key=lambda r: (r.started_at, r.batch_id))[-limit:]
    width, height, left, bottom, top = 720, 180, 40, 34, 10
    peak = max([sum(r.by_code.values()) for r in shown] + [1])
    scale = (height - bottom - top) / peak
    slot = (width - left - 10) / max(len(shown), 1)
    bar = min(28.0, slot * 0.7)
    codes: list[str] = []
    bars = []
    for i, report in enumerate(shown):
        x = left + i * slot + (slot - bar) / 2
        y = height - bottom
        segments = []
        for code, count in sorted(report.by_code.items()):
            if code not in codes:
                codes.append(code)
            h = count * scale
            y -= h
            segments.append(
                {"code": code, "count": count, "y": round(y, 1), "h": round(h, 1), "colour": colour(code)}
            )
        bars.append(
            {
                "batch_id": report.batch_id,
                "x": round(x, 1),
                "w": round(bar, 1),
                "label": report.started_at[5:10],
                "show_label": len(shown) <= 12 or i % max(1, len(shown) // 8) == 0,
                "segments": segments,
                "total": sum(report.by_code.values()),
                "images": report.counts.get("images", 0),
            }
        )
    ticks = sorted({0, peak // 2, peak}) if peak > 1 else [0, 1]
    return {
        "width": width,
        "height": height,
        "left": left,
        "base": height - bottom,
        "bars": bars,
        "ticks": [{"value": t, "y": round(height - bottom - t * scale, 1)} for t in ticks],
        "legend": [{"code": c, "colour": colour(c)} for c in sorted(codes, key=_code_order)],
        "total": sum(b["total"] for b in bars),
    }


def colour(code: str) -> str:
    return CODE_COLOURS.get(code, OTHER_COLOUR)


def _code_order(code: str) -> tuple[int, str]:
    order = list(CODE_COLOURS)
    return (order.index(code) if code in order else len(order), code)


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
        chart=rejection_chart(reports),
    )


def batch_page(store: ObjectStore, base: str, batch_id: str, code: str | None = None, page: int = 1) -> str:
    report = read_batch_report(store, batch_id)
    items = quarantine_items(store, report)
    shown = [item for item in items if code is None or item.get("code") == code]
    pages = max(1, -(-len(shown) // PER_PAGE))
    page = min(max(1, page), pages)

    def link(**query) -> str:
        query = {k: v for k, v in {"code": code, **query}.items() if v not in (None, 1)}
        return f"{base}/data-quality/{batch_id}" + (f"?{urlencode(query)}" if query else "") + "#quarantine"

    return render_page(
        "batch.html",
        base=base,
        nav="quality",
        title=f"Batch {batch_id}",
        report=report,
        items=shown[(page - 1) * PER_PAGE : page * PER_PAGE],
        listed=len(items),
        matching=len(shown),
        code=code,
        page=page,
        pages=pages,
        first=(page - 1) * PER_PAGE + 1,
        previous_link=link(page=page - 1) if page > 1 else None,
        next_link=link(page=page + 1) if page < pages else None,
        code_link=lambda c: link(code=c, page=None) if c else f"{base}/data-quality/{batch_id}#quarantine",
        colour=colour,
    )
