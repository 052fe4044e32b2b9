"""The registry of source kinds: adding a kind is one module plus one line here."""

from __future__ import annotations

from tasks.collect.base import Collector
from tasks.collect.folder import FolderCollector
from tasks.collect.mastodon import MastodonCollector
from tasks.collect.x import XCollector

KINDS: dict[str, type[Collector]] = {
    "x": XCollector,
    "mastodon": MastodonCollector,
    "folder": FolderCollector,
}
