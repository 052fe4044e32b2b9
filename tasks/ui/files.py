"""Serve stored report files (Data Docs sites, gate reports) confined to one report's prefix.

A request names a file *relative to* a report folder; anything that could leave that folder
(``..``, absolute paths, backslashes, empty or hidden segments, control characters) is refused
before the store is asked. Content types come from the file name, never from the bytes.
"""

from __future__ import annotations

import mimetypes
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.storage import ObjectStore

# Ids that name a report folder: batch ids (``inbox-20250101T000100Z-4286203d``), model names.
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
# A path segment: no separator, no control character, not hidden (which also refuses "." and "..").
_SEGMENT = re.compile(r"^[^./\\\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]{0,254}$")
TEXT_TYPES = ("text/", "application/json", "application/javascript", "image/svg+xml")


class ReportPathError(ValueError):
    """A requested path that would leave its report folder, or is not a valid name."""


@dataclass(frozen=True)
class ReportFile:
    data: bytes
    media_type: str


def check_id(value: str, what: str) -> str:
    """``value`` if it is a safe folder name (a batch id, a model name), else ReportPathError."""
    if not SAFE_ID.match(value or "") or ".." in value:
        raise ReportPathError(f"invalid {what} {value!r}: letters, digits, '.', '_' and '-' only")
    return value


def confined_key(prefix: str, relative: str) -> str:
    """The object key of ``relative`` inside ``prefix``; ReportPathError if it could escape."""
    if not relative or relative.startswith("/") or "\\" in relative:
        raise ReportPathError(f"invalid report path {relative!r}")
    segments = relative.split("/")
    for segment in segments:
        if not _SEGMENT.match(segment):
            raise ReportPathError(f"invalid report path {relative!r}: bad segment {segment!r}")
    return f"{prefix.strip('/')}/{'/'.join(segments)}"


def media_type(key: str) -> str:
    guessed, _ = mimetypes.guess_type(key, strict=True)
    media = guessed or "application/octet-stream"
    return f"{media}; charset=utf-8" if media.startswith(TEXT_TYPES) else media


def read_report_file(store: ObjectStore, prefix: str, relative: str) -> ReportFile:
    """The bytes and content type of ``prefix/relative``; FileNotFoundError if there is no such object."""
    key = confined_key(prefix, relative)
    return ReportFile(store.read_bytes(key), media_type(key))
