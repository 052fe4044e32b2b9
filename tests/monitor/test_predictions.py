"""Reading the prediction log: the monitoring columns, and older parts without them."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from tasks.monitor.predictions import BASE_COLUMNS, list_parts, prediction_row, read_parts, write_part


def test_rows_with_embeddings_and_an_older_part_without_the_new_columns(local_store):
    rows = [prediction_row(0.9, embedding=np.ones(8)), prediction_row(0.1, source="web", embedding=None)]
    [new_key] = write_part(local_store, rows)
    old = pd.DataFrame(
        [{**{c: rows[0][c] for c in BASE_COLUMNS}, "prediction_id": "old", "model_version": 3, "p_fake": 0.4}]
    )
    buf = io.BytesIO()
    old.to_parquet(
        buf
    )  # what serving wrote before monitoring: no source, client, embedding, review_candidate
    day = rows[0]["time"][:10]
    old_key = local_store.write_bytes(f"predictions/date={day}/00000000T000000-old.parquet", buf.getvalue())

    read = read_parts(local_store, [old_key, new_key])
    frame = read.frame
    assert frame["prediction_id"].iloc[0] == "old" and len(read) == 3
    assert list(frame["model_version"]) == ["3", "1", "1"]  # one type: an int version reads as text
    assert list(frame["source"]) == ["api", "api", "web"]  # no source: the API
    assert list(frame["fake"]) == [False, True, False]
    assert list(read.has_embedding) == [False, True, False] and read.embeddings.shape == (3, 8)
    assert frame["image_key"].tolist() == [None, None, None]
    assert list_parts(local_store, pd.Timestamp(day).date(), pd.Timestamp(day).date()) == sorted(
        [old_key, new_key]
    )


def test_a_part_written_by_pandas_with_python_float_embeddings_and_the_cascade_columns(local_store):
    """What serving's PredictionLog writes: a DataFrame, the embedding a list of floats (Parquet doubles)."""
    base = prediction_row(0.3)
    rows = [
        {**base, "prediction_id": "a", "embedding": [0.5] * 4, "stage": "probe", "first_p_fake": 0.3},
        {
            **base,
            "prediction_id": "b",
            "embedding": [1.5] * 4,
            "stage": "vlm",
            "first_p_fake": 0.45,
            "model_name": "vigil-detector-vlm",
            "model_version": "2",
            "p_fake": 0.9,
        },
    ]
    frame = pd.DataFrame(rows)
    buf = io.BytesIO()
    frame.to_parquet(buf)
    key = local_store.write_bytes(
        f"predictions/date={base['time'][:10]}/20260101T000000-pandas.parquet", buf.getvalue()
    )

    read = read_parts(local_store, [key])
    assert read.embeddings.dtype == np.float32 and read.embeddings.tolist() == [[0.5] * 4, [1.5] * 4]
    assert list(read.frame["tested_model_name"]) == ["vigil-detector", "vigil-detector"]
    assert list(read.frame["tested_model_version"]) == ["1", "1"]
    assert list(read.frame["tested_p_fake"]) == [0.3, 0.45] and list(read.frame["p_fake"]) == [0.3, 0.9]
