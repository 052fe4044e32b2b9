"""The Monitoring page: the prediction log's windows over time, from what the monitor stored.

Reads ``monitor/series.json`` (the last windows' key numbers), the newest window's
``summary.json`` (every group: model version and source), ``monitor/accuracy.json`` (the champion's
accuracy check) and ``monitor/alerts/``; draws the charts as server-side SVG (no script): P(fake)
over time with its 10-90 % band, the newest window's P(fake) histogram against the reference's,
the drift scores with their thresholds, estimated and measured accuracy (with the Wilson interval),
and the feedback volume. Each window links to its Evidently report (HTML and JSON) in the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tasks.ui import render_page
from tasks.ui.files import ReportFile, ReportPathError, read_report_file

if TYPE_CHECKING:
    from tasks.storage import ObjectStore

WINDOW_FILES = ("report.html", "report.json", "summary.json")
CHART_WINDOWS = 60  # the charts show the newest windows, oldest on the left
LISTED_WINDOWS = 50
LISTED_ALERTS = 20
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 720, 170, 44, 12, 10, 28
COLOURS = {
    "main": "#017cee",
    "reference": "#616e7c",
    "band": "#cfe6fb",
    "threshold": "#ab091e",
    "measured": "#1b7a43",
    "drift": "#ab091e",
    "labels": "#1b7a43",
    "claims": "#8d5b00",
}


def window_file(store: ObjectStore, window_id: str, name: str) -> ReportFile:
    """A window's Evidently report (``report.html``, ``report.json``) or ``summary.json``, nothing else."""
    from tasks.monitor.run import window_prefix

    if name not in WINDOW_FILES:
        raise ReportPathError(f"invalid window file {name!r}: one of {', '.join(WINDOW_FILES)}")
    try:
        prefix = window_prefix(window_id)
    except ValueError as exc:
        raise ReportPathError(str(exc)) from None
    return read_report_file(store, prefix, name)


def _read(store: ObjectStore, key: str, default):
    try:
        return store.read_json(key)
    except FileNotFoundError:
        return default


def recent_alerts(store: ObjectStore, limit: int = LISTED_ALERTS) -> list[dict[str, Any]]:
    from tasks.monitor.run import ALERTS_PREFIX

    keys = sorted((k for k in store.list(ALERTS_PREFIX) if k.endswith(".json")), reverse=True)[:limit]
    return [alert for alert in (_read(store, k, None) for k in keys) if alert]


def monitoring_page(store: ObjectStore, base: str) -> str:
    from tasks.monitor.run import ACCURACY_KEY, SERIES_KEY, window_prefix

    windows = _read(store, SERIES_KEY, {"windows": []})["windows"]
    newest = windows[-1] if windows else None
    latest = _read(store, f"{window_prefix(newest['window_id'])}/summary.json", None) if newest else None
    shown = windows[-CHART_WINDOWS:]
    return render_page(
        "monitoring.html",
        base=base,
        nav="monitoring",
        title="Monitoring",
        store_url=store.url,
        windows=list(reversed(windows[-LISTED_WINDOWS:])),
        total_windows=len(windows),
        latest=latest,
        accuracy=_read(store, ACCURACY_KEY, None),
        alerts=recent_alerts(store),
        charts=charts(shown) if shown else None,
        histogram=histogram_chart(latest["groups"][0]) if latest and latest.get("groups") else None,
    )


# -- charts: geometry for the template's SVG ----------------------------------------------------


def _axis(
    values: list[float | None], low: float | None = None, high: float | None = None
) -> tuple[float, float]:
    present = [v for v in values if v is not None]
    lo = min(present + ([low] if low is not None else [])) if present else (low or 0.0)
    hi = max(present + ([high] if high is not None else [])) if present else (high or 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.08
    return (lo if low is not None and lo >= low else lo - pad), (
        hi if high is not None and hi <= high else hi + pad
    )


class Chart:
    """An x axis of ``n`` windows and a y range; turns values into SVG coordinates."""

    def __init__(self, n: int, low: float, high: float, title: str) -> None:
        self.n, self.low, self.high, self.title = n, low, high, title
        self.lines: list[dict[str, Any]] = []
        self.bands: list[dict[str, Any]] = []
        self.rules: list[dict[str, Any]] = []
        self.points: list[dict[str, Any]] = []
        self.whiskers: list[dict[str, Any]] = []
        self.bars: list[dict[str, Any]] = []
        self.legend: list[dict[str, str]] = []

    def x(self, i: float) -> float:
        slot = (WIDTH - LEFT - RIGHT) / max(self.n, 1)
        return round(LEFT + slot * (i + 0.5), 1)

    def y(self, v: float) -> float:
        v = min(max(v, self.low), self.high)
        return round(HEIGHT - BOTTOM - (v - self.low) / (self.high - self.low) * (HEIGHT - TOP - BOTTOM), 1)

    def line(self, values: list[float | None], colour: str, name: str, dashed: bool = False) -> None:
        segments, current = [], []
        for i, v in enumerate(values):
            if v is None:
                if current:
                    segments.append(current)
                current = []
            else:
                current.append(f"{self.x(i)},{self.y(v)}")
        if current:
            segments.append(current)
        for segment in segments:
            self.lines.append(
                {"points": " ".join(segment), "colour": colour, "dashed": dashed, "single": len(segment) == 1}
            )
        self.legend.append({"name": name, "colour": colour})

    def band(self, lows: list[float | None], highs: list[float | None], colour: str, name: str) -> None:
        pairs = [
            (i, lo, hi)
            for i, (lo, hi) in enumerate(zip(lows, highs, strict=True))
            if lo is not None and hi is not None
        ]
        if len(pairs) >= 2:
            top = [f"{self.x(i)},{self.y(hi)}" for i, _, hi in pairs]
            bottom = [f"{self.x(i)},{self.y(lo)}" for i, lo, _ in reversed(pairs)]
            self.bands.append({"points": " ".join(top + bottom), "colour": colour})
            self.legend.append({"name": name, "colour": colour})

    def rule(self, value: float, label: str) -> None:
        self.rules.append({"y": self.y(value), "label": label, "colour": COLOURS["threshold"]})

    def mark(self, values: list[float | None], flags: list[bool], label: str) -> None:
        for i, (v, flagged) in enumerate(zip(values, flags, strict=True)):
            if flagged and v is not None:
                self.points.append(
                    {"x": self.x(i), "y": self.y(v), "colour": COLOURS["drift"], "title": label}
                )

    def interval(
        self,
        values: list[float | None],
        lows: list[float | None],
        highs: list[float | None],
        labels: list[str],
    ) -> None:
        for i, (v, lo, hi, text) in enumerate(zip(values, lows, highs, labels, strict=True)):
            if v is None:
                continue
            self.whiskers.append(
                {
                    "x": self.x(i),
                    "y1": self.y(lo if lo is not None else v),
                    "y2": self.y(hi if hi is not None else v),
                }
            )
            self.points.append({"x": self.x(i), "y": self.y(v), "colour": COLOURS["measured"], "title": text})
        self.legend.append({"name": "measured (95 % interval)", "colour": COLOURS["measured"]})

    def bar(self, values: list[int], colour: str, name: str, offset: float) -> None:
        slot = (WIDTH - LEFT - RIGHT) / max(self.n, 1)
        width = max(1.0, slot * 0.35)
        for i, v in enumerate(values):
            if v:
                top = self.y(v)
                self.bars.append(
                    {
                        "x": round(self.x(i) + offset * width - width / 2, 1),
                        "y": top,
                        "w": round(width, 1),
                        "h": round(HEIGHT - BOTTOM - top, 1),
                        "colour": colour,
                        "title": f"{name}: {v}",
                    }
                )
        self.legend.append({"name": name, "colour": colour})

    def ticks(self) -> list[dict[str, Any]]:
        steps = [self.low + (self.high - self.low) * k / 4 for k in range(5)]
        return [
            {"y": self.y(v), "label": f"{v:.2f}" if self.high - self.low < 10 else f"{v:,.0f}"} for v in steps
        ]

    def view(self, labels: list[str]) -> dict[str, Any]:
        every = max(1, self.n // 8)
        return {
            "title": self.title,
            "width": WIDTH,
            "height": HEIGHT,
            "left": LEFT,
            "right": WIDTH - RIGHT,
            "base": HEIGHT - BOTTOM,
            "ticks": self.ticks(),
            "lines": self.lines,
            "bands": self.bands,
            "rules": self.rules,
            "points": self.points,
            "whiskers": self.whiskers,
            "bars": self.bars,
            "legend": self.legend,
            "labels": [{"x": self.x(i), "text": text} for i, text in enumerate(labels) if i % every == 0],
        }


def _get(window: dict[str, Any], *path: str):
    node: Any = window
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def charts(windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The four charts over ``windows`` (oldest first)."""
    n = len(windows)
    labels = [w["end"][5:16].replace("T", " ") for w in windows]
    drifting = [bool(w.get("drifting")) for w in windows]

    quantiles = [_get(w, "score", "quantiles") or [None, None, None] for w in windows]
    means = [_get(w, "score", "mean") for w in windows]
    score = Chart(n, 0.0, 1.0, "P(fake) per window: mean and 10-90 % of predictions")
    score.band([q[0] for q in quantiles], [q[2] for q in quantiles], COLOURS["band"], "10-90 %")
    score.line(means, COLOURS["main"], "mean P(fake)")
    score.mark(means, drifting, "drifting window")

    auc = [_get(w, "embedding", "roc_auc") for w in windows]
    wasserstein = [_get(w, "score", "wasserstein") for w in windows]
    drift = Chart(n, 0.0, max([0.8, *(v for v in auc + wasserstein if v is not None)]), "Drift scores")
    drift.line(auc, COLOURS["main"], "embeddings: domain classifier ROC AUC")
    drift.line(wasserstein, COLOURS["claims"], "score: normed Wasserstein distance")
    thresholds = {_get(w, "embedding", "threshold") for w in windows} - {None, "bootstrap"}
    for value in sorted(thresholds):
        drift.rule(float(value), f"AUC threshold {value}")
    drift.mark(auc, drifting, "drifting window")

    estimated = [_get(w, "estimated_accuracy", "accuracy") for w in windows]
    reference = [_get(w, "estimated_accuracy", "reference") for w in windows]
    measured = [_get(w, "measured", "all") or {} for w in windows]
    values = estimated + reference + [m.get("low") for m in measured]
    low, _ = _axis(values, None, 1.0)
    accuracy = Chart(
        n, max(0.0, min(low, 0.9)), 1.0, "Accuracy: estimated without labels, measured on trusted labels"
    )
    accuracy.line(reference, COLOURS["reference"], "reference (estimated on the test split)", dashed=True)
    accuracy.line(estimated, COLOURS["main"], "estimated (CBPE)")
    accuracy.interval(
        [m.get("accuracy") for m in measured],
        [m.get("low") for m in measured],
        [m.get("high") for m in measured],
        [f"{m.get('accuracy')} on {m.get('n')} labels [{m.get('low')}, {m.get('high')}]" for m in measured],
    )

    label_counts = [int(_get(w, "volume", "labels") or 0) for w in windows]
    claim_counts = [int(_get(w, "volume", "claims") or 0) for w in windows]
    volume = Chart(n, 0.0, float(max([4, *label_counts, *claim_counts])), "Feedback volume per window")
    volume.bar(label_counts, COLOURS["labels"], "trusted labels", -0.5)
    volume.bar(claim_counts, COLOURS["claims"], "claims", 0.5)

    return [
        {"id": "score-chart", **score.view(labels)},
        {"id": "drift-chart", **drift.view(labels)},
        {"id": "accuracy-chart", **accuracy.view(labels)},
        {"id": "volume-chart", **volume.view(labels)},
    ]


def histogram_chart(group: dict[str, Any]) -> dict[str, Any] | None:
    """The newest window's P(fake) histogram (bars) against the reference's (outline)."""
    current = _get(group, "score", "histogram")
    reference = _get(group, "score", "reference_histogram")
    if not current:
        return None
    bins = len(current)
    peak = max([*current, *(reference or [])], default=1.0) or 1.0
    chart = Chart(
        bins, 0.0, peak, f"P(fake) histogram of the newest window ({group['group']}) against the reference"
    )
    slot = (WIDTH - LEFT - RIGHT) / bins
    for i, share in enumerate(current):
        top = chart.y(share)
        chart.bars.append(
            {
                "x": round(LEFT + i * slot + 1, 1),
                "y": top,
                "w": round(slot - 2, 1),
                "h": round(HEIGHT - BOTTOM - top, 1),
                "colour": COLOURS["main"],
                "title": f"{i / bins:.2f}-{(i + 1) / bins:.2f}: {share:.1%}",
            }
        )
    chart.legend.append({"name": "window", "colour": COLOURS["main"]})
    if reference:
        chart.line(reference, COLOURS["reference"], "reference", dashed=True)
    view = chart.view([f"{i / bins:.2f}" for i in range(bins)])
    view["labels"] = [
        {"x": round(LEFT + i * slot, 1), "text": f"{i / bins:.1f}"} for i in range(0, bins + 1, 4)
    ]
    return {"id": "histogram-chart", **view}
