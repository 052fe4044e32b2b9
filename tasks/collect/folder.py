"""``folder`` sources: an inbox directory or bucket prefix where users drop (labeled) images.

Layouts, relative to the source's folder:

* ``.../0_real/<file>`` and ``.../1_fake/<file>``: the folder gives the label (``label_source``
  ``folder``; ``feedback`` under the top-level ``feedback/`` folder, where the detection API writes
  the images users corrected through ``POST /v1/feedback``; ``review`` under the top-level
  ``review/`` folder, where the review queue writes the images a reviewer labeled);
* ``NAME/{train,val,test}/{0_real,1_fake}/<file>`` (the ImageFolder layout of detection data sets):
  imported as-is, keeping its split and ``NAME`` as ``dataset``;
* anything else: unlabeled, the source's ``label_prior`` (or provenance metadata) applies.

An optional ``metadata.jsonl`` (Hugging Face ImageFolder convention: one JSON object per line,
``file_name`` relative to the folder holding the metadata file) fills the columns ``generator``,
``alt_text``, ``license``, ``created_at``, ``post_url`` and ``label``; other keys are ignored.

Every file is imported, even one that is not an image: curation quarantines it with a reason the
user can see, instead of it silently disappearing here. A file larger than ``images.max_file_bytes``
is listed in the batch by its size and sha256 (hashed in chunks) without copying its bytes; curation
quarantines it as ``too_large_file``. Hidden files (``.*``) are skipped. Files
already collected from this source (same path, size and modification time, or same content) are
skipped, so re-running on the same inbox adds nothing. The inbox folder itself is created when
missing (a fresh install has nothing to collect yet); any other missing folder is an error.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import Field

from tasks.collect.base import Candidate, CollectConfigError, Collector, Options
from tasks.data.batches import HUMAN_LABEL, REVIEW_LABEL
from tasks.storage import ObjectStore, sha256_hex

LABEL_DIRS = {"0_real": "real", "1_fake": "fake"}
SPLITS = ("train", "val", "test")
FEEDBACK_DIR = "feedback"
REVIEW_DIR = "review"
# Top-level folders whose labels a person gave: folder -> label_source.
HUMAN_DIRS = {FEEDBACK_DIR: HUMAN_LABEL, REVIEW_DIR: REVIEW_LABEL}
METADATA_FILE = "metadata.jsonl"
METADATA_COLUMNS = ("generator", "alt_text", "license", "created_at", "post_url", "label")


class FolderOptions(Options):
    path: str = Field(
        ".", description="Folder, relative to settings.inbox, absolute, or an s3://bucket/prefix URL."
    )


def resolve_location(path: str, inbox: str) -> str:
    """The folder or URL a source reads: absolute paths and URLs as given, the rest under the inbox."""
    if "://" in path or Path(path).is_absolute():
        return path
    if "://" in inbox:
        rel = posixpath.normpath(path)
        return inbox.rstrip("/") + ("" if rel == "." else "/" + rel)
    return str((Path(inbox) / path).resolve())


def layout_of(rel: str, root_name: str) -> tuple[str | None, str | None, str | None]:
    """(label, split, dataset) given by a file's place in the folder, or Nones when unlabeled."""
    parts = rel.split("/")[:-1]
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] in LABEL_DIRS:
            if i >= 1 and parts[i - 1] in SPLITS:
                return LABEL_DIRS[parts[i]], parts[i - 1], parts[i - 2] if i >= 2 else root_name
            return LABEL_DIRS[parts[i]], None, None
    return None, None, None


class FolderCollector(Collector):
    kind = "folder"
    options_model = FolderOptions
    downloads = False

    def items(self) -> Iterator[Candidate]:
        location = resolve_location(self.options.path, self.settings.inbox)
        if location == resolve_location(".", self.settings.inbox) and "://" not in location:
            Path(location).mkdir(
                parents=True, exist_ok=True
            )  # the inbox itself: empty until users drop files
        if "://" not in location and not Path(location).is_dir():
            raise CollectConfigError(
                f"source {self.source.name!r}: folder {location} does not exist "
                f"(options.path={self.options.path!r}, inbox={self.settings.inbox})"
            )
        store = ObjectStore(location, endpoint_url=self.settings.s3_endpoint_url)
        files = self._list(store)
        metadata = self._metadata(store, [rel for rel in files if rel.rsplit("/", 1)[-1] == METADATA_FILE])
        seen: dict[str, list[str]] = self.state.setdefault("files", {})
        known_shas = {sha for _, sha in seen.values()}
        root_name = location.rstrip("/").rsplit("/", 1)[-1]
        for rel, stamp in files.items():
            name = rel.rsplit("/", 1)[-1]
            if name == METADATA_FILE:
                continue
            if rel in seen and seen[rel][0] == stamp:
                self.skip("already collected")
                continue
            size = stamp.split(":", 1)[0]
            oversize = size.isdigit() and int(size) > self.settings.images.max_file_bytes
            try:
                # An oversize file is hashed in chunks, never held in memory nor copied to the store.
                data = None if oversize else store.read_bytes(rel)
                sha = store.sha256(rel) if oversize else sha256_hex(data)
            except FileNotFoundError:  # moved away between listing and reading: next run decides
                self.skip("file disappeared during the run")
                continue
            # An oversize file's sha is not remembered: once the limit is raised, touching the file
            # (or copying it under another name) collects its bytes.
            seen[rel] = [stamp, "" if oversize else sha]
            label, split, dataset = layout_of(rel, root_name)
            human = HUMAN_DIRS.get(rel.split("/", 1)[0])
            # Known bytes are skipped, except a person's label (feedback, review): it may correct the
            # stored one (curation applies it to the image already in the snapshot).
            if sha in known_shas and not (human and label):
                self.skip("already collected")
                continue
            known_shas.add(sha)
            extra = metadata.get(rel, {})
            label_source = (human or "folder") if label else ("metadata" if extra.get("label") else None)
            yield Candidate(
                post_id=rel,
                data=data,
                sha256=sha,
                withheld_size=int(size) if oversize else None,
                original_name=name,
                split=split,
                dataset=dataset,
                label=label or extra.get("label"),
                label_source=label_source,
                generator=extra.get("generator"),
                alt_text=extra.get("alt_text"),
                license=extra.get("license"),
                created_at=extra.get("created_at"),
                post_url=extra.get("post_url"),
            )

    def _list(self, store: ObjectStore) -> dict[str, str]:
        """Relative path -> "size:mtime" of every visible file, sorted by path."""
        try:
            found = store.fs.find(store.root, detail=True)
        except FileNotFoundError:
            return {}
        prefix = store.root.rstrip("/") + "/"
        files = {}
        for path, info in found.items():
            rel = path[len(prefix) :] if path.startswith(prefix) else path
            if info.get("type") == "directory" or any(part.startswith(".") for part in rel.split("/")):
                continue
            modified = info.get("mtime") or info.get("LastModified") or info.get("ETag") or ""
            files[rel] = f"{info.get('size')}:{modified}"
        return dict(sorted(files.items()))

    def _metadata(self, store: ObjectStore, keys: list[str]) -> dict[str, dict[str, Any]]:
        """Rows of every metadata.jsonl, keyed by the path of the file they describe."""
        rows: dict[str, dict[str, Any]] = {}
        for key in keys:
            base = posixpath.dirname(key)
            for number, line in enumerate(store.read_bytes(key).decode("utf-8", "replace").splitlines(), 1):
                if not line.strip():
                    continue
                where = f"{store.uri(key)} line {number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise CollectConfigError(f"{where}: not valid JSON ({exc.msg})") from None
                if not isinstance(record, dict) or not isinstance(record.get("file_name"), str):
                    raise CollectConfigError(
                        f"{where}: each line must be a JSON object with a 'file_name' string"
                    )
                if record.get("label") not in (None, "real", "fake", "unknown"):
                    raise CollectConfigError(
                        f"{where}: label must be real, fake or unknown, got {record['label']!r}"
                    )
                path = posixpath.normpath(posixpath.join(base, record["file_name"]))
                rows[path] = {k: _text(record.get(k)) for k in METADATA_COLUMNS if record.get(k) is not None}
        return rows


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
