"""The one object-store layer: a key/value view of an fsspec filesystem rooted at a URL.

``file:///abs/path`` is the embedded default (persistent on disk); ``s3://bucket/prefix`` works
against AWS, MinIO or moto through ``settings.s3_endpoint_url``. Keys are ``/``-separated paths
relative to the root. Every write is atomic for readers: a local write goes to a hidden temporary
file that is renamed into place, and an S3 PUT is atomic by itself. Content-addressed writes
(:meth:`ObjectStore.put_content`) make re-runs idempotent: the same bytes always land on the same key.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import fsspec

from tasks.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

    from tasks.settings import Settings

TMP_MARKER = ".tmp-"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ObjectStore:
    """Read, write and list objects under one root URL."""

    def __init__(self, url: str, *, endpoint_url: str | None = None) -> None:
        parsed = urlparse(url)
        self.url = url.rstrip("/")
        self.protocol = parsed.scheme or "file"
        if self.protocol == "file":
            self.fs = fsspec.filesystem("file")
            self.root = parsed.path.rstrip("/") if parsed.scheme else os.path.abspath(url)
            Path(self.root).mkdir(parents=True, exist_ok=True)
            self.url = Path(self.root).as_uri()
        elif self.protocol == "s3":
            client_kwargs = {"endpoint_url": endpoint_url} if endpoint_url else {}
            # No listing cache: a reader must see a manifest as soon as it is published.
            self.fs = fsspec.filesystem("s3", client_kwargs=client_kwargs, use_listings_cache=False)
            self.root = (parsed.netloc + parsed.path).rstrip("/")
        else:
            raise ValueError(f"store_url {url!r}: unsupported scheme {self.protocol!r}; use file:// or s3://")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> ObjectStore:

        settings = settings or Settings()
        return cls(settings.store_url, endpoint_url=settings.s3_endpoint_url)

    def __repr__(self) -> str:
        return f"ObjectStore({self.url!r})"

    # -- addressing -------------------------------------------------------------------------------
    def _path(self, key: str) -> str:
        key = key.strip("/")
        if not key or ".." in key.split("/"):
            raise ValueError(f"invalid object key {key!r}")
        return f"{self.root}/{key}"

    def uri(self, key: str) -> str:
        """The object's full URL, as shown to users in logs and reports."""
        return f"{self.url}/{key.strip('/')}"

    def local_path(self, key: str) -> Path | None:
        """The object's path on disk for a file:// store, else None."""
        return Path(self._path(key)) if self.protocol == "file" else None

    # -- reading ----------------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        return self.fs.exists(self._path(key))

    def read_bytes(self, key: str) -> bytes:
        try:
            return self.fs.cat_file(self._path(key))
        except FileNotFoundError:
            raise FileNotFoundError(f"no object {key!r} in {self.url}") from None

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def read_table(self, key: str) -> pd.DataFrame:
        import pandas as pd

        return pd.read_parquet(io.BytesIO(self.read_bytes(key)))

    def read_table_metadata(self, key: str) -> dict[str, str]:
        """The key/value metadata of a Parquet object written by :meth:`write_table`."""
        import pyarrow.parquet as pq

        with self.fs.open(self._path(key), "rb") as fh:
            raw = pq.read_schema(fh).metadata or {}
        return {k.decode(): v.decode() for k, v in raw.items() if not k.startswith(b"pandas")}

    def size(self, key: str) -> int:
        return int(self.fs.size(self._path(key)))

    def sha256(self, key: str, chunk_bytes: int = 1 << 20) -> str:
        """sha256 of an object read in chunks: memory stays bounded whatever its size."""
        digest = hashlib.sha256()
        try:
            with self.fs.open(self._path(key), "rb") as fh:
                while chunk := fh.read(chunk_bytes):
                    digest.update(chunk)
        except FileNotFoundError:
            raise FileNotFoundError(f"no object {key!r} in {self.url}") from None
        return digest.hexdigest()

    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix`` (recursive, sorted), without in-flight temporary files."""
        base = self._path(prefix) if prefix.strip("/") else self.root
        try:
            paths = self.fs.find(base)
        except FileNotFoundError:
            return []
        root = self.root.rstrip("/") + "/"
        keys = [p[len(root) :] if p.startswith(root) else p for p in paths]
        return sorted(k for k in keys if TMP_MARKER not in k.rsplit("/", 1)[-1])

    # -- writing ----------------------------------------------------------------------------------
    def write_bytes(self, key: str, data: bytes, *, exclusive: bool = False) -> str:
        """Write ``data`` at ``key`` atomically; returns the key.

        ``exclusive``: create only, atomically: raise FileExistsError if ``key`` exists (a hard link
        on a local store, a conditional ``If-None-Match: *`` PUT on S3), so of two concurrent
        writers exactly one wins.
        """
        path = self._path(key)
        if self.protocol == "file":
            directory, name = os.path.split(path)
            os.makedirs(directory, exist_ok=True)
            tmp = os.path.join(directory, f"{TMP_MARKER}{uuid.uuid4().hex}-{name}")
            with open(tmp, "wb") as fh:
                fh.write(data)
            if not exclusive:
                os.replace(tmp, path)
                return key
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(f"object {key!r} already exists in {self.url}") from None
            finally:
                os.unlink(tmp)
        elif exclusive:
            try:
                self.fs.pipe_file(path, data, mode="create")
            except OSError as exc:  # s3fs maps 412 Precondition Failed to FileExistsError or EINVAL
                if isinstance(exc, FileExistsError) or self.exists(key):
                    raise FileExistsError(f"object {key!r} already exists in {self.url}") from None
                raise
        else:
            self.fs.pipe_file(path, data)
        return key

    def write_json(self, key: str, obj: Any) -> str:
        return self.write_bytes(key, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def write_table(
        self, key: str, df: pd.DataFrame, metadata: dict[str, str] | None = None, *, exclusive: bool = False
    ) -> str:
        """Write a DataFrame as Parquet, with optional key/value metadata in the file footer."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(df, preserve_index=False)
        if metadata:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return self.write_bytes(key, buf.getvalue(), exclusive=exclusive)

    def put_content(self, data: bytes, prefix: str, ext: str) -> str:
        """Store bytes under ``prefix/<sha256>.<ext>`` unless already there; returns the key."""
        key = f"{prefix.strip('/')}/{sha256_hex(data)}.{ext.lstrip('.')}"
        if not self.exists(key):
            self.write_bytes(key, data)
        return key

    def delete(self, key: str) -> None:
        path = self._path(key)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)
