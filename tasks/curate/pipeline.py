"""Curation: from the new raw batches to one new immutable dataset snapshot.

A run with new batches holds the store's curation lock (:mod:`tasks.curate.lock`: a second run waits,
bounded, then finds nothing left or stops with a message), and first removes what killed runs left
(:mod:`tasks.curate.leftovers`: spools whose pid is dead, stale ``.tmp-*`` files). For every raw batch
that is not yet in the latest snapshot (and not recorded as failed):

1. validate and normalise each image in parallel (:mod:`tasks.curate.process`); rejected images are
   copied to ``quarantine/<batch_id>/<sha256>.<ext>`` with ``<sha256>.json`` giving the reason, and
   listed in ``reports/<batch_id>/quarantine.json``;
2. run the Great Expectations suite over the batch's whole table, quarantined images included; Data
   Docs go to ``reports/<batch_id>/data_docs/`` and into the index of every batch
   (:mod:`tasks.curate.data_docs`);
3. if the share of rejected images exceeds ``curation.max_failure_ratio``, the batch fails: nothing
   of it is published and its report says so, so later runs skip it until it is re-queued
   (``vigil curate --retry BATCH_ID``);
4. otherwise drop duplicates against the whole curated store (:mod:`tasks.curate.dedupe`), assign
   splits by near-duplicate group, and upload the kept images to ``curated/<image_id>.png``.

Then one snapshot manifest is published on top of the latest one (objects first, manifest last), and
each batch's ``reports/<batch_id>/summary.json`` is written. A run with no new batch does nothing.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.curate import data_docs
from tasks.curate.dedupe import DuplicateIndex
from tasks.curate.expectations import load_suite, suite_parameters, validate_batch
from tasks.curate.leftovers import new_spool, remove_spool, remove_stale_spools, remove_stale_temporaries
from tasks.curate.lock import LockBusy, StoreLock
from tasks.curate.process import PREVIEWABLE_CODES, ImagePool, ImageResult, ImageWorker
from tasks.data.batches import HUMAN_LABELS, Batch, batch_id_of, list_batches, read_batch
from tasks.data.snapshots import (
    CURATION_COLUMNS,
    LABEL_DIRS,
    SNAPSHOT_COLUMNS,
    Snapshot,
    export_path,
    latest_version,
    publish_snapshot,
    read_snapshot,
)
from tasks.settings import Settings
from tasks.storage import ObjectStore

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd

    from tasks.curate.expectations import SuiteSpec

log = logging.getLogger(__name__)

CURATED_PREFIX = "curated"
QUARANTINE_PREFIX = "quarantine"
REPORT_PREFIX = "reports"
# Raw manifest columns carried into the snapshot unchanged.
RAW_CARRIED = (
    "sha256",
    "raw_key",
    "source",
    "source_kind",
    "label",
    "label_source",
    "generator",
    "post_id",
    "post_url",
    "media_url",
    "author_hash",
    "created_at",
    "collected_at",
    "alt_text",
    "license",
    "dataset",
    "original_name",
)
INTEGER_COLUMNS = frozenset({"width", "height", "original_size_bytes", "original_width", "original_height"})
MAX_LISTED_REJECTIONS = 200
# Where curation writes: its hidden temporaries left by a killed run are removed from these.
WRITTEN_PREFIXES = (CURATED_PREFIX, QUARANTINE_PREFIX, REPORT_PREFIX, "snapshots", "locks")
UPLOAD_THREADS = 8


class CurationError(RuntimeError):
    """A curation request that cannot be honoured (e.g. re-queueing an unknown batch)."""


class CurationBusy(CurationError):
    """Another curation holds the store's lock and the wait (``curation.lock_wait_s``) is over."""


def report_key(batch_id: str) -> str:
    return f"{REPORT_PREFIX}/{batch_id}/summary.json"


def quarantine_index_key(batch_id: str) -> str:
    """Every rejection of a batch (the summary lists the first 200): what the batch page browses."""
    return f"{REPORT_PREFIX}/{batch_id}/quarantine.json"


def curated_key(image_id: str) -> str:
    return f"{CURATED_PREFIX}/{image_id}.png"


def curate(
    settings: Settings | None = None, store: ObjectStore | None = None, retry: Sequence[str] = ()
) -> dict[str, Any]:
    """Curate every new raw batch into one new snapshot; returns a JSON-able summary.

    ``retry`` re-queues batches recorded as failed (or passed with nothing new). Batch failures do
    not raise: they are listed under ``failed_batches`` (see :func:`failed_batches_message`), so the
    batches that passed are still published.
    """
    settings = settings or Settings()
    store = store or ObjectStore.from_settings(settings)
    remove_stale_spools(settings.home)
    latest = read_snapshot(store) if latest_version(store) else None
    if not pending_batches(store, latest, retry):
        return _nothing_to_do(store, latest)
    config = settings.curation
    try:
        lock = StoreLock(store, "curate", ttl_s=config.lock_ttl_s, wait_s=config.lock_wait_s).acquire()
    except LockBusy as exc:
        raise CurationBusy(
            f"{exc}. Nothing was changed. Curation runs one at a time per store: run it again once the other "
            f"one has finished (curation.lock_wait_s={config.lock_wait_s:g} sets how long to wait); "
            f"a killed run's lock is taken over once its lease expires."
        ) from None
    try:
        # Under the lock: another run may have curated the same batches while this one waited.
        latest = read_snapshot(store) if latest_version(store) else None
        pending = pending_batches(store, latest, retry)
        if not pending:
            return _nothing_to_do(store, latest)
        remove_stale_temporaries(store, WRITTEN_PREFIXES, config.temp_grace_s)
        return _curate(settings, store, latest, pending)
    finally:
        lock.release()


def _nothing_to_do(store: ObjectStore, latest: Snapshot | None) -> dict[str, Any]:
    log.info(
        "nothing to curate: no new raw batch in %s (latest snapshot: %s)",
        store.url,
        latest.version if latest else "none",
    )
    return _summary(latest, None, [])


def _curate(
    settings: Settings, store: ObjectStore, latest: Snapshot | None, pending: list[str]
) -> dict[str, Any]:
    suite = load_suite(settings)
    index = DuplicateIndex.from_table(
        latest.table if latest else None, settings.curation.near_duplicate_distance
    )
    log.info(
        "curating %d new raw batch(es) into %s on top of snapshot %s (%d images indexed)",
        len(pending),
        store.url,
        latest.version if latest else "none",
        len(index),
    )
    outcomes: list[BatchOutcome] = []
    spool = new_spool(settings.home)
    try:
        with ImagePool(
            ImageWorker(store.url, settings.s3_endpoint_url, settings.images, str(spool)),
            settings.curation.workers,
        ) as pool:
            curator = BatchCurator(settings, store, pool, index, suite)
            for key in pending:
                outcomes.append(curator.run(read_batch(store, key)))
    finally:
        remove_spool(spool)

    new_rows = [row for outcome in outcomes for row in outcome.rows]
    relabels = {sha: label for outcome in outcomes for sha, label in outcome.relabels.items()}
    snapshot = None
    if new_rows or relabels:
        snapshot = publish_snapshot(
            store,
            _snapshot_table(latest, new_rows, relabels),
            latest.version if latest else None,
            batches=[*(latest.batches if latest else ()), *(o.batch_id for o in outcomes if o.passed)],
            extra={"new_images": str(len(new_rows)), "relabelled": str(len(relabels))},
        )
        log.info(
            "published snapshot %s (parent %s): %d new images, %d relabelled by feedback, %d in total; manifest %s",
            snapshot.version,
            snapshot.parent,
            len(new_rows),
            len(relabels),
            len(snapshot.table),
            store.uri(snapshot.key),
        )
    docs_index = store.uri(data_docs.INDEX_HTML)
    for outcome in outcomes:  # after the manifest: a report never names a version that is not there
        outcome.report["version"] = snapshot.version if snapshot and outcome.passed else None
        outcome.report["links"]["data_docs_index"] = docs_index
        store.write_json(report_key(outcome.batch_id), outcome.report)
        log.info(
            "batch %s %s: report %s ; data docs %s",
            outcome.batch_id,
            outcome.report["status"],
            store.uri(report_key(outcome.batch_id)),
            outcome.report["links"].get("data_docs"),
        )
    data_docs.update_index(store, [o.report for o in outcomes])
    log.info("Data Docs index of every batch: %s", docs_index)
    summary = _summary(latest, snapshot, outcomes, store)
    if not snapshot:
        log.info("no new images: no snapshot published")
    return summary


def pending_batches(store: ObjectStore, latest: Snapshot | None, retry: Sequence[str] = ()) -> list[str]:
    """Keys of the batch manifests to curate now, oldest first.

    A batch is done when the latest snapshot lists it, or when its report says it failed or brought
    nothing new; ``retry`` overrides the report (never the snapshot).
    """
    published = set(latest.batches) if latest else set()
    keys = {batch_id_of(k): k for k in list_batches(store)}
    for batch_id in retry:
        if batch_id not in keys:
            raise CurationError(f"cannot retry batch {batch_id!r}: no such raw batch in {store.url}")
        if batch_id in published:
            raise CurationError(
                f"cannot retry batch {batch_id!r}: it is already in snapshot {latest.version}"
            )
    pending = []
    for batch_id, key in keys.items():
        if batch_id in published:
            continue
        if batch_id not in retry and store.exists(report_key(batch_id)):
            report = store.read_json(report_key(batch_id))
            if report.get("status") == "failed" or report.get("counts", {}).get("new_images") == 0:
                continue
        pending.append(key)
    return sorted(pending, key=lambda k: (_batch_time(batch_id_of(k)), k))


def _batch_time(batch_id: str) -> str:
    parts = batch_id.rsplit("-", 2)
    return parts[1] if len(parts) == 3 else batch_id


@dataclass
class BatchOutcome:
    batch_id: str
    passed: bool
    report: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    # raw sha256 -> (label, label_source) given by a person (feedback, review)
    relabels: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass
class BatchCurator:
    """Validates, deduplicates and uploads one raw batch at a time, sharing one index and pool."""

    settings: Settings
    store: ObjectStore
    pool: ImagePool
    index: DuplicateIndex
    suite: SuiteSpec

    def run(self, batch: Batch) -> BatchOutcome:
        table = batch.table
        # Missing values as None (pandas may hold them as NaN, which is truthy).
        records = table.astype(object).where(table.notna(), None).to_dict("records")
        started = _now()
        limit = self.settings.curation.max_failure_ratio
        # Raw bytes that are already curated need no decoding: they are exact duplicates.
        known = [r["sha256"] in self.index.raw_labels for r in records]
        known_count = sum(known)
        relabels = {
            r["sha256"]: (r["label"], r["label_source"])
            for r, is_known in zip(records, known, strict=True)
            if is_known
            and r.get("label_source") in HUMAN_LABELS
            and r.get("label") in LABEL_DIRS
            and r["label"] != self.index.raw_labels[r["sha256"]]
        }
        decoded = iter(
            self.pool.map(
                [
                    (r["sha256"], r["raw_key"], int(r["size_bytes"]))
                    for r, k in zip(records, known, strict=True)
                    if not k
                ]
            )
        )
        results: list[ImageResult | None] = []  # per record, None for the already-curated ones
        verdicts: Counter[str] = Counter({"exact": known_count})
        rejected: list[tuple[dict, ImageResult]] = []
        accepted: list[tuple[dict, ImageResult]] = []
        undecided: list[tuple[dict, ImageResult]] = []
        rows: list[dict[str, Any]] = []
        overridden = 0

        def may_fail() -> bool:  # could the rejected share still exceed the limit?
            return len(records) - len(accepted) - known_count > limit * len(records)

        with ThreadPoolExecutor(UPLOAD_THREADS) as threads:
            uploads = []

            def flush() -> None:
                nonlocal overridden
                for item in undecided:
                    row, was_overridden = self._decide(item, batch.batch_id, verdicts, started)
                    overridden += was_overridden
                    if row:
                        rows.append(row)
                        uploads.append(threads.submit(self._upload, row, item[1].spooled))
                undecided.clear()

            for record, is_known in zip(records, known, strict=True):
                if is_known:
                    results.append(None)
                    continue
                result = next(decoded)
                results.append(result)
                (accepted if result.accepted else rejected).append((record, result))
                if result.accepted:
                    undecided.append((record, result))
                # Once the batch cannot fail any more, decide and upload while the rest is still
                # decoding; until then, normalised images wait in the local spool.
                if not may_fail():
                    flush()
            failed = may_fail()
            if not failed:
                flush()
            for upload in uploads:
                upload.result()

        quarantine_prefix = f"{QUARANTINE_PREFIX}/{batch.batch_id}"
        self._quarantine(batch, rejected, quarantine_prefix)
        items = [
            {
                "sha256": res.sha256,
                "raw_key": res.raw_key,
                "code": res.code,
                "message": res.message,
                "original_name": r.get("original_name"),
                "post_id": r.get("post_id"),
                "preview": res.code in PREVIEWABLE_CODES and res.raw_key is not None,
            }
            for r, res in rejected
        ]
        self.store.write_json(quarantine_index_key(batch.batch_id), items)
        expectations = validate_batch(
            self.suite,
            suite_parameters(self.settings),
            validation_table(records, results, table),
            batch.batch_id,
            self.store,
            f"{REPORT_PREFIX}/{batch.batch_id}/data_docs",
        )
        ratio = len(rejected) / len(records) if records else 0.0
        by_code = dict(sorted(Counter(res.code for _, res in rejected).items()))
        report: dict[str, Any] = {
            "batch_id": batch.batch_id,
            "source": batch.source,
            "batch_manifest": self.store.uri(batch.key),
            "started_at": started,
            "failure_ratio": round(ratio, 4),
            "max_failure_ratio": limit,
            "quarantine": {
                "by_code": by_code,
                "prefix": self.store.uri(quarantine_prefix) if rejected else None,
                "index": self.store.uri(quarantine_index_key(batch.batch_id)),
                "items": items[:MAX_LISTED_REJECTIONS],
            },
            "expectations": expectations,
            "links": {
                "summary": self.store.uri(report_key(batch.batch_id)),
                "data_docs": expectations["data_docs"],
            },
        }
        good = len(accepted) + known_count
        if failed:
            message = (
                f"batch {batch.batch_id} failed: {len(rejected)} of {len(records)} images rejected "
                f"({ratio:.0%}), more than curation.max_failure_ratio={limit:.0%}; nothing from it was "
                f"published. Rejections by reason: {by_code}. "
                f"Quarantine: {self.store.uri(quarantine_prefix)}. Fix the source or the settings, "
                f"then re-queue it with `vigil curate --retry {batch.batch_id}`."
            )
            log.error(message)
            report.update(
                status="failed",
                message=message,
                counts=_counts(len(records), good, len(rejected), Counter(), 0),
            )
            return BatchOutcome(batch.batch_id, False, report)

        relabelled = f"; {len(relabels)} stored images relabelled by feedback" if relabels else ""
        report.update(
            status="passed",
            message=f"{len(rows)} new images from {len(records)} in the batch{relabelled}",
            counts=_counts(len(records), good, len(rejected), verdicts, len(rows), overridden, len(relabels)),
        )
        log.info("batch %s: %s", batch.batch_id, report["counts"])
        return BatchOutcome(batch.batch_id, True, report, rows, relabels)

    def _decide(
        self, item: tuple[dict, ImageResult], batch_id: str, verdicts: Counter, curated_at: str
    ) -> tuple[dict[str, Any] | None, bool]:
        """Dedupe one accepted image against the index; its snapshot row if it is kept."""
        record, result = item
        decision = self.index.decide(
            result.image_id,
            result.phash,
            record["label"],
            record.get("split"),
            self.settings.curation.split_ratios,
        )
        verdicts[decision.verdict] += 1
        row = _snapshot_row(record, result, decision, batch_id, curated_at) if decision.keep else None
        return row, decision.split_overridden

    def _upload(self, row: dict[str, Any], spooled: str) -> None:
        """Copy a kept image from the spool to ``curated/<image_id>.png`` (content addressed)."""
        if not self.store.exists(row["key"]):
            self.store.write_bytes(row["key"], Path(spooled).read_bytes())

    def _quarantine(self, batch: Batch, rejected: list[tuple[dict, ImageResult]], prefix: str) -> None:
        def move(item: tuple[dict, ImageResult]) -> None:
            record, result = item
            reason = {
                "code": result.code,
                "message": result.message,
                "source": batch.source,
                "batch_id": batch.batch_id,
                "raw_key": result.raw_key,
                "sha256": result.sha256,
                "original_name": record.get("original_name"),
                "post_id": record.get("post_id"),
                "quarantined_at": _now(),
            }
            if result.raw_key is not None and result.code != "missing_raw":
                self.store.write_bytes(
                    quarantined_key(prefix, result.sha256, result.raw_key),
                    self.store.read_bytes(result.raw_key),
                )
            self.store.write_json(f"{prefix}/{result.sha256}.json", reason)

        with ThreadPoolExecutor(UPLOAD_THREADS) as threads:
            list(threads.map(move, rejected))
        if rejected:
            log.warning(
                "batch %s: %d image(s) quarantined under %s",
                batch.batch_id,
                len(rejected),
                self.store.uri(prefix),
            )


def quarantined_key(prefix: str, sha256: str, raw_key: str) -> str:
    """Where the raw bytes of a rejected image are kept: ``<prefix>/<sha256>.<the raw key's extension>``."""
    name = raw_key.rsplit("/", 1)[-1]
    ext = name.rsplit(".", 1)[-1] if "." in name else "bin"
    return f"{prefix}/{sha256}.{ext}"


def _counts(
    images: int,
    accepted: int,
    quarantined: int,
    verdicts: Counter,
    new: int,
    overridden: int = 0,
    relabelled: int = 0,
) -> dict[str, int]:
    return {
        "images": images,
        "accepted": accepted,
        "quarantined": quarantined,
        "exact_duplicates": verdicts["exact"],
        "near_duplicates_dropped": verdicts["near_dropped"],
        "near_duplicates_kept": verdicts["near_kept"],
        "split_conflicts_dropped": verdicts["split_conflict"],
        "source_split_overridden": overridden,
        "new_images": new,
        "relabelled": relabelled,
    }


def validation_table(
    records: list[dict[str, Any]], results: list[ImageResult | None], batch_table: pd.DataFrame
) -> pd.DataFrame:
    """The table the GX suite checks: every image of the batch, quarantined ones included.

    Raw manifest columns plus ``status`` (``accepted``, ``rejected``, or ``already_curated``: raw bytes
    curated before, not decoded again), ``rejection_code`` (None unless rejected), and what decoding
    found (``width``, ``height``, ``original_mode``, ``image_id``, ``phash``; None when not decoded).
    ``is_fake`` (1 fake, 0 real) is None for rejected and unknown-label images: the class balance is
    that of the images that pass.
    """
    import pandas as pd

    rows = []
    for record, res in zip(records, results, strict=True):
        passed = res is None or res.accepted
        rows.append(
            {
                **record,
                "status": "already_curated" if res is None else ("accepted" if res.accepted else "rejected"),
                "rejection_code": None if passed else res.code,
                "width": res.width if res else None,
                "height": res.height if res else None,
                "original_mode": res.original_mode if res else None,
                "image_id": res.image_id if res else None,
                "phash": res.phash if res else None,
                "is_fake": {"fake": 1.0, "real": 0.0}.get(record["label"]) if passed else None,
            }
        )
    columns = [
        *batch_table.columns,
        "status",
        "rejection_code",
        "width",
        "height",
        "original_mode",
        "image_id",
        "phash",
        "is_fake",
    ]
    table = pd.DataFrame(rows, columns=columns)
    return table.astype({"is_fake": "float64", "width": "float64", "height": "float64"})


def _snapshot_row(
    record: dict[str, Any], result: ImageResult, decision: Any, batch_id: str, curated_at: str
) -> dict[str, Any]:
    label = record["label"]
    return {
        **{col: record.get(col) for col in RAW_CARRIED},
        "image_id": result.image_id,
        "key": curated_key(result.image_id),
        "path": export_path(decision.split, label, result.image_id),
        "split": decision.split,
        "batch_id": batch_id,
        "group_id": decision.group_id,
        "phash": result.phash,
        "width": result.width,
        "height": result.height,
        "original_format": result.original_format,
        "original_size_bytes": int(record["size_bytes"]),
        "original_width": result.original_width,
        "original_height": result.original_height,
        "original_mode": result.original_mode,
        "conversions": result.conversions,
        "near_duplicate_of": decision.duplicate_of,
        "curated_at": curated_at,
    }


def _snapshot_table(
    latest: Snapshot | None, rows: list[dict[str, Any]], relabels: dict[str, tuple[str, str]] | None = None
) -> pd.DataFrame:
    """The next manifest: the latest one, with human corrections applied, plus the new rows."""
    import pandas as pd

    columns = [*SNAPSHOT_COLUMNS, *(c for c in CURATION_COLUMNS if c not in SNAPSHOT_COLUMNS)]
    # Explicit types, so that a column that is empty in one snapshot has the same type in the next.
    new = pd.DataFrame(rows, columns=columns).astype(
        {c: "int64" if c in INTEGER_COLUMNS else "str" for c in columns}
    )
    if latest is None or latest.table.empty:
        return new
    kept = latest.table
    if relabels:
        kept = kept.copy()
        hit = kept["sha256"].isin(relabels.keys())
        kept.loc[hit, "label"] = kept.loc[hit, "sha256"].map(lambda sha: relabels[sha][0])
        kept.loc[hit, "label_source"] = kept.loc[hit, "sha256"].map(lambda sha: relabels[sha][1])
        kept.loc[hit, "path"] = [
            export_path(split, label, image_id)
            for split, label, image_id in zip(
                kept.loc[hit, "split"], kept.loc[hit, "label"], kept.loc[hit, "image_id"], strict=True
            )
        ]
    return pd.concat([kept, new], ignore_index=True) if rows else kept


def _summary(
    latest: Snapshot | None,
    snapshot: Snapshot | None,
    outcomes: list[BatchOutcome],
    store: ObjectStore | None = None,
) -> dict[str, Any]:
    totals: Counter[str] = Counter()
    quarantined: Counter[str] = Counter()
    for outcome in outcomes:
        totals.update(outcome.report.get("counts", {}))
        quarantined.update(outcome.report["quarantine"]["by_code"])
    current = snapshot or latest
    return {
        "version": snapshot.version if snapshot else None,
        "parent": latest.version if latest else None,
        "latest": current.version if current else None,
        "new_images": len(snapshot.table) - (len(latest.table) if latest else 0) if snapshot else 0,
        "relabelled": totals["relabelled"],
        "images": len(current.table) if current else 0,
        "counts": snapshot.counts if snapshot else None,
        "batches": [o.batch_id for o in outcomes],
        "passed_batches": [o.batch_id for o in outcomes if o.passed],
        "failed_batches": [
            {"batch_id": o.batch_id, "message": o.report["message"], "report": o.report["links"]["summary"]}
            for o in outcomes
            if not o.passed
        ],
        "quarantined": dict(sorted(quarantined.items())),
        "duplicates": {
            "exact": totals["exact_duplicates"],
            "near_dropped": totals["near_duplicates_dropped"],
            "near_kept": totals["near_duplicates_kept"],
            "split_conflicts_dropped": totals["split_conflicts_dropped"],
        },
        "reports": [o.report["links"]["summary"] for o in outcomes],
        "data_docs": [o.report["links"]["data_docs"] for o in outcomes],
        "manifest": store.uri(snapshot.key) if snapshot and store else None,
    }


def failed_batches_message(summary: dict[str, Any]) -> str | None:
    """One message for every batch that failed in this run, or None when all passed."""
    failed = summary.get("failed_batches") or []
    if not failed:
        return None
    return "\n".join(f"{item['message']} Report: {item['report']}" for item in failed)


def asset_extra(summary: dict[str, Any]) -> dict[str, Any]:
    """What the ``curated_dataset`` Asset event carries for downstream DAGs (training)."""
    return {
        "version": summary["version"],
        "parent": summary["parent"],
        "new_images": summary["new_images"],
        "relabelled": summary["relabelled"],
        "images": summary["images"],
        "counts": summary["counts"],
        "manifest": summary["manifest"],
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
