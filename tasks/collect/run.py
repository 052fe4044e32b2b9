"""One collection run: what the ``collect_<source>`` DAG task and ``vigil collect SOURCE`` both call.

1. load the source from ``include/sources.yaml`` and its cursor from ``state/cursors/<source>.json``;
2. take the collector's candidates (at most ``max_images``); download web media with
   :func:`tasks.net.fetch` and refuse bytes that are not an image (magic bytes, never the
   extension); folder files are kept whatever they are (curation quarantines them visibly);
3. store the raw bytes content-addressed under ``raw/<source>/<date>/<sha256>.<ext>`` (a folder file
   over ``images.max_file_bytes`` is listed without them: ``raw_key`` empty, curation quarantines it);
4. weak-label each image (:mod:`tasks.collect.provenance`) and hash the author;
5. publish the batch manifest last (:func:`tasks.data.batches.write_batch`), then save the cursor.

A run that dies before step 5 publishes nothing and keeps the old cursor: the next run sees the
same items again and re-uses the raw objects already stored (same bytes, same key). A run that
dies between the manifest and the cursor may collect its last items twice; curation drops exact
duplicates. Nothing new: no batch, ``batch_id`` None.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from tasks import net
from tasks.collect import provenance
from tasks.collect.base import Candidate, Collector
from tasks.collect.kinds import KINDS
from tasks.collect.sources import Source, load_sources
from tasks.data import batches
from tasks.images import EXTENSIONS, describe_non_image, sniff_format
from tasks.settings import Settings
from tasks.storage import ObjectStore, sha256_hex

log = logging.getLogger(__name__)

CURSOR_PREFIX = "state/cursors"


def cursor_key(source: str) -> str:
    return f"{CURSOR_PREFIX}/{source}.json"


def load_cursor(store: ObjectStore, source: Source) -> dict[str, Any]:
    """The state the last successful run of ``source`` left (empty for a first run or a new kind)."""
    key = cursor_key(source.name)
    if not store.exists(key):
        return {}
    saved = store.read_json(key)
    if saved.get("kind") != source.kind:
        log.warning(
            "cursor %s was written by a %s source; starting over as %s", key, saved.get("kind"), source.kind
        )
        return {}
    return saved.get("state", {})


def collect(
    source_name: str,
    settings: Settings | None = None,
    store: ObjectStore | None = None,
    token: str | None = None,
    max_images: int | None = None,
) -> dict[str, Any]:
    """Collect new images of one source into a raw batch; returns a JSON-able run summary."""
    settings = settings or Settings()
    store = store or ObjectStore.from_settings(settings)
    source = load_sources(settings).get(source_name)
    if not source.enabled:
        log.warning(
            "source %r is disabled in sources.yaml; collecting anyway because it was asked for by name",
            source.name,
        )
    collector = KINDS[source.kind](
        source, settings, cursor=load_cursor(store, source), token=token, limit=max_images
    )
    log.info("collecting up to %d new images from source %r (%s)", collector.limit, source.name, source.kind)
    run = _Run(source, collector, settings, store)
    for candidate in collector.candidates():
        run.add(candidate)
    return run.finish()


class _Run:
    """The rows of one run, and everything its summary reports."""

    def __init__(self, source: Source, collector: Collector, settings: Settings, store: ObjectStore) -> None:
        self.source, self.collector, self.settings, self.store = source, collector, settings, store
        self.when = batches.utc_now()
        self.rows: list[dict[str, Any]] = []
        self.shas: set[str] = set()
        self.refused: Counter[str] = Counter()
        self.conflicts = 0
        self.withheld = 0  # files over images.max_file_bytes, listed without their bytes
        self.session = net.new_session(settings.download) if collector.downloads else None

    def add(self, item: Candidate) -> None:
        if item.withheld_size is not None:
            self._add_withheld(item)
            return
        data = item.data if item.data is not None else self._download(item)
        if data is None:
            return
        fmt = sniff_format(data)
        if fmt is None and self.collector.downloads:
            what = describe_non_image(data).split(" (")[0]
            log.info("refused %s: not an image (%s)", item.media_url, describe_non_image(data))
            self.refused[f"not an image: {what}"] += 1
            return
        sha = item.sha256 or sha256_hex(data)
        if sha in self.shas:
            self.collector.skip("same image twice in this run")
            return
        self.shas.add(sha)
        key = batches.raw_key(
            self.source.name, sha, EXTENSIONS.get(fmt) or _extension(item.original_name), self.when
        )
        if not self.store.exists(key):
            self.store.write_bytes(key, data)
        self._append(item, sha, key, fmt, len(data), provenance.detect(data))

    def _add_withheld(self, item: Candidate) -> None:
        """A file over images.max_file_bytes: a row without raw bytes, for curation to quarantine."""
        if item.sha256 in self.shas:
            self.collector.skip("same image twice in this run")
            return
        self.shas.add(item.sha256)
        self.withheld += 1
        log.warning(
            "%s is %s bytes, more than images.max_file_bytes=%s: listed without its bytes; curation "
            "quarantines it as too_large_file",
            item.post_id,
            f"{item.withheld_size:,}",
            f"{self.settings.images.max_file_bytes:,}",
        )
        self._append(item, item.sha256, None, None, item.withheld_size, None)

    def _append(
        self,
        item: Candidate,
        sha: str,
        key: str | None,
        fmt: str | None,
        size: int,
        found: provenance.Provenance | None,
    ) -> None:
        label, label_source = provenance.weak_label(
            self.source.label_prior, label=item.label, label_source=item.label_source, provenance=found
        )
        if found and item.label and item.label != found.label:
            self.conflicts += 1
            log.warning(
                "%s is labeled %s by the %s but its %s metadata says %s; keeping %s",
                item.post_id,
                item.label,
                item.label_source,
                found.label_source,
                found.label,
                item.label,
            )
        self.rows.append(
            {
                "sha256": sha,
                "raw_key": key,
                "format": fmt,
                "size_bytes": size,
                "source": self.source.name,
                "source_kind": self.source.kind,
                "post_id": item.post_id,
                "post_url": item.post_url,
                "media_url": item.media_url,
                "author_hash": hashlib.sha256(item.author.encode()).hexdigest() if item.author else None,
                "created_at": _iso_utc(item.created_at),
                "collected_at": self.when.isoformat(),
                "alt_text": item.alt_text,
                "license": item.license,
                "label": label,
                "label_source": label_source,
                "split": item.split,
                "dataset": item.dataset,
                "generator": item.generator or (found.generator if found and label == found.label else None),
                "original_name": item.original_name,
            }
        )

    def _download(self, item: Candidate) -> bytes | None:
        try:
            return net.fetch(item.media_url, self.settings.download, session=self.session).data
        except net.FetchError as exc:
            log.info("refused %s: %s", item.media_url, exc)
            self.refused[f"download failed: {exc.reason}"] += 1
            return None

    def finish(self) -> dict[str, Any]:
        if self.session is not None:
            self.session.close()
        name = self.source.name
        batch = batches.write_batch(self.store, name, self.rows, self.when) if self.rows else None
        self.store.write_json(
            cursor_key(name),
            {"kind": self.source.kind, "state": self.collector.state, "updated_at": self.when.isoformat()},
        )
        summary = {
            "source": name,
            "kind": self.source.kind,
            "batch_id": batch.batch_id if batch else None,
            "manifest": self.store.uri(batch.key) if batch else None,
            "images": len(self.rows),
            "labels": dict(Counter(r["label"] for r in self.rows)),
            "label_sources": dict(Counter(r["label_source"] for r in self.rows)),
            "skipped": dict(self.collector.skipped),
            "refused": dict(self.refused),
            "too_large_files": self.withheld,
            "label_conflicts": self.conflicts,
        }
        log.info("%s", describe(summary))
        return summary


def describe(summary: dict[str, Any]) -> str:
    """The run summary in plain words, for logs and the CLI."""

    def counts(d: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"

    if summary["batch_id"]:
        text = (
            f"source {summary['source']}: stored {summary['images']} new images in batch {summary['batch_id']} "
            f"(labels: {counts(summary['labels'])}; label sources: {counts(summary['label_sources'])}); "
            f"manifest {summary['manifest']}"
        )
    else:
        text = f"source {summary['source']}: nothing new"
    if summary["skipped"]:
        text += f"; skipped: {counts(summary['skipped'])}"
    if summary["refused"]:
        text += f"; refused: {counts(summary['refused'])}"
    if summary.get("too_large_files"):
        text += (
            f"; {summary['too_large_files']} files over images.max_file_bytes listed without their bytes "
            "(curation quarantines them as too_large_file)"
        )
    if summary["label_conflicts"]:
        text += f"; {summary['label_conflicts']} explicit labels contradict provenance metadata (kept)"
    return text


def _extension(name: str | None) -> str:
    """The extension to store a non-image file under: its own if sane, else ``bin``."""
    suffix = (name or "").rsplit(".", 1)[-1].lower() if name and "." in name else ""
    return suffix if re.fullmatch(r"[a-z0-9]{1,8}", suffix) else "bin"


def _iso_utc(value: str | None) -> str | None:
    """ISO 8601 in UTC, whatever the platform's spelling; unparseable values are kept as given."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return parsed.replace(tzinfo=parsed.tzinfo or UTC).astimezone(UTC).isoformat()
