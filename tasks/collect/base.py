"""The one interface every source kind implements, and the item it yields.

A collector turns one source of ``include/sources.yaml`` into candidate images: it reads the
platform (or folder), yields :class:`Candidate` items newest first, and keeps a small JSON cursor
so that the next run only sees what is new. Everything else — downloading media safely, storing
bytes, weak labels, the batch manifest, persisting the cursor — is done once, by
:func:`tasks.collect.run.collect`. Adding a kind (Bluesky, Reddit, ...) is one module with a
:class:`Collector` subclass plus one line in :mod:`tasks.collect.kinds`.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from tasks.errors import PermanentError

if TYPE_CHECKING:
    from tasks.collect.sources import Source
    from tasks.settings import Settings


class CollectError(RuntimeError):
    """A source could not be read (credentials, access tier, API down); the message says what to do."""


class CollectConfigError(CollectError, PermanentError):
    """Retrying cannot help (missing or rejected credentials, paid tier, bad options or metadata): fix first."""


class Options(BaseModel):
    """Base of each kind's ``options`` model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Credential:
    """Where a kind's secret comes from: an Airflow connection's password, else an environment variable."""

    conn_id: str
    env: str
    required: bool

    def describe(self) -> str:
        return f"the Airflow connection {self.conn_id!r} (password) or the environment variable {self.env}"


@dataclass(frozen=True)
class Candidate:
    """One image found by a collector: either its bytes (folders) or the URL to download (web)."""

    post_id: str
    data: bytes | None = None
    sha256: str | None = None  # of ``data``, when the collector already computed it
    # A file over images.max_file_bytes: its size, listed without its bytes (``data`` is None); curation
    # quarantines it as too_large_file.
    withheld_size: int | None = None
    media_url: str | None = None
    post_url: str | None = None
    author: str | None = None  # in clear here; the runner stores only its sha256
    created_at: str | None = None
    alt_text: str | None = None
    license: str | None = None
    label: str | None = None  # an explicit label (folder layout, metadata.jsonl); else weak labels apply
    label_source: str | None = None
    split: str | None = None
    dataset: str | None = None
    generator: str | None = None
    original_name: str | None = None


class Collector(ABC):
    """Reads one source. Subclasses set the class attributes and implement :meth:`items`."""

    kind: ClassVar[str]
    options_model: ClassVar[type[Options]] = Options
    # Which ``query`` fields this kind understands; others must stay empty.
    query_fields: ClassVar[frozenset[str]] = frozenset()
    credential: ClassVar[Credential | None] = None
    # Web sources download media: non-image bytes are refused. Folder imports keep every file.
    downloads: ClassVar[bool] = True

    def __init__(
        self,
        source: Source,
        settings: Settings,
        *,
        cursor: dict[str, Any] | None = None,
        token: str | None = None,
        limit: int | None = None,
    ) -> None:
        self.source = source
        self.options = source.options
        self.settings = settings
        self.state: dict[str, Any] = dict(cursor or {})
        self.limit = limit or source.max_images
        self.skipped: Counter[str] = Counter()
        self.token = token or (os.environ.get(self.credential.env) if self.credential else None) or None
        if self.credential and self.credential.required and not self.token:
            raise CollectConfigError(
                f"source {source.name!r} ({self.kind}) needs a token: set {self.credential.describe()}"
            )

    def candidates(self) -> Iterator[Candidate]:
        """At most ``limit`` candidates; the cursor then covers exactly what was handed out."""
        return islice(self.items(), self.limit)

    @abstractmethod
    def items(self) -> Iterator[Candidate]:
        """Yield candidates, newest first, updating ``self.state`` as they are handed out."""

    def skip(self, reason: str) -> None:
        """Count an item passed over, by reason (shown in the run summary)."""
        self.skipped[reason] += 1
