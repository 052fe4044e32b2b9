"""A model version's reference: what its traffic looked like on data it was tested on.

The monitor compares each window with the reference of the version that scored it: the version's
scores, verdicts and embeddings on its own snapshot's test split (the ``snapshot`` tag of the
version; ``reference.splits`` of ``include/monitor.yaml``), recorded once, when the version is
promoted (:func:`record_reference`; the monitor records a missing one on first use), as Parquet
under ``monitor/reference/<model>/v<version>.parquet``: one row per image with ``p_fake``, ``fake``
(the verdict), ``label`` (real/fake) and ``embedding``, and in the footer the version, snapshot,
threshold and the measured accuracy on those images (the bar labeled traffic is held to).
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tasks.errors import PermanentError
from tasks.monitor.accuracy import expected_accuracy
from tasks.monitor.drift import Sample

if TYPE_CHECKING:
    from tasks.monitor.config import MonitorConfig
    from tasks.settings import Settings
    from tasks.storage import ObjectStore

log = logging.getLogger(__name__)

PREFIX = "monitor/reference"
SCORE_BATCH = 64
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class NoReference(PermanentError):
    """A version whose reference cannot be recorded (no snapshot tag, no test images)."""


def reference_key(model_name: str, version: str) -> str:
    for value, what in ((model_name, "model name"), (version, "version")):
        if not _NAME.match(str(value)) or ".." in str(value):
            raise ValueError(f"invalid {what} {value!r} for a reference key")
    return f"{PREFIX}/{model_name}/v{version}.parquet"


@dataclass(frozen=True)
class Reference:
    model_name: str
    version: str
    snapshot: str
    threshold: float
    accuracy: float | None  # measured on the reference images (their labels are known)
    sample: Sample

    @property
    def expected_accuracy(self) -> float | None:
        return expected_accuracy(self.sample.p_fake, self.threshold)


def record_reference(
    settings: Settings, model_name: str, version: str | int, config: MonitorConfig | None = None
) -> str:
    """Score ``version`` on its snapshot's reference splits and store the result; returns the key."""
    from mlflow.exceptions import MlflowException

    from tasks.data.frames import Frame, snapshot_frame
    from tasks.model.detector import Detector
    from tasks.monitor.config import load_monitor_config
    from tasks.registry import Registry, Tags, UnknownVersionError
    from tasks.storage import ObjectStore

    config = config or load_monitor_config(settings)
    version = str(version)
    store = ObjectStore.from_settings(settings)
    registry = Registry(settings, name=model_name)
    try:
        found = registry.get(version)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise UnknownVersionError(f"{model_name} has no version {version}") from None
        raise
    snapshot = (found.tags or {}).get(Tags.SNAPSHOT)
    if not snapshot:
        raise NoReference(
            f"{model_name} version {version} has no '{Tags.SNAPSHOT}' tag: no test split to score"
        )
    splits = tuple(config.reference.splits)
    frame = snapshot_frame(store, snapshot, splits, Path(settings.home) / "cache" / "objects")
    if len(frame) == 0:
        raise NoReference(f"snapshot {snapshot} has no labeled images in {'/'.join(splits)}")
    if len(frame) > config.reference.max_rows:
        keep = np.sort(np.random.default_rng(0).choice(len(frame), config.reference.max_rows, replace=False))
        frame = frame.where(np.isin(np.arange(len(frame)), keep))
    detector = Detector.load(f"models:/{model_name}/{version}", settings=settings)
    scores, embeddings = [], []
    images_table = frame.table
    for start in range(0, len(frame), SCORE_BATCH):
        images = Frame(images_table.iloc[start : start + SCORE_BATCH], frame.name).images()
        p, e = _score_and_embed(detector, images)
        scores.append(p)
        embeddings.append(e)
    p_fake = np.concatenate(scores)
    embedding = np.concatenate(embeddings).astype(np.float32)
    key = write_reference(
        store,
        model_name,
        version,
        snapshot=snapshot,
        splits=splits,
        threshold=float(detector.threshold),
        p_fake=p_fake,
        labels=images_table["label"].to_numpy(),
        embeddings=embedding,
        image_ids=images_table["image_id"].to_numpy(),
        sources=images_table["source"].to_numpy(),
        generators=images_table["generator"].to_numpy(),
    )
    return key


def write_reference(
    store: ObjectStore,
    model_name: str,
    version: str,
    *,
    snapshot: str,
    splits: tuple[str, ...],
    threshold: float,
    p_fake: np.ndarray,
    labels: np.ndarray,
    embeddings: np.ndarray,
    image_ids: np.ndarray | None = None,
    sources: np.ndarray | None = None,
    generators: np.ndarray | None = None,
) -> str:
    """Store a reference: one row per image (labels ``real``/``fake``), the facts in the footer; the key."""
    import pandas as pd

    fake = p_fake >= threshold
    accuracy = float(np.mean(fake == (np.asarray(labels) == "fake")))
    n = len(p_fake)
    table = pd.DataFrame(
        {
            "image_id": image_ids if image_ids is not None else [f"image-{i}" for i in range(n)],
            "label": labels,
            "source": sources if sources is not None else [None] * n,
            "generator": generators if generators is not None else [None] * n,
            "p_fake": np.asarray(p_fake, float),
            "fake": fake,
            "embedding": list(np.asarray(embeddings, np.float32)),
        }
    )
    key = reference_key(model_name, version)
    store.write_table(
        key,
        table,
        metadata={
            "model_name": model_name,
            "version": str(version),
            "snapshot": snapshot,
            "splits": ",".join(splits),
            "threshold": repr(float(threshold)),
            "accuracy": repr(accuracy),
            "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    log.info(
        "reference of %s version %s: %d images of snapshot %s (%s), accuracy %.3f, %d-dim embeddings; %s",
        model_name,
        version,
        n,
        snapshot,
        "/".join(splits),
        accuracy,
        np.asarray(embeddings).shape[1],
        store.uri(key),
    )
    return key


def _score_and_embed(detector, images) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(detector, "score_and_embed"):
        return detector.score_and_embed(images)
    return detector.score(images), detector.embed(images)


def read_reference(store: ObjectStore, model_name: str, version: str) -> Reference:
    """The stored reference; FileNotFoundError when none was recorded."""
    import pyarrow.parquet as pq

    from tasks.monitor.predictions import _embedding_matrix

    key = reference_key(model_name, version)
    table = pq.read_table(io.BytesIO(store.read_bytes(key)))
    meta = {
        k.decode(): v.decode()
        for k, v in (table.schema.metadata or {}).items()
        if not k.startswith(b"pandas")
    }
    embeddings, has = _embedding_matrix(table.column("embedding"))
    p_fake = table.column("p_fake").to_numpy().astype(float)
    threshold = float(meta["threshold"])
    return Reference(
        model_name=model_name,
        version=version,
        snapshot=meta.get("snapshot", ""),
        threshold=threshold,
        accuracy=float(meta["accuracy"]) if meta.get("accuracy") else None,
        sample=Sample(p_fake, p_fake >= threshold, None if embeddings is None else embeddings[has]),
    )


def ensure_reference(
    settings: Settings, store: ObjectStore, model_name: str, version: str, config: MonitorConfig
) -> Reference:
    """The version's reference, recorded now when missing (a version promoted before monitoring)."""
    try:
        return read_reference(store, model_name, version)
    except FileNotFoundError:
        log.info("no reference of %s version %s yet: recording it now", model_name, version)
    record_reference(settings, model_name, version, config)
    return read_reference(store, model_name, version)
