"""Monitoring cost and incremental cost, each against a baseline measured in the same run, and the drift
tests' false-alarm and detection rates on synthetic streams.

1. One window of 100,000 logged predictions (32-dim embeddings, three sources, parts of 1,000 rows):
   a full ``monitor()`` run (reading, Evidently tests per version and source, the HTML report, the
   queue, the state), against the baseline of only reading the same parts.
2. Incremental cost: one new window of 10,000 predictions on top of a log of 1,000,000 already
   monitored predictions (all in today's date partition: the worst case for listing), against the
   same window on an empty log. Target: ratio <= 1.5.
3. False alarms and detection: ``--seeds`` stationary streams of ``--windows`` windows (of 200 and 1,000 rows)
   against a 2,000-row reference, and as many with 30 % of rows from a new generator: the share of
   windows each test flags, and the alert rate per window of the rule "drifting in N consecutive
   windows" for N = 1 and 2 (Wilson 95 % intervals).

The registry check of the accuracy-drop rule talks to a real MLflow server started on loopback.
Evidently's one-off import is measured and excluded from the timings. Run: ``PYTHONPATH=. python
bench/monitor.py`` (``make bench`` runs every script under bench/).
"""

from __future__ import annotations

import argparse
import io
import resource
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.monitor.accuracy import wilson_interval
from tasks.monitor.config import MonitorConfig
from tasks.monitor.drift import Sample, compare
from tasks.monitor.predictions import COLUMNS, read_parts
from tasks.monitor.reference import write_reference
from tasks.settings import Settings
from tasks.storage import ObjectStore

DIM = 32
MODEL = "vigil-detector"
PART_ROWS = 1000
SOURCES = np.array(["api", "web", "partner"])


def write_parts(store: ObjectStore, rows: int, rng, when: datetime, shift_share: float = 0.0) -> list[str]:
    """``rows`` predictions as parts of PART_ROWS (vectorised: the log's schema, serving's layout)."""
    keys = []
    for start in range(0, rows, PART_ROWS):
        n = min(PART_ROWS, rows - start)
        p = rng.beta(0.4, 0.4, n)
        e = rng.normal(size=(n, DIM)).astype(np.float32)
        shifted = rng.random(n) < shift_share
        e[shifted] += np.linspace(1.0, 0.0, DIM, dtype=np.float32)
        p[shifted] = np.clip(rng.normal(0.45, 0.08, shifted.sum()), 0, 1)
        stamp = when + timedelta(seconds=start / PART_ROWS)
        times = [(stamp + timedelta(milliseconds=i)).isoformat(timespec="milliseconds") for i in range(n)]
        columns = {
            "prediction_id": [uuid.uuid4().hex for _ in range(n)],
            "time": times,
            "image_sha256": ["0" * 64] * n,
            "p_fake": p,
            "label": np.where(p >= 0.5, "synthetic", "authentic"),
            "threshold": np.full(n, 0.5),
            "model_name": [MODEL] * n,
            "model_version": ["1"] * n,
            "latency_ms": np.full(n, 10.0),
            "input_kind": ["upload"] * n,
            "explained": np.zeros(n, bool),
            "image_key": pa.nulls(n, pa.string()),
            "source": SOURCES[rng.integers(0, len(SOURCES), n)],
            "client": ["bench"] * n,
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(e.ravel()), DIM).cast(
                pa.list_(pa.float32())
            ),
            "review_candidate": pa.nulls(n, pa.string()),
            "stage": pa.nulls(n, pa.string()),  # one stage: no cascade columns
            "first_p_fake": pa.nulls(n, pa.float64()),
            "first_model_name": pa.nulls(n, pa.string()),
            "first_model_version": pa.nulls(n, pa.string()),
        }
        buf = io.BytesIO()
        pq.write_table(pa.table({c: columns[c] for c in COLUMNS}), buf)
        key = f"predictions/date={stamp:%Y-%m-%d}/{stamp:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}.parquet"
        keys.append(store.write_bytes(key, buf.getvalue()))
    return keys


def reference(store: ObjectStore, n: int = 2000, seed: int = 0) -> Sample:
    rng = np.random.default_rng(seed)
    p = rng.beta(0.4, 0.4, n)
    e = rng.normal(size=(n, DIM)).astype(np.float32)
    labels = np.where(rng.random(n) < p, "fake", "real")
    if store is not None:
        write_reference(
            store,
            MODEL,
            "1",
            snapshot="v0001",
            splits=("test",),
            threshold=0.5,
            p_fake=p,
            labels=labels,
            embeddings=e,
        )
    return Sample(p, p >= 0.5, e)


def timed(func):
    wall, cpu = time.perf_counter(), time.process_time()
    result = func()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def fresh(root: Path, name: str, mlflow_uri: str) -> tuple[Settings, ObjectStore]:
    settings = Settings(
        home=root / name / "home",
        store_url=(root / name / "store").as_uri(),
        inbox=str(root / name / "inbox"),
        mlflow_tracking_uri=mlflow_uri,
    )
    store = ObjectStore.from_settings(settings)
    reference(store)
    return settings, store


def costs(root: Path, mlflow_uri: str, log_rows: int, window_rows: int, big_window: int, rounds: int):
    from tasks.monitor.run import monitor

    config = MonitorConfig(window={"max_rows": 100_000})
    now = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(hours=1)
    results = {}

    # 1. One window of `big_window` rows vs only reading its parts.
    settings, store = fresh(root, "big", mlflow_uri)
    keys = write_parts(store, big_window, np.random.default_rng(1), now)
    _, read_wall, read_cpu = timed(lambda: read_parts(store, keys))
    summary, wall, cpu = timed(lambda: monitor(settings, config, now=now + timedelta(hours=1)))
    assert summary["rows"] == big_window, summary
    results["big"] = (
        wall,
        cpu,
        read_wall,
        read_cpu,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )

    # 2. A new window of `window_rows` on a monitored log of `log_rows` vs on an empty log (best of rounds).
    settings_log, store_log = fresh(root, "log", mlflow_uri)
    rng = np.random.default_rng(2)
    started = time.perf_counter()
    write_parts(store_log, log_rows, rng, now)
    written = time.perf_counter() - started
    started = time.perf_counter()
    first = monitor(settings_log, config, now=now + timedelta(hours=1))
    monitored = time.perf_counter() - started
    assert first["rows"] == log_rows, first["rows"]
    on_log, on_empty = [], []
    for round_ in range(rounds):
        at = now + timedelta(minutes=20 + round_)
        write_parts(store_log, window_rows, rng, at)
        summary, wall, _ = timed(lambda: monitor(settings_log, config, now=now + timedelta(hours=1)))
        assert summary["rows"] == window_rows
        on_log.append(wall)
        empty = fresh(root, f"empty{round_}", mlflow_uri)
        write_parts(empty[1], window_rows, np.random.default_rng(3 + round_), at)
        summary, wall, _ = timed(lambda empty=empty: monitor(empty[0], config, now=now + timedelta(hours=1)))
        assert summary["rows"] == window_rows
        on_empty.append(wall)
    results["incremental"] = (
        min(on_log),
        min(on_empty),
        written,
        monitored,
        len(store_log.list("predictions")),
    )
    return results


def false_alarms(seeds: int, windows: int, rows: int) -> dict[str, dict[str, tuple[int, int]]]:
    """Per test: (windows flagged, windows), stationary and shifted. Per alert rule "drifting in N
    consecutive windows": stationary, (alerts, windows); shifted, (streams alerted by window N, streams)."""
    policy = MonitorConfig().drift
    tests = ("score", "verdict", "embedding", "estimated_accuracy", "any")
    counts = {
        kind: {t: [0, 0] for t in (*tests, "alert, N=1", "alert, N=2")} for kind in ("stationary", "shifted")
    }
    for kind, share in (("stationary", 0.0), ("shifted", 0.3)):
        for seed in range(seeds):
            ref = reference(None, seed=1000 + seed)
            reference_estimate = float(np.mean(np.where(ref.fake, ref.p_fake, 1 - ref.p_fake)))
            rng, streak, first_alert = np.random.default_rng(seed), 0, {1: None, 2: None}
            for window in range(1, windows + 1):
                p = rng.beta(0.4, 0.4, rows)
                e = rng.normal(size=(rows, DIM)).astype(np.float32)
                shifted = rng.random(rows) < share
                e[shifted] += np.linspace(1.0, 0.0, DIM, dtype=np.float32)
                p[shifted] = np.clip(rng.normal(0.45, 0.08, shifted.sum()), 0, 1)
                results, _ = compare(ref, Sample(p, p >= 0.5, e), policy, seed=seed)
                estimate = float(np.mean(np.where(p >= 0.5, p, 1 - p)))
                flags = {
                    "score": results["score"]["drifted"],
                    "verdict": results["verdict"]["drifted"],
                    "embedding": results["embedding"]["drifted"],
                    "estimated_accuracy": reference_estimate - estimate > policy.estimated_accuracy.max_drop,
                }
                flags["any"] = any(flags.values())
                streak = streak + 1 if flags["any"] else 0
                for name, flagged in flags.items():
                    counts[kind][name][0] += int(flagged)
                    counts[kind][name][1] += 1
                for n in (1, 2):
                    if streak == n:
                        first_alert[n] = first_alert[n] or window
                        if kind == "stationary":
                            counts[kind][f"alert, N={n}"][0] += 1
            for n in (1, 2):
                if kind == "stationary":
                    counts[kind][f"alert, N={n}"][1] += windows
                else:
                    counts[kind][f"alert, N={n}"][0] += int(
                        first_alert[n] is not None and first_alert[n] <= n
                    )
                    counts[kind][f"alert, N={n}"][1] += 1
    return counts


def line(label: str, wall: float, cpu: float | None = None, ratio: str = "") -> None:
    print(f"{label:<64} {wall:>8.2f} {'' if cpu is None else f'{cpu:.2f}':>8}  {ratio}")


def print_costs(args) -> float:
    """Run and print the cost measurements (a real MLflow server on loopback); the incremental ratio."""
    from tasks import stack

    root = Path(tempfile.mkdtemp(prefix="vigil-bench-monitor-"))
    mlflow = stack.start_mlflow(root / "mlflow")
    try:
        stack.wait_healthy(mlflow, timeout=120)
        results = costs(root, mlflow.url, args.log_rows, args.window_rows, args.big_window, args.rounds)
    finally:
        stack.stop(mlflow)
        shutil.rmtree(root, ignore_errors=True)
    wall, cpu, read_wall, read_cpu, rss = results["big"]
    on_log, on_empty, written, monitored, parts = results["incremental"]
    best = f"best of {args.rounds}"
    print(f"\n{'measurement':<64} {'wall s':>8} {'cpu s':>8}  ratio (target)")
    line(
        f"baseline: read the {args.big_window:,} rows ({args.big_window // PART_ROWS} parts)",
        read_wall,
        read_cpu,
    )
    line(
        f"monitor run over one window of {args.big_window:,} predictions",
        wall,
        cpu,
        f"{wall / read_wall:.1f}x the read",
    )
    line(f"new window of {args.window_rows:,} on an empty log ({best})", on_empty)
    line(
        f"new window of {args.window_rows:,} on a log of {args.log_rows:,} ({best})",
        on_log,
        None,
        f"{on_log / on_empty:.2f} (<= 1.5)",
    )
    print(
        f"\n(peak RSS {rss:,.0f} MB; the {args.log_rows:,}-row log: {parts:,} parts, written in {written:.0f} s, "
        f"first monitored in {monitored:.0f} s)"
    )
    return on_log / on_empty


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--log-rows", type=int, default=1_000_000)
    parser.add_argument("--window-rows", type=int, default=10_000)
    parser.add_argument("--big-window", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--window-sizes", type=lambda v: [int(x) for x in v.split(",")], default=[200, 1000])
    parser.add_argument("--skip-costs", action="store_true", help="only the false-alarm tables")
    args = parser.parse_args()

    _, import_s, _ = timed(lambda: __import__("tasks.monitor.evidently_api"))
    print(f"Evidently import (once per process, excluded below): {import_s:.1f} s")
    ratio = 0.0
    if not args.skip_costs:
        ratio = print_costs(args)
    for rows in args.window_sizes:
        counts = false_alarms(args.seeds, args.windows, rows)
        print(
            f"\nDrift tests on {args.seeds} streams x {args.windows} windows of {rows:,} rows, reference 2,000 "
            "rows (Wilson 95 %). Tests: share of windows flagged. Alert rules: stationary, alerts per window; "
            "new generator, share of streams alerted by window N."
        )
        print(f"{'test':<22} {'stationary (false alarms)':>30} {'30 % new generator (detected)':>32}")
        for name in counts["stationary"]:
            cells = []
            for kind in ("stationary", "shifted"):
                k, n = counts[kind][name]
                low, high = wilson_interval(k, n)
                cells.append(f"{k / n:6.1%} [{low:5.1%}, {high:5.1%}]")
            print(f"{name:<22} {cells[0]:>30} {cells[1]:>32}")
    return 0 if ratio <= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
