"""The prediction log as the monitor reads it: Parquet parts under ``predictions/date=YYYY-MM-DD/``.

Serving (:class:`tasks.serve.records.PredictionLog`) writes one part per flush and date, never
rewrites one, and names it ``<flush time>-<id>.parquet``. A row is one prediction:

``prediction_id, time`` (ISO UTC, ms), ``image_sha256, p_fake`` (calibrated), ``label``
(``synthetic``/``authentic``/``uncertain``), ``threshold, model_name, model_version, latency_ms,
input_kind, explained, image_key`` (store key of the image bytes when serving kept them), and, since
monitoring: ``source`` (the client's declared source, else ``api``), ``client`` (token name or hashed
address), ``embedding`` (``list<float32>``: the detector's :meth:`~tasks.model.detector.Detector.embed`)
and ``review_candidate`` (why serving kept the bytes: ``near_threshold``, ``audit`` or null); with the
serving cascade also ``stage`` (the family that decided), ``first_p_fake`` (the first stage's score)
and, if logged, ``first_model_name``/``first_model_version`` (see :func:`_tested_stage`).

Parts written before monitoring lack the new columns; they read as nulls (no embedding: such rows
count for the score tests and accuracy, not for the embedding test). The verdict the monitor tests is
``p_fake >= threshold`` (a ``fake`` verdict), recomputed per row, so it matches the reference's.

:func:`write_part` appends rows in this layout: the tests', the benchmark's and the demo's writer.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from tasks.storage import ObjectStore

PREFIX = "predictions"
BASE_COLUMNS = (
    "prediction_id",
    "time",
    "image_sha256",
    "p_fake",
    "label",
    "threshold",
    "model_name",
    "model_version",
    "latency_ms",
    "input_kind",
    "explained",
    "image_key",
)
MONITOR_COLUMNS = ("source", "client", "embedding", "review_candidate")
# The serving cascade (a first stage for every image, a second for the uncertain band): which family
# decided, the first stage's P(fake) for every image, and (when serving logs it) the first stage's model.
CASCADE_COLUMNS = ("stage", "first_p_fake", "first_model_name", "first_model_version")
COLUMNS = (*BASE_COLUMNS, *MONITOR_COLUMNS, *CASCADE_COLUMNS)
# What the monitor keeps of a row (the embedding goes into a matrix of its own).
FRAME_COLUMNS = tuple(c for c in COLUMNS if c != "embedding")
UNKNOWN_VERSION = "unknown"  # a model served from a local folder has no registry version
DEFAULT_SOURCE = "api"


def partition(day: date) -> str:
    return f"{PREFIX}/date={day.isoformat()}/"


def day_of(key: str) -> str:
    """``YYYY-MM-DD`` of a part key ``predictions/date=YYYY-MM-DD/...``."""
    return key.split("/", 2)[1].removeprefix("date=")


def list_parts(store: ObjectStore, since: date, until: date) -> list[str]:
    """Part keys of the date partitions ``since`` .. ``until`` (inclusive), sorted: one listing per day,
    so the cost follows the days listed, not the size of the whole log."""
    keys: list[str] = []
    day = since
    while day <= until:
        keys += [k for k in store.list(partition(day)) if k.endswith(".parquet")]
        day += timedelta(days=1)
    return sorted(keys)


@dataclass
class Rows:
    """Rows of some log parts: a frame without the embedding, and the embeddings as one matrix."""

    frame: pd.DataFrame
    embeddings: np.ndarray | None  # float32 [n, d] where ``has_embedding``; None when no row has one
    has_embedding: np.ndarray  # bool [n]

    def __len__(self) -> int:
        return len(self.frame)

    def where(self, mask) -> Rows:
        mask = np.asarray(mask, bool)
        return Rows(
            self.frame[mask].reset_index(drop=True),
            None if self.embeddings is None else self.embeddings[mask],
            self.has_embedding[mask],
        )


def _arrow_type(column: str):
    """The column's type in the monitor's view of the log (string unless listed)."""
    import pyarrow as pa

    special = {
        "p_fake": pa.float64(),
        "first_p_fake": pa.float64(),
        "threshold": pa.float64(),
        "latency_ms": pa.float64(),
        "explained": pa.bool_(),
        "embedding": pa.list_(pa.float32()),
    }
    return special.get(column, pa.string())


def read_part(store: ObjectStore, key: str):
    """One part as an Arrow table with every column of :data:`COLUMNS` (nulls where an older part has none)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(store.read_bytes(key)))
    columns = []
    for column in COLUMNS:
        kind = _arrow_type(column)
        if column not in table.column_names:
            columns.append(pa.nulls(len(table), kind))
        else:  # one type per column whatever a writer inferred (a version as int, an all-null column)
            values = table.column(column)
            columns.append(values if values.type == kind else values.cast(kind))
    return pa.table(columns, names=list(COLUMNS))


def to_rows(tables: list) -> Rows:
    """Rows of parts read by :func:`read_part`."""
    import pyarrow as pa

    tables = [t for t in tables if len(t)]
    if not tables:
        return _empty()
    table = pa.concat_tables(tables)
    embeddings, has = _embedding_matrix(table.column("embedding"))
    frame = table.drop_columns(["embedding"]).to_pandas()
    for column in frame.columns:  # missing values as None (pandas 3 strings hold NaN, which is truthy)
        if column not in ("p_fake", "first_p_fake", "threshold", "latency_ms", "explained"):
            frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    frame["p_fake"] = frame["p_fake"].astype(float)
    frame["threshold"] = frame["threshold"].astype(float)
    frame["model_name"] = [str(v) if isinstance(v, str) and v else "unknown" for v in frame["model_name"]]
    frame["model_version"] = [
        UNKNOWN_VERSION if v is None or v != v else str(v) for v in frame["model_version"]
    ]
    frame["source"] = [str(v) if isinstance(v, str) and v else DEFAULT_SOURCE for v in frame["source"]]
    frame["fake"] = frame["p_fake"] >= frame["threshold"]
    _tested_stage(frame)
    return Rows(frame, embeddings, has)


def _tested_stage(frame) -> None:
    """The model whose score and embedding the drift tests compare: ``tested_model_name``,
    ``tested_model_version``, ``tested_p_fake``.

    Without a cascade, the row's own model. With one, the **first stage**, which scored every image and
    whose embedding the row holds (the second stage sees only the uncertain band: a chosen subset, never
    comparable with its reference). Its model is ``first_model_*`` when serving logs it, else the model
    of the window's rows the first stage decided (``p_fake == first_p_fake``) when they are all one
    version; rows it cannot tell stay untested (None).
    """
    import pandas as pd

    first_p = frame["first_p_fake"]
    cascade = first_p.notna().to_numpy()
    frame["tested_p_fake"] = np.where(cascade, first_p.fillna(0.0), frame["p_fake"]).astype(float)
    names, versions = frame["model_name"].astype(object).copy(), frame["model_version"].astype(object).copy()
    if cascade.any():
        logged = frame["first_model_version"].notna().to_numpy()
        names[logged] = frame.loc[logged, "first_model_name"]
        versions[logged] = frame.loc[logged, "first_model_version"].astype(str)
        by_first = cascade & ~logged & (frame["p_fake"] == first_p).to_numpy()
        routed = cascade & ~logged & ~by_first
        known = set(zip(names[by_first | logged], versions[by_first | logged], strict=True))
        if len(known) == 1:
            names[routed], versions[routed] = next(iter(known))
        else:
            names[routed], versions[routed] = None, None
    frame["tested_model_name"] = pd.Series(names, index=frame.index, dtype=object)
    frame["tested_model_version"] = pd.Series(versions, index=frame.index, dtype=object)


def read_parts(store: ObjectStore, keys: list[str]) -> Rows:
    """The rows of ``keys``, older parts (without the monitoring columns) included."""
    return to_rows([read_part(store, key) for key in keys])


def _embedding_matrix(column) -> tuple[np.ndarray | None, np.ndarray]:
    """(matrix of the rows that have an embedding of the most common length, mask of those rows)."""
    import pyarrow.compute as pc

    column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    lengths = np.nan_to_num(lengths.astype(float), nan=0).astype(int)
    if not lengths.any():
        return None, np.zeros(len(column), bool)
    values, counts = np.unique(lengths[lengths > 0], return_counts=True)
    dim = int(values[np.argmax(counts)])
    has = lengths == dim
    chosen = column.filter(has)
    flat = np.asarray(chosen.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    matrix = np.zeros((len(column), dim), np.float32)
    matrix[has] = flat.reshape(-1, dim)
    return matrix, has


def _empty() -> Rows:
    import pandas as pd

    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in FRAME_COLUMNS})
    frame["p_fake"] = frame["p_fake"].astype(float)
    frame["threshold"] = frame["threshold"].astype(float)
    frame["fake"] = pd.Series(dtype=bool)
    for column in ("tested_model_name", "tested_model_version"):
        frame[column] = pd.Series(dtype=object)
    frame["tested_p_fake"] = pd.Series(dtype=float)
    return Rows(frame, None, np.zeros(0, bool))


# -- writing (tests, benchmark, demo) -------------------------------------------------------------


def prediction_row(
    p_fake: float,
    *,
    time: datetime | str | None = None,
    threshold: float = 0.5,
    model_name: str = "vigil-detector",
    model_version: str | None = "1",
    source: str = DEFAULT_SOURCE,
    embedding: np.ndarray | list[float] | None = None,
    image_key: str | None = None,
    review_candidate: str | None = None,
    image_sha256: str | None = None,
    prediction_id: str | None = None,
    client: str = "test",
    stage: str | None = None,
    first_p_fake: float | None = None,
) -> dict[str, Any]:
    """One row of the log, as serving writes it."""
    when = time or datetime.now(UTC)
    stamp = when if isinstance(when, str) else when.isoformat(timespec="milliseconds")
    prediction_id = prediction_id or uuid.uuid4().hex
    return {
        "prediction_id": prediction_id,
        "time": stamp,
        "image_sha256": image_sha256 or uuid.uuid5(uuid.NAMESPACE_OID, prediction_id).hex * 2,
        "p_fake": float(p_fake),
        "label": "synthetic" if p_fake >= threshold else "authentic",
        "threshold": float(threshold),
        "model_name": model_name,
        "model_version": model_version,
        "latency_ms": 10.0,
        "input_kind": "upload",
        "explained": False,
        "image_key": image_key,
        "source": source,
        "client": client,
        "embedding": None if embedding is None else np.asarray(embedding, np.float32),
        "review_candidate": review_candidate,
        "stage": stage,
        "first_p_fake": first_p_fake,
        "first_model_name": None,
        "first_model_version": None,
    }


def write_part(store: ObjectStore, rows: list[dict[str, Any]], flushed: datetime | None = None) -> list[str]:
    """Append ``rows`` to the log as serving's flush does (one part per date of the rows); the keys."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    flushed = flushed or datetime.now(UTC)
    by_day: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_day.setdefault(row["time"][:10], []).append(row)
    keys = []
    for day, group in sorted(by_day.items()):
        columns = {c: [r.get(c) for r in group] for c in COLUMNS}
        columns["embedding"] = pa.array(
            [None if e is None else np.asarray(e, np.float32) for e in columns["embedding"]],
            pa.list_(pa.float32()),
        )
        table = pa.table({c: columns[c] for c in COLUMNS})
        buf = io.BytesIO()
        pq.write_table(table, buf)
        key = f"{PREFIX}/date={day}/{flushed:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}.parquet"
        keys.append(store.write_bytes(key, buf.getvalue()))
    return keys
