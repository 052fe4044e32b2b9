"""Synthetic traffic for the monitor's tests and benchmark: a reference and prediction-log parts.

The champion is calibrated (a row's label is fake with probability P(fake)) and confident (P(fake)
from Beta(0.4, 0.4): mostly near 0 or 1); embeddings are standard normal. A *shifted* share of rows
comes from a new generator: embeddings moved along the leading dimensions and P(fake) just under the
threshold (N(0.45, 0.08)): the detector half misses it.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import numpy as np

from tasks.monitor.predictions import prediction_row, write_part
from tasks.monitor.reference import write_reference

DIM = 32
MODEL = "vigil-detector"


def write_synthetic_reference(
    store, version: str = "1", n: int = 2000, seed: int = 0, threshold: float = 0.5, model: str = MODEL
):
    """A reference of ``n`` test images of the calibrated, confident champion; its key."""
    rng = np.random.default_rng(seed)
    p = rng.beta(0.4, 0.4, n)
    labels = np.where(rng.random(n) < p, "fake", "real")
    return write_reference(
        store,
        model,
        version,
        snapshot="v0001",
        splits=("test",),
        threshold=threshold,
        p_fake=p,
        labels=labels,
        embeddings=rng.normal(size=(n, DIM)).astype(np.float32),
    )


def traffic(
    n: int,
    rng: np.random.Generator,
    *,
    start: datetime,
    shift_share: float = 0.0,
    source: str = "api",
    version: str = "1",
    spacing_s: float = 1.0,
    embeddings: bool = True,
    model: str = MODEL,
) -> list[dict]:
    """``n`` log rows, one every ``spacing_s`` seconds from ``start``."""
    p = rng.beta(0.4, 0.4, n)
    e = rng.normal(size=(n, DIM)).astype(np.float32)
    shifted = rng.random(n) < shift_share
    if shifted.any():
        e[shifted] += np.linspace(1.0, 0.0, DIM, dtype=np.float32)
        p[shifted] = np.clip(rng.normal(0.45, 0.08, shifted.sum()), 0, 1)
    return [
        prediction_row(
            float(p[i]),
            time=start + timedelta(seconds=i * spacing_s),
            source=source,
            model_name=model,
            model_version=version,
            embedding=e[i] if embeddings else None,
        )
        for i in range(n)
    ]


def write_stream(
    store, rows: list[dict], rows_per_part: int = 500, flushed: datetime | None = None
) -> list[str]:
    """Write ``rows`` as consecutive log parts (flush times one second apart, in order)."""
    flushed = flushed or datetime(2026, 1, 1, tzinfo=UTC)
    keys = []
    for i in range(0, len(rows), rows_per_part):
        keys += write_part(store, rows[i : i + rows_per_part], flushed=flushed + timedelta(seconds=i))
    return keys


def png(colour: tuple[int, int, int], side: int = 64) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(buf, "PNG")
    return buf.getvalue()


def monitored_store(tmp_path, mlflow_uri: str):
    """(settings, store, model name): a fresh store and inbox, a model name of its own, its reference (v1)."""
    import uuid

    from tasks.settings import Settings
    from tasks.storage import ObjectStore

    model = f"m-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        home=tmp_path / "home",
        store_url=(tmp_path / "store").as_uri(),
        inbox=str(tmp_path / "inbox"),
        mlflow_tracking_uri=mlflow_uri,
        model_name=model,
    )
    store = ObjectStore.from_settings(settings)
    write_synthetic_reference(store, model=model)
    return settings, store, model


class Stream:
    """Adds windows of traffic an hour apart (flushed in order) and runs the monitor after each."""

    def __init__(self, settings, store, model, config=None, seed=1):
        from tasks.monitor.config import MonitorConfig

        self.settings, self.store, self.model = settings, store, model
        self.config = config or MonitorConfig()
        self.rng = np.random.default_rng(seed)
        # Now, not at import: a suite that runs past midnight must see the labels decided today.
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.clock = self.now - timedelta(hours=12)

    def add(self, n=1000, run=True, **kwargs):
        from tasks.monitor.run import monitor

        rows = traffic(n, self.rng, start=self.clock, spacing_s=1, model=self.model, **kwargs)
        write_stream(self.store, rows, flushed=self.clock)
        self.clock += timedelta(hours=1)
        return monitor(self.settings, self.config, now=self.now) if run else None
