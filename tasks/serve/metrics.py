"""Prometheus metrics of one app (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

disable_created_metrics()  # the *_created series only add noise to a small service's scrape

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "vigil_http_requests",
            "HTTP requests by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "vigil_http_request_duration_seconds",
            "Request latency by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.p_fake = Histogram(
            "vigil_p_fake", "P(fake) of every prediction.", buckets=SCORE_BUCKETS, registry=self.registry
        )
        self.predictions = Counter(
            "vigil_predictions", "Predictions by label.", ["label"], registry=self.registry
        )
        self.batch_size = Histogram(
            "vigil_micro_batch_size",
            "Images per forward pass.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.model_info = Gauge(
            "vigil_model_info", "The loaded model (value 1).", ["name", "version"], registry=self.registry
        )
        self.model_loaded = Gauge("vigil_model_loaded", "1 once a model is loaded.", registry=self.registry)
        self.bytes_in_flight = Gauge(
            "vigil_request_bytes_in_flight",
            "Request body bytes reserved by requests in progress.",
            registry=self.registry,
        )
        self.batches_in_progress = Gauge(
            "vigil_batches_in_progress", "/v1/detect/batch calls in progress.", registry=self.registry
        )
        self.reloads = Counter(
            "vigil_model_reloads", "Model reloads by outcome.", ["outcome"], registry=self.registry
        )

    def set_model(self, name: str, version: str | None) -> None:
        self.model_info.clear()
        self.model_info.labels(name=name, version=version or "local").set(1)
        self.model_loaded.set(1)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
