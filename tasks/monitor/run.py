"""One monitoring run: the prediction-log parts written since the last run, as windows.

What a run does (``vigil monitor``, the ``monitor`` DAG), under the store's ``monitor`` lock:

1. **Windows.** Lists the log's date partitions of the last ``window.lookback_days`` days (the cost
   follows the new parts, not the log: see bench/monitor.py), reads the parts not processed yet, and
   cuts them into windows of whole parts of at most ``window.max_rows`` rows; fewer than
   ``window.min_rows`` new rows wait for the next run.
2. **Tests per group.** A group is a model version (rows of several versions during a roll-out are
   never mixed) and, within it, each source with at least ``window.min_group_rows`` rows. Each group
   is compared with its version's reference (:mod:`tasks.monitor.reference`) by the drift tests
   (:mod:`tasks.monitor.drift`) and the label-free accuracy estimate (:mod:`tasks.monitor.accuracy`);
   the signals of ``alert.signals`` make it *drifting*.
3. **Alerts.** A group drifting in ``alert.consecutive_windows`` consecutive windows raises one alert
   (``monitor/alerts/<alert_id>.json``; the DAG emits it as a ``drift_alert`` Asset event) and opens a
   review campaign: ``review.drift_sample`` images of that window, the least reference-like first.
4. **Review queue.** The window's near-threshold and audit images (serving kept their bytes), pending
   feedback claims that disagree with the model, the campaign's images; expired items go; the kept
   bytes of a processed window that were not queued are deleted.
5. **Labels.** New trusted labels (review decisions, trusted feedback) are counted per day, model
   version, source and label set; measured accuracy over ``accuracy.label_days`` days, and whether it
   shows a drop on the champion (``retrain.accuracy_drop``; ``monitor/accuracy.json``).

Per window: ``monitor/windows/date=YYYY-MM-DD/<window_id>/summary.json`` (every number),
``report.html`` (Evidently, self-contained) and ``report.json`` (its snapshot); ``monitor/series.json``
keeps the last windows' key numbers for the Monitoring page; ``monitor/state.json`` what was done.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.monitor import predictions
from tasks.monitor.accuracy import accuracy_drop, expected_accuracy, measured
from tasks.monitor.drift import Sample, compare, histogram
from tasks.review import claims as claim_records
from tasks.review import queue
from tasks.review.candidates import AUDIT, NEAR_THRESHOLD, is_candidate_key
from tasks.review.claims import SERVING_LABELS

if TYPE_CHECKING:
    from tasks.monitor.config import MonitorConfig
    from tasks.monitor.reference import Reference
    from tasks.settings import Settings
    from tasks.storage import ObjectStore

log = logging.getLogger(__name__)

STATE_KEY = "monitor/state.json"
SERIES_KEY = "monitor/series.json"
ACCURACY_KEY = "monitor/accuracy.json"
WINDOWS_PREFIX = "monitor/windows"
ALERTS_PREFIX = "monitor/alerts"
SERIES_LENGTH = 500
LOCK_TTL_S, LOCK_WAIT_S = 120.0, 900.0
LABEL_SETS = ("audit", "near_threshold", "claim", "drift", "feedback")
SIGNAL_WORDS = {
    "score": "score",
    "verdict": "verdict share",
    "embedding": "embeddings",
    "estimated_accuracy": "estimated accuracy",
}


def window_prefix(window_id: str) -> str:
    """``monitor/windows/date=YYYY-MM-DD/<window_id>`` (the id starts with the newest row's time)."""
    if not re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{8}", window_id or ""):
        raise ValueError(f"invalid window id {window_id!r}")
    day = f"{window_id[:4]}-{window_id[4:6]}-{window_id[6:8]}"
    return f"{WINDOWS_PREFIX}/date={day}/{window_id}"


def group_id(model_name: str, version: str, source: str | None = None) -> str:
    return f"{model_name}/v{version}" + (f"/source={source}" if source is not None else "")


def monitor(
    settings: Settings | None = None, config: MonitorConfig | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Process the new windows of the prediction log; the run's summary (also what the DAG emits)."""
    from tasks.curate.lock import LockBusy, StoreLock
    from tasks.monitor.config import load_monitor_config
    from tasks.settings import Settings
    from tasks.storage import ObjectStore

    settings = settings or Settings()
    config = config or load_monitor_config(settings)
    store = ObjectStore.from_settings(settings)
    inbox = ObjectStore(settings.inbox, endpoint_url=settings.s3_endpoint_url)
    try:
        lock = StoreLock(store, "monitor", ttl_s=LOCK_TTL_S, wait_s=LOCK_WAIT_S).acquire()
    except LockBusy as exc:
        raise RuntimeError(f"another monitoring run holds {store.uri('locks/monitor')}: {exc}") from None
    try:
        return Run(settings, config, store, inbox, now or datetime.now(UTC)).run()
    finally:
        lock.release()


def pending_rows(settings: Settings | None = None, config: MonitorConfig | None = None) -> int:
    """Rows of the prediction log no monitoring run has processed yet (within the lookback)."""
    from tasks.monitor.config import load_monitor_config
    from tasks.settings import Settings
    from tasks.storage import ObjectStore

    settings = settings or Settings()
    config = config or load_monitor_config(settings)
    store = ObjectStore.from_settings(settings)
    state = store.read_json(STATE_KEY) if store.exists(STATE_KEY) else {}
    seen = {k for day_keys in state.get("parts", {}).values() for k in day_keys}
    today = datetime.now(UTC).date()
    keys = predictions.list_parts(store, today - timedelta(days=config.window.lookback_days), today)
    total = 0
    for key in keys:
        if key not in seen:
            with contextlib.suppress(FileNotFoundError):
                total += len(predictions.read_part(store, key))
    return total


@dataclass
class Run:
    settings: Settings
    config: MonitorConfig
    store: ObjectStore
    inbox: ObjectStore
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    references: dict[tuple[str, str], Reference | str] = field(default_factory=dict)
    _waiting: tuple[int, int] = (0, 0)  # (parts, rows) below window.min_rows, read again next run
    _labels_state: dict[str, Any] = field(default_factory=dict)
    _claims_since: float = 0.0

    def run(self) -> dict[str, Any]:
        state = self._read(STATE_KEY, {})
        done: dict[str, list[str]] = state.get("parts", {})
        today = self.now.date()
        since = today - timedelta(days=self.config.window.lookback_days)
        keys = predictions.list_parts(self.store, since, today)
        seen = {k for day_keys in done.values() for k in day_keys}
        new = [k for k in keys if k not in seen]
        streaks: dict[str, int] = state.get("streaks", {})
        volume = state.get("volume", {"labels": 0, "claims": 0})

        # Labels and claims first: a window's summary shows the labels known at its time.
        counts = self._count_labels(state, today, volume)
        claim_counts = self._queue_claims(state, volume)

        summaries = []
        for window_keys, tables in self._windows(new):
            rows = predictions.to_rows(tables)
            summaries.append(self._window(window_keys, rows, streaks, counts, volume))
            volume = {"labels": 0, "claims": 0}
            for key in window_keys:
                done.setdefault(predictions.day_of(key), []).append(key)
        waiting_parts, waiting_rows = self._waiting

        accuracy_status = self._accuracy_status(counts)
        pruned = self._prune_reports(state.get("reports_pruned_until"), today)
        expired = queue.expire(self.store, self.config.review.expire_days, self.now)
        completed = queue.complete_decided(self.store, self.inbox)

        dropped = bool(accuracy_status.get("dropped"))
        announce = dropped and state.get("accuracy_announced") != accuracy_status.get("version")
        self.store.write_json(
            STATE_KEY,
            {
                "parts": {d: k for d, k in done.items() if d >= since.isoformat()},
                "streaks": streaks,
                "labels": self._labels_state,
                "claims_since": self._claims_since,
                "volume": volume,
                "accuracy_announced": accuracy_status.get("version") if dropped else None,
                "reports_pruned_until": pruned,
                "updated_at": self.now.isoformat(timespec="seconds"),
            },
        )

        alerts = [alert for s in summaries for alert in s["alerts"]]
        summary = {
            "windows": [s["window_id"] for s in summaries],
            "rows": sum(s["rows"] for s in summaries),
            "waiting": {
                "parts": waiting_parts,
                "rows": waiting_rows,
                "min_rows": self.config.window.min_rows,
            },
            "drifting": [g for s in summaries for g in s["drifting"]],
            "alerts": alerts,
            "accuracy": accuracy_status,
            "accuracy_drop": accuracy_status if announce else None,
            "review": {
                "claims": claim_counts,
                "expired": len(expired),
                "completed": len(completed),
                "waiting": len(queue.list_items(self.store)),
            },
        }
        self._log_run(summary)
        return summary

    # -- windows --------------------------------------------------------------------------------
    def _windows(self, keys: list[str]) -> Iterator[tuple[list[str], list]]:
        """Windows of whole parts: each at most ``max_rows`` rows (a larger part is a window of its own);
        the rest only when it has ``min_rows``."""
        policy = self.config.window
        batch_keys, tables, rows = [], [], 0
        self._waiting = (0, 0)
        for key in keys:
            try:
                table = predictions.read_part(self.store, key)
            except FileNotFoundError:
                continue
            if batch_keys and rows + len(table) > policy.max_rows:
                yield batch_keys, tables
                batch_keys, tables, rows = [], [], 0
            batch_keys.append(key)
            tables.append(table)
            rows += len(table)
        if rows >= policy.min_rows:
            yield batch_keys, tables
        else:  # read again next time
            self._waiting = (len(batch_keys), rows)

    def _window(
        self,
        keys: list[str],
        rows: predictions.Rows,
        streaks: dict[str, int],
        counts: dict[str, dict[str, list[int]]],
        volume: dict[str, int],
    ) -> dict[str, Any]:
        frame = rows.frame
        digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:8]
        newest = str(frame["time"].max()) if len(frame) else self.now.isoformat()
        window_id = f"{re.sub(r'[^0-9T]', '', newest[:19])[:15]}-{digest}"
        prefix = window_prefix(window_id)
        policy = self.config.window
        groups, report = [], None
        versions = frame.groupby(
            ["tested_model_name", "tested_model_version"], sort=False, dropna=True
        ).indices
        ordered = sorted(versions.items(), key=lambda kv: -len(kv[1]))
        budget = policy.max_groups
        for position, ((model_name, version), index) in enumerate(ordered):
            if position > 0 and len(index) < policy.min_group_rows:
                continue
            sub = rows.where(np.isin(np.arange(len(rows)), index))
            reference = self._reference(model_name, version)
            result, stored = self._test(reference, sub, seed=int(digest, 16) + position, report=position == 0)
            report = report or stored
            groups.append(
                {
                    "group": group_id(model_name, version),
                    "model_name": model_name,
                    "model_version": version,
                    "source": None,
                    **result,
                }
            )
            sources = sub.frame.groupby("source", sort=False).indices
            if len(sources) < 2:
                groups[-1]["sources"] = sorted(sources)
                continue
            for source, source_index in sorted(sources.items(), key=lambda kv: -len(kv[1])):
                if len(source_index) < policy.min_group_rows or budget <= 0:
                    continue
                budget -= 1
                part = sub.where(np.isin(np.arange(len(sub)), source_index))
                result, _ = self._test(reference, part, seed=int(digest, 16) + position, report=False)
                groups.append(
                    {
                        "group": group_id(model_name, version, source),
                        "model_name": model_name,
                        "model_version": version,
                        "source": source,
                        **result,
                    }
                )
        for group in groups:
            group["measured"] = _measured_view(
                counts,
                group["model_name"],
                group["model_version"],
                group["source"],
                self.config.accuracy.confidence,
            )

        alerts, drifting = [], []
        for group in groups:
            if not group.get("tested"):
                continue
            streak = streaks.get(group["group"], 0) + 1 if group["drifting"] else 0
            streaks[group["group"]] = streak
            group["consecutive"] = streak
            if group["drifting"]:
                drifting.append(group["group"])
            if group["drifting"] and streak == self.config.alert.consecutive_windows:
                alerts.append(self._alert(window_id, frame, group, prefix))

        selected = self._fill_queue(window_id, rows, groups, alerts)
        for key in {k for k in frame["image_key"] if is_candidate_key(k)}:
            self.store.delete(key)  # queued ones were copied into the queue; the rest are not kept

        summary = {
            "window_id": window_id,
            "start": str(frame["time"].min()),
            "end": newest,
            "rows": len(frame),
            "parts": len(keys),
            # cascade rows decided by the second stage whose first-stage model the log does not say
            "untested_rows": int(frame["tested_model_version"].isna().sum()),
            "computed_at": self.now.isoformat(timespec="seconds"),
            "groups": groups,
            "drifting": drifting,
            "alerts": alerts,
            "queued": selected,
            "volume": volume,
            "report": f"{prefix}/report.html" if report else None,
            "config": {
                "drift": self.config.drift.model_dump(),
                "alert": self.config.alert.model_dump(),
            },
        }
        if report:
            self.store.write_bytes(f"{prefix}/report.html", report.html)
            self.store.write_bytes(f"{prefix}/report.json", report.json)
        self.store.write_json(f"{prefix}/summary.json", summary)
        for alert in alerts:
            self.store.write_json(f"{ALERTS_PREFIX}/{alert['alert_id']}.json", alert)
        self._append_series(summary)
        self._log_window(summary)
        return summary

    def _reference(self, model_name: str, version: str) -> Reference | str:
        """The version's reference, or why there is none (the window is then not tested for drift)."""
        from tasks.monitor.reference import NoReference, ensure_reference

        if (model_name, version) in self.references:
            return self.references[(model_name, version)]
        if version == predictions.UNKNOWN_VERSION:
            found: Reference | str = (
                "a model served from a local folder has no registry version to compare with"
            )
        else:
            try:
                found = ensure_reference(self.settings, self.store, model_name, version, self.config)
            except (NoReference, LookupError, FileNotFoundError) as exc:  # no tag, version or snapshot
                found = str(exc)
            except ImportError as exc:  # the Airflow image has no model libraries
                found = (
                    f"no reference of {model_name} version {version} recorded, and this process cannot "
                    f"score images ({exc}); record it where the model runs: vigil monitor reference "
                    f"--model {model_name} {version}"
                )
        self.references[(model_name, version)] = found
        if isinstance(found, str):
            log.warning("no drift tests for %s version %s: %s", model_name, version, found)
        return found

    def _test(self, reference: Reference | str, rows: predictions.Rows, *, seed: int, report: bool):
        frame = rows.frame
        p_fake = frame["tested_p_fake"].to_numpy(float)
        # The verdict at the tested model's own threshold (the reference's), as on its test split.
        thresholds = frame["threshold"].to_numpy(float) if isinstance(reference, str) else reference.threshold
        fake = p_fake >= thresholds
        estimated = expected_accuracy(p_fake, thresholds)
        base = {
            "rows": len(frame),
            "with_embedding": int(rows.has_embedding.sum()),
            "score": {"mean": round(float(p_fake.mean()), 5), "histogram": histogram(p_fake)},
            "verdict": {"share": round(float(fake.mean()), 5)},
            "estimated_accuracy": {"accuracy": None if estimated is None else round(estimated, 5)},
        }
        if isinstance(reference, str):
            return {**base, "tested": False, "reason": reference, "drifting": False, "signals": []}, None
        embeddings = None if rows.embeddings is None else rows.embeddings[rows.has_embedding]
        sample = Sample(p_fake, fake, embeddings)
        results, stored = compare(reference.sample, sample, self.config.drift, seed=seed, report=report)
        reference_estimate = reference.expected_accuracy
        drop = None if estimated is None or reference_estimate is None else reference_estimate - estimated
        results["estimated_accuracy"] = {
            "accuracy": base["estimated_accuracy"]["accuracy"],
            "reference": None if reference_estimate is None else round(reference_estimate, 5),
            "reference_measured": reference.accuracy,
            "drop": None if drop is None else round(drop, 5),
            "drifted": drop is not None and drop > self.config.drift.estimated_accuracy.max_drop,
        }
        results["score"]["reference_histogram"] = histogram(reference.sample.p_fake)
        drifted = {name: bool((results.get(name) or {}).get("drifted")) for name in SIGNAL_WORDS}
        signals = [s for s in self.config.alert.signals if drifted[s]]
        return {
            **results,
            "with_embedding": base["with_embedding"],
            "tested": True,
            "reference": {
                "snapshot": reference.snapshot,
                "rows": len(reference.sample),
                "threshold": reference.threshold,
            },
            "signals": signals,
            "drifting": bool(signals),
        }, stored

    def _alert(self, window_id: str, frame, group: dict[str, Any], prefix: str) -> dict[str, Any]:
        slug = re.sub(r"[^A-Za-z0-9_-]+", "-", group["group"]).strip("-")[:120]
        reason = (
            f"{group['group']}: drifting in {group['consecutive']} consecutive windows ("
            + "; ".join(_signal_detail(group, s, self.config) for s in group["signals"])
            + ")"
        )
        return {
            "alert_id": f"{window_id}-{slug}",
            "window_id": window_id,
            "window": {
                "start": str(frame["time"].min()),
                "end": str(frame["time"].max()),
                "rows": len(frame),
            },
            "group": group["group"],
            "model_name": group["model_name"],
            "model_version": group["model_version"],
            "source": group["source"],
            "signals": group["signals"],
            "consecutive": group["consecutive"],
            "metrics": {
                "rows": group["rows"],
                "score": {
                    k: group["score"].get(k) for k in ("ks_p_value", "wasserstein", "mean", "reference_mean")
                },
                "verdict": group["verdict"],
                "embedding": group.get("embedding"),
                "estimated_accuracy": group["estimated_accuracy"],
            },
            "reason": reason,
            "report": self.store.uri(f"{prefix}/report.html"),
            "raised_at": self.now.isoformat(timespec="seconds"),
        }

    def _prune_reports(self, pruned_until: str | None, today: date) -> str:
        """Delete the Evidently reports of the days that just passed ``window.report_days`` (one listing
        per such day; the summaries stay); the last day done."""
        last = today - timedelta(days=self.config.window.report_days + 1)
        day = date.fromisoformat(pruned_until) + timedelta(days=1) if pruned_until else last
        while day <= last:
            for key in self.store.list(f"{WINDOWS_PREFIX}/date={day.isoformat()}/"):
                if key.endswith(("/report.html", "/report.json")):
                    self.store.delete(key)
            day += timedelta(days=1)
        return last.isoformat()

    # -- the review queue -----------------------------------------------------------------------
    def _fill_queue(
        self,
        window_id: str,
        rows: predictions.Rows,
        groups: list[dict[str, Any]],
        alerts: list[dict[str, Any]],
    ) -> dict[str, int]:
        frame = rows.frame
        policy = self.config.review
        kept = frame["image_key"].notna().to_numpy()
        distance = (frame["p_fake"] - frame["threshold"]).abs().to_numpy()
        rng = np.random.default_rng(int(window_id.rsplit("-", 1)[1], 16))
        chosen: dict[int, set[str]] = {}
        near = np.flatnonzero(kept & (frame["review_candidate"] == NEAR_THRESHOLD).to_numpy())
        for i in near[np.argsort(distance[near], kind="stable")][: policy.per_window.near_threshold]:
            chosen.setdefault(int(i), set()).add("near_threshold")
        audit = np.flatnonzero(kept & (frame["review_candidate"] == AUDIT).to_numpy())
        for i in rng.permutation(audit)[: policy.per_window.audit]:
            chosen.setdefault(int(i), set()).add("audit")
        campaigns: dict[str, list[int]] = {}
        for alert in alerts:
            campaigns[alert["alert_id"]] = self._drift_sample(rows, alert, kept, rng)
            for i in campaigns[alert["alert_id"]]:
                chosen.setdefault(int(i), set()).add("drift")
        campaign_of = {i: alert_id for alert_id, picks in campaigns.items() for i in picks}
        candidates = [
            _candidate(frame.iloc[i], sorted(reasons, key=queue.PRIORITY.get), window_id, campaign_of.get(i))
            for i, reasons in chosen.items()
        ]
        counts = queue.enqueue(self.store, candidates, policy, self.now)
        for alert in alerts:
            ids = [frame.iloc[i]["prediction_id"] for i in campaigns[alert["alert_id"]]]
            campaign = queue.open_campaign(self.store, alert, ids)
            alert["campaign"] = {"items": len(campaign["items"])}
            log.warning(
                "review campaign %s opened: %d images of window %s asked for review (%s)",
                alert["alert_id"],
                len(ids),
                window_id,
                alert["reason"],
            )
        return {**counts, "candidates": len(candidates)}

    def _drift_sample(
        self, rows: predictions.Rows, alert: dict[str, Any], kept: np.ndarray, rng
    ) -> list[int]:
        """Kept images of the alerting group, the least like the reference first (its embeddings' z-scores)."""
        frame = rows.frame
        mask = (
            kept
            & (frame["tested_model_name"] == alert["model_name"]).to_numpy()
            & (frame["tested_model_version"] == alert["model_version"]).to_numpy()
        )
        if alert["source"] is not None:
            mask &= (frame["source"] == alert["source"]).to_numpy()
        candidates = np.flatnonzero(mask)
        size = self.config.review.drift_sample
        reference = self.references.get((alert["model_name"], alert["model_version"]))
        if (
            rows.embeddings is None
            or isinstance(reference, str)
            or reference is None
            or reference.sample.embeddings is None
        ):
            return [int(i) for i in rng.permutation(candidates)[:size]]
        ref = reference.sample.embeddings
        if ref.shape[1] != rows.embeddings.shape[1]:
            return [int(i) for i in rng.permutation(candidates)[:size]]
        mean, scale = ref.mean(axis=0), ref.std(axis=0) + 1e-6
        novelty = np.where(
            rows.has_embedding[candidates],
            np.linalg.norm((rows.embeddings[candidates] - mean) / scale, axis=1),
            -1.0,
        )
        return [int(i) for i in candidates[np.argsort(-novelty, kind="stable")][:size]]

    def _queue_claims(self, state: dict[str, Any], volume: dict[str, int]) -> dict[str, int]:
        """Pending feedback claims that disagree with the model's verdict go to the queue, at most
        ``review.per_window.claims`` predictions a run; the rest stay for the next run (the cursor stops
        before them)."""
        since = float(state.get("claims_since", 0.0))
        found = claim_records.new_claims(self.store, since)
        limit = self.config.review.per_window.claims
        by_prediction: dict[str, list[dict[str, Any]]] = {}
        self._claims_since, read = since, 0
        for modified, claim in found:
            if claim_records.disagrees(claim):
                if claim["prediction_id"] not in by_prediction and len(by_prediction) >= limit:
                    break  # this claim and the later ones wait for the next run
                by_prediction.setdefault(claim["prediction_id"], []).append(claim)
            if modified > since and claim.get("status") == "pending":
                volume["claims"] = volume.get("claims", 0) + 1
            self._claims_since, read = max(self._claims_since, modified), read + 1
        candidates = []
        for prediction_id, claims in by_prediction.items():
            first = claims[0]
            p_fake = float(first.get("p_fake") or 0.0)
            verdict = SERVING_LABELS.get(first.get("predicted") or "", None)
            candidates.append(
                {
                    "item_id": prediction_id,
                    "prediction_id": prediction_id,
                    "reasons": ["claim"],
                    "image_key": first.get("image_key"),
                    "p_fake": p_fake,
                    "threshold": None,
                    "verdict": verdict,
                    "model_name": first.get("model_name"),
                    "model_version": None
                    if first.get("model_version") is None
                    else str(first["model_version"]),
                    "source": first.get("source"),
                    "predicted_at": first.get("predicted_at"),
                    "image_sha256": first.get("image_sha256"),
                    "window_id": None,
                    "campaign": None,
                    "claims": [
                        {
                            "claimed_label": SERVING_LABELS.get(
                                c.get("claimed_label"), c.get("claimed_label")
                            ),
                            "client": c.get("client"),
                            "time": c.get("time"),
                        }
                        for c in claims
                    ],
                }
            )
        counts = queue.enqueue(self.store, candidates, self.config.review, self.now) if candidates else {}
        return {"new": read, "disagreeing": len(by_prediction), **counts}

    # -- labels ---------------------------------------------------------------------------------
    def _count_labels(
        self, state: dict[str, Any], today: date, volume: dict[str, int]
    ) -> dict[str, dict[str, list[int]]]:
        """Add the trusted labels decided since the last run to the per-day counts; the counts of the last
        ``accuracy.label_days`` days (day -> "model|version|source|reasons" -> [n, right])."""
        labels = state.get("labels") or {}
        seen: dict[str, list[str]] = labels.get("seen", {})
        counts: dict[str, dict[str, list[int]]] = labels.get("counts", {})
        first_day = today - timedelta(days=self.config.accuracy.label_days - 1)
        last_scanned = labels.get("scanned_until")
        start = (
            first_day
            if not last_scanned
            else max(first_day, date.fromisoformat(last_scanned) - timedelta(days=1))
        )
        day = start
        while day <= today:
            name = day.isoformat()
            done = set(seen.get(name, []))
            for record in self._label_records(name, done):
                key = "|".join(
                    (
                        str(record["model_name"]),
                        str(record["model_version"]),
                        str(record["source"]),
                        "+".join(sorted(record["reasons"])),
                    )
                )
                cell = counts.setdefault(name, {}).setdefault(key, [0, 0])
                cell[0] += 1
                cell[1] += int(record["right"])
                done.add(record["id"])
                volume["labels"] = volume.get("labels", 0) + 1
            seen[name] = sorted(done)
            day += timedelta(days=1)
        keep = first_day.isoformat()
        self._labels_state = {
            "seen": {d: v for d, v in seen.items() if d >= (start - timedelta(days=1)).isoformat()},
            "counts": {d: v for d, v in counts.items() if d >= keep},
            "scanned_until": today.isoformat(),
        }
        return self._labels_state["counts"]

    def _label_records(self, day: str, done: set[str]) -> Iterator[dict[str, Any]]:
        """The day's new trusted labels: review decisions with a label, trusted feedback."""
        for key in queue.decisions_of_day(self.store, day):
            item_id = key.rsplit("/", 1)[-1].removesuffix(".json")
            if f"review:{item_id}" in done:
                continue
            record = self._read(key, None)
            if (
                not record
                or record.get("label") not in ("real", "fake")
                or record.get("verdict") not in ("real", "fake")
            ):
                done.add(f"review:{item_id}")
                continue
            yield {
                "id": f"review:{item_id}",
                "model_name": record.get("model_name") or "unknown",
                "model_version": record.get("model_version") or predictions.UNKNOWN_VERSION,
                "source": record.get("source") or predictions.DEFAULT_SOURCE,
                "reasons": record.get("reasons") or ["audit"],
                "right": record["label"] == record["verdict"],
            }
        for record in claim_records.trusted_feedback(self.store, day):
            record_id = "feedback:" + record["key"].rsplit("/", 1)[-1].removesuffix(".json")
            if record_id in done:
                continue
            label, verdict = (
                SERVING_LABELS.get(record.get("label")),
                SERVING_LABELS.get(record.get("predicted")),
            )
            if label is None or verdict is None:
                done.add(record_id)
                continue
            yield {
                "id": record_id,
                "model_name": record.get("model_name") or "unknown",
                "model_version": str(record.get("model_version") or predictions.UNKNOWN_VERSION),
                "source": record.get("source") or predictions.DEFAULT_SOURCE,
                "reasons": ["feedback"],
                "right": label == verdict,
            }

    def _accuracy_status(self, counts: dict[str, dict[str, list[int]]]) -> dict[str, Any]:
        """Whether the champion's labeled traffic shows an accuracy drop (``retrain.accuracy_drop``)."""
        from tasks.registry import CHAMPION, Registry

        trigger = self.config.retrain.accuracy_drop
        model_name = self.settings.model_name
        champion = Registry(self.settings).version(CHAMPION)
        status: dict[str, Any] = {
            "model_name": model_name,
            "checked_at": self.now.isoformat(timespec="seconds"),
        }
        if champion is None:
            status.update(version=None, dropped=False, reason=f"{model_name} has no champion")
        elif not trigger.enabled:
            status.update(
                version=str(champion.version), dropped=False, reason="retrain.accuracy_drop.enabled is false"
            )
        else:
            version = str(champion.version)
            reference = self._reference(model_name, version)
            by_set = _counts_by_set(counts, model_name, version, None)
            status.update(
                version=version,
                **accuracy_drop(
                    by_set,
                    tuple(trigger.labels_from),
                    None if isinstance(reference, str) else reference.accuracy,
                    min_labels=trigger.min_labels,
                    max_drop=trigger.max_drop,
                    confidence=self.config.accuracy.confidence,
                ),
            )
        self.store.write_json(ACCURACY_KEY, status)
        return status

    # -- files and logs -------------------------------------------------------------------------
    def _read(self, key: str, default):
        try:
            return self.store.read_json(key)
        except FileNotFoundError:
            return default

    def _append_series(self, summary: dict[str, Any]) -> None:
        series = self._read(SERIES_KEY, {"windows": []})
        main = summary["groups"][0] if summary["groups"] else {}
        entry = {
            "window_id": summary["window_id"],
            "start": summary["start"],
            "end": summary["end"],
            "rows": summary["rows"],
            "group": main.get("group"),
            "tested": main.get("tested", False),
            "score": {
                k: main.get("score", {}).get(k)
                for k in (
                    "mean",
                    "ks_p_value",
                    "wasserstein",
                    "histogram",
                    "reference_histogram",
                    "quantiles",
                )
            },
            "verdict": main.get("verdict"),
            "embedding": main.get("embedding"),
            "estimated_accuracy": main.get("estimated_accuracy"),
            "measured": main.get("measured"),
            "volume": summary["volume"],
            "drifting": summary["drifting"],
            "alerts": [a["alert_id"] for a in summary["alerts"]],
            "report": summary["report"],
        }
        windows = [w for w in series["windows"] if w["window_id"] != entry["window_id"]] + [entry]
        self.store.write_json(
            SERIES_KEY, {"windows": sorted(windows, key=lambda w: w["end"])[-SERIES_LENGTH:]}
        )

    def _log_window(self, summary: dict[str, Any]) -> None:
        log.info(
            "window %s: %d predictions from %s to %s (%d parts)",
            summary["window_id"],
            summary["rows"],
            summary["start"],
            summary["end"],
            summary["parts"],
        )
        for group in summary["groups"]:
            log.log(
                logging.WARNING if group["drifting"] else logging.INFO,
                "  %s",
                describe_group(group, self.config),
            )
        for alert in summary["alerts"]:
            log.warning("DRIFT ALERT %s: %s; report %s", alert["alert_id"], alert["reason"], alert["report"])
        queued = summary["queued"]
        log.info(
            "  review queue: %d of %d candidates queued (%d already waiting, %d full, %d without image)",
            queued.get("queued", 0),
            queued.get("candidates", 0),
            queued.get("merged", 0),
            queued.get("full", 0),
            queued.get("no_image", 0),
        )

    def _log_run(self, summary: dict[str, Any]) -> None:
        waiting = summary["waiting"]
        if not summary["windows"]:
            log.info(
                "no new window: %d new predictions in %d parts wait for %d (window.min_rows)",
                waiting["rows"],
                waiting["parts"],
                waiting["min_rows"],
            )
        verdict = "DRIFT ALERT" if summary["alerts"] else ("drifting" if summary["drifting"] else "stable")
        log.info(
            "monitoring verdict: %s; %d windows, %d predictions; %d alerts; review queue %d waiting "
            "(%d new claims, %d expired); accuracy: %s",
            verdict,
            len(summary["windows"]),
            summary["rows"],
            len(summary["alerts"]),
            summary["review"]["waiting"],
            summary["review"]["claims"].get("new", 0),
            summary["review"]["expired"],
            summary["accuracy"].get("reason"),
        )


def _candidate(row, reasons: list[str], window_id: str, campaign: str | None) -> dict[str, Any]:
    return {
        "item_id": row["prediction_id"],
        "prediction_id": row["prediction_id"],
        "reasons": reasons,
        "image_key": row["image_key"],
        "p_fake": round(float(row["p_fake"]), 6),
        "threshold": round(float(row["threshold"]), 6),
        "verdict": "fake" if row["fake"] else "real",
        "model_name": row["model_name"],
        "model_version": row["model_version"],
        "source": row["source"],
        "predicted_at": row["time"],
        "image_sha256": row["image_sha256"],
        "window_id": window_id,
        "campaign": campaign,
        "claims": [],
    }


def _counts_by_set(
    counts: dict[str, dict[str, list[int]]], model_name: str, version: str, source: str | None
) -> dict[str, list[int]]:
    """label set -> [n, right] over the kept days, for one model version (and source); ``all`` too."""
    by_set = {s: [0, 0] for s in (*LABEL_SETS, "all")}
    for cells in counts.values():
        for key, (n, right) in cells.items():
            name, ver, src, reasons = key.split("|", 3)
            if name != model_name or ver != version or (source is not None and src != source):
                continue
            for s in {*reasons.split("+"), "all"}:
                if s in by_set:
                    by_set[s][0] += n
                    by_set[s][1] += right
    return by_set


def _measured_view(
    counts, model_name: str, version: str, source: str | None, confidence: float
) -> dict[str, Any]:
    by_set = _counts_by_set(counts, model_name, version, source)
    return {s: measured(right, n, confidence) for s, (n, right) in by_set.items()}


def _signal_detail(group: dict[str, Any], signal: str, config: MonitorConfig) -> str:
    drift = config.drift
    if signal == "score":
        s = group["score"]
        return (
            f"score: K-S p={s['ks_p_value']:.2g} <= {drift.score.ks_p_value}, Wasserstein {s['wasserstein']:.3f} "
            f">= {drift.score.wasserstein}; mean P(fake) {s['mean']:.3f} vs {s['reference_mean']:.3f}"
        )
    if signal == "verdict":
        v = group["verdict"]
        return f"verdict share {v['share']:.3f} vs {v['reference_share']:.3f} (z-test p={v['p_value']:.2g})"
    if signal == "embedding":
        e = group["embedding"]
        return f"embeddings: domain classifier ROC AUC {e['roc_auc']:.3f} > {e['threshold']}"
    a = group["estimated_accuracy"]
    return f"estimated accuracy {a['accuracy']:.3f} vs reference {a['reference']:.3f} (drop {a['drop']:.3f} > {drift.estimated_accuracy.max_drop})"


def describe_group(group: dict[str, Any], config: MonitorConfig) -> str:
    """One line of numbers per group, for the task log."""
    if not group.get("tested"):
        return f"{group['group']}: {group['rows']} rows, not tested: {group.get('reason')}"
    s, v, e, a = group["score"], group["verdict"], group.get("embedding") or {}, group["estimated_accuracy"]
    embedding = (
        f"embeddings AUC {e['roc_auc']:.3f} ({e['rows']} rows){' DRIFT' if e['drifted'] else ''}"
        if "roc_auc" in e
        else f"embeddings not tested ({e.get('skipped')})"
    )
    m = (group.get("measured") or {}).get("all") or {}
    labels = (
        f"measured {m['accuracy']:.3f} [{m['low']:.3f}, {m['high']:.3f}] on {m['n']} labels"
        if m.get("n")
        else "no labels yet"
    )
    verdict = (
        f"DRIFTING ({', '.join(SIGNAL_WORDS[x] for x in group['signals'])}; {group.get('consecutive', 0)} "
        f"of {config.alert.consecutive_windows} windows)"
        if group["drifting"]
        else "stable"
    )
    return (
        f"{group['group']}: {group['rows']} rows: {verdict}; score mean {s['mean']:.3f} vs {s['reference_mean']:.3f} "
        f"(K-S p={s['ks_p_value']:.2g}, Wasserstein {s['wasserstein']:.3f}){' DRIFT' if s['drifted'] else ''}; "
        f"fake share {v['share']:.3f} vs {v['reference_share']:.3f} (p={v['p_value']:.2g}){' DRIFT' if v['drifted'] else ''}; "
        f"{embedding}; estimated accuracy {a['accuracy']:.3f} vs {a['reference']:.3f}"
        f"{' DRIFT' if a['drifted'] else ''}; {labels}"
    )


def alert_events(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``drift_alert`` Asset events of a run: one per alert, as recorded."""
    return [dict(alert) for alert in summary.get("alerts") or []]


def accuracy_drop_event(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The ``accuracy_drop`` Asset event of a run (the check's numbers), or None when nothing new dropped."""
    return summary.get("accuracy_drop")
