"""Great Expectations Data Docs that work offline, and one index of every batch's validation.

GX's pages load Bootstrap, jQuery, Popper, bootstrap-table, a date picker and Font Awesome from CDNs
(and its logo from S3), so offline — the embedded stack, a closed network — they come unstyled, and
the per-batch ``index.html`` lists nothing (its table is built by bootstrap-table). Each page is
therefore rewritten before upload to load local copies of those files, shipped in
``tasks/curate/static/`` (versions, sources and licences: its README.md) and uploaded once per store to
``reports/data_docs/static/``. Loads without a local copy (Vega charts, which this suite never draws;
GX's dark theme) are removed: a page makes no request outside the site.

The pages link the shared folder by relative paths, so they work from the store itself (a local folder
opened in a browser) and through the Airflow plugin, which serves ``reports/`` under
``/vigil/data-quality/`` with the same layout. ``reports/data_docs/index.html`` is the cumulative index:
one static page, without JavaScript, listing every curated batch with its rejected share, reasons and
expectations, linking each batch's validation page; ``index.json`` next to it is its data.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasks.storage import ObjectStore

log = logging.getLogger(__name__)

REPORTS = "reports"
SITE = "data_docs"  # reports/data_docs/: the cumulative index and the shared static files
SITE_PREFIX = f"{REPORTS}/{SITE}"
STATIC_PREFIX = f"{SITE_PREFIX}/static"
INDEX_HTML = f"{SITE_PREFIX}/index.html"
INDEX_JSON = f"{SITE_PREFIX}/index.json"
STATIC_DIR = Path(__file__).resolve().parent / "static"
_STAMP = "STAMP"  # reports/data_docs/static/STAMP: which set of files was uploaded

# CDN URL (without query) -> the local copy in tasks/curate/static/.
LOCAL_COPIES = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap-4.3.1.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap-4.3.1.min.js",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery-3.7.1.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper-1.12.9.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "bootstrap-table-1.19.1.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table-1.19.1.min.js",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css": "bootstrap-table-filter-control-1.19.1.min.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css": "bootstrap-table-filter-control-1.19.1.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js": "bootstrap-table-filter-control-1.19.1.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css": "bootstrap-datepicker-1.9.0.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js": "bootstrap-datepicker-1.9.0.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "fontawesome-6.6.0.min.css",
    "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png": "gx-logo-long.png",
}
# GX's own site files, shared by every page (the per-batch static/ folder is not uploaded).
LOCAL_SITE_FILES = {"static/images/favicon.ico": "gx-favicon.ico"}

_TAG = re.compile(r"<(link|script|img)\b([^>]*)>(\s*</script>)?", re.IGNORECASE | re.DOTALL)
_URL_ATTR = re.compile(r"""\b(href|src)\s*=\s*(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_SRI_ATTR = re.compile(r"""\s(integrity|crossorigin)(\s*=\s*(["']).*?\3)?""", re.IGNORECASE | re.DOTALL)
_REMOTE_CSS_URL = re.compile(r"""url\(\s*(["']?)https?://[^)]*\)""", re.IGNORECASE)


def localise(html: str, to_reports: str) -> str:
    """``html`` loading only local files: CDN links point to the shared static folder (``to_reports``
    is the relative path from the page to ``reports/``), other remote loads are removed."""

    def replace(match: re.Match) -> str:
        tag, attrs, closing = match.group(1), match.group(2), match.group(3) or ""
        url = _URL_ATTR.search(attrs)
        if url is None or (tag.lower() == "link" and "stylesheet" not in attrs and "icon" not in attrs):
            return match.group(0)  # <a>-like links and preloads are not loads we rewrite
        target = url.group(3)
        local = LOCAL_COPIES.get(target.split("?", 1)[0])
        if local is None:
            site_file = re.sub(r"^(\./|\.\./)+", "", target)
            local = LOCAL_SITE_FILES.get(site_file)
            if local is None:
                return "" if re.match(r"^(https?:)?//", target) else match.group(0)
        new_attrs = _SRI_ATTR.sub("", attrs)  # our own copy: no SRI hash or CORS mode to satisfy
        new_attrs = _URL_ATTR.sub(
            lambda m: f"{m.group(1)}={m.group(2)}{to_reports}{SITE}/static/{local}{m.group(2)}", new_attrs, 1
        )
        return f"<{match.group(1)}{new_attrs}>{closing}"

    return _REMOTE_CSS_URL.sub("none", _TAG.sub(replace, html))


def upload_site(site_dir: Path, store: ObjectStore, prefix: str) -> tuple[str, list[str]]:
    """Upload a batch's Data Docs pages under ``prefix``, rewritten by :func:`localise`.

    Returns the index key and the pages (relative to the site), validation results first.
    """
    ensure_static(store)
    below_reports = len(PurePosixPath(prefix).parts) - 1  # reports/<batch_id>/data_docs -> 2
    pages = sorted(site_dir.rglob("*.html"))
    relative = []
    for path in pages:
        rel = path.relative_to(site_dir).as_posix()
        to_reports = "../" * (len(PurePosixPath(rel).parts) - 1 + below_reports)
        store.write_bytes(f"{prefix}/{rel}", localise(path.read_text(), to_reports).encode())
        relative.append(rel)
    log.debug("uploaded %d Data Docs pages under %s", len(pages), store.uri(prefix))
    relative.sort(key=lambda p: (not p.startswith("validations/"), p != "index.html", p))
    return f"{prefix}/index.html", relative


def static_files() -> list[Path]:
    return sorted(p for p in STATIC_DIR.iterdir() if p.is_file())


def ensure_static(store: ObjectStore) -> None:
    """Upload the shared static files once per store (and again when the shipped set changes)."""
    files = static_files()
    stamp = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()
    key = f"{STATIC_PREFIX}/{_STAMP}"
    if store.exists(key) and store.read_bytes(key).decode() == stamp:
        return
    for path in files:
        store.write_bytes(f"{STATIC_PREFIX}/{path.name}", path.read_bytes())
    store.write_bytes(key, stamp.encode())
    log.info("uploaded %d Data Docs static files to %s", len(files), store.uri(STATIC_PREFIX))


def index_entry(report: dict[str, Any]) -> dict[str, Any]:
    """What the cumulative index shows of one batch, from its summary.json."""
    expectations = report.get("expectations") or {}
    counts = report.get("counts") or {}
    return {
        "batch_id": report.get("batch_id"),
        "source": report.get("source"),
        "started_at": report.get("started_at"),
        "status": report.get("status"),
        "version": report.get("version"),
        "images": counts.get("images"),
        "quarantined": counts.get("quarantined"),
        "failure_ratio": report.get("failure_ratio"),
        "max_failure_ratio": report.get("max_failure_ratio"),
        "by_code": (report.get("quarantine") or {}).get("by_code") or {},
        "expectations_evaluated": expectations.get("evaluated"),
        "expectations_unsuccessful": expectations.get("unsuccessful"),
        "expectations_success": expectations.get("success"),
        "validation_page": expectations.get("validation_page"),
    }


def update_index(store: ObjectStore, reports: list[dict[str, Any]]) -> str:
    """Add ``reports`` to the cumulative index (read, merge by batch id, rewrite); returns its key.

    Runs under the curation lock. A store without ``index.json`` (made before it existed) is indexed
    from every ``reports/<batch_id>/summary.json`` once.
    """
    from tasks.html import render

    if store.exists(INDEX_JSON):
        entries = {e["batch_id"]: e for e in store.read_json(INDEX_JSON)}
    else:
        summaries = [k for k in store.list(REPORTS) if k.count("/") == 2 and k.endswith("/summary.json")]
        entries = {}
        for key in summaries:
            entry = index_entry(store.read_json(key))
            entries[entry["batch_id"]] = entry
    for report in reports:
        entry = index_entry(report)
        entries[entry["batch_id"]] = entry
    ordered = sorted(entries.values(), key=lambda e: (e.get("started_at") or "", e["batch_id"]), reverse=True)
    store.write_json(INDEX_JSON, ordered)
    store.write_bytes(INDEX_HTML, render("curate/data_docs_index.html", entries=ordered).encode())
    return INDEX_HTML
