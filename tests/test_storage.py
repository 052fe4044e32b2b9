"""The object store behaves the same on a local folder and on S3 (moto's server on loopback)."""

import pandas as pd
import pytest

from tasks.storage import ObjectStore, sha256_hex


def test_round_trip_and_listing(store):
    store.write_bytes("a/b/c.bin", b"hello")
    store.write_json("a/meta.json", {"x": 1})
    assert store.read_bytes("a/b/c.bin") == b"hello"
    assert store.read_json("a/meta.json") == {"x": 1}
    assert store.list("a") == ["a/b/c.bin", "a/meta.json"]
    assert store.list("missing") == []
    assert store.exists("a/b/c.bin") and not store.exists("a/b/d.bin")
    assert store.uri("a/b/c.bin").endswith("/a/b/c.bin")


def test_content_addressed_writes_are_idempotent(store):
    first = store.put_content(b"pixels", "raw/demo", "png")
    second = store.put_content(b"pixels", "raw/demo", ".png")
    assert first == second == f"raw/demo/{sha256_hex(b'pixels')}.png"
    assert store.list("raw") == [first]


def test_parquet_with_metadata(store):
    df = pd.DataFrame({"sha256": ["a", "b"], "label": ["real", "fake"]})
    store.write_table("t/manifest.parquet", df, metadata={"version": "v0001"})
    assert store.read_table("t/manifest.parquet").equals(df)
    assert store.read_table_metadata("t/manifest.parquet") == {"version": "v0001"}


def test_missing_object_names_key(store):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        store.read_bytes("nope.json")


@pytest.mark.parametrize("key", ["", "../etc/passwd", "a/../../b"])
def test_rejects_keys_outside_root(local_store, key):
    with pytest.raises(ValueError, match="invalid object key"):
        local_store.write_bytes(key, b"x")


def test_local_temp_files_are_invisible(local_store):
    path = local_store.local_path("x/.tmp-123-file.json")
    path.parent.mkdir(parents=True)
    path.write_text("partial")
    assert local_store.list("x") == []


def test_unknown_scheme_is_a_clear_error():
    with pytest.raises(ValueError, match="unsupported scheme 'gs'"):
        ObjectStore("gs://bucket/x")


def test_exclusive_write_never_overwrites(store):
    store.write_bytes("m/manifest.parquet", b"first", exclusive=True)
    with pytest.raises(FileExistsError, match="already exists"):
        store.write_bytes("m/manifest.parquet", b"second", exclusive=True)
    assert store.read_bytes("m/manifest.parquet") == b"first"
    assert store.list("m") == ["m/manifest.parquet"]  # no temporary file left behind
