"""What a killed curation leaves behind, and how the next run removes it.

* The **spool**: normalised images wait in ``<settings.home>/spool/curate-<pid>-<random>/`` until the
  batch is known to pass. A run removes its own spool when it ends; a run killed with ``kill -9``
  cannot, so every run first removes the spools whose pid is no longer alive.
* **Temporary files** of a local store: a write goes to a hidden ``.tmp-*`` file renamed into place
  (:meth:`tasks.storage.ObjectStore.write_bytes`); a writer killed in between leaves it. Under the
  prefixes curation writes, those older than ``curation.temp_grace_s`` are removed (S3 puts leave
  none). The grace period spares a file another process is writing right now.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.curate.lock import pid_alive
from tasks.storage import TMP_MARKER

if TYPE_CHECKING:
    from tasks.storage import ObjectStore

log = logging.getLogger(__name__)

SPOOL_FOLDER = "spool"
_SPOOL_NAME = re.compile(r"^curate-(\d+)-[0-9a-f]+$")


def new_spool(home: Path) -> Path:
    """A fresh spool folder of this process, under ``<home>/spool``."""
    path = Path(home) / SPOOL_FOLDER / f"curate-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return path


def remove_spool(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def remove_stale_spools(home: Path) -> list[str]:
    """Remove the spools of curation processes that are gone; the names removed."""
    root = Path(home) / SPOOL_FOLDER
    if not root.is_dir():
        return []
    removed = []
    for entry in root.iterdir():
        match = _SPOOL_NAME.match(entry.name)
        if match and entry.is_dir() and not pid_alive(int(match.group(1))):
            size = sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())
            shutil.rmtree(entry, ignore_errors=True)
            log.warning("removed the spool of a killed curation run: %s (%.1f MB)", entry, size / 1e6)
            removed.append(entry.name)
    return removed


def remove_stale_temporaries(store: ObjectStore, prefixes: tuple[str, ...], grace_s: float) -> list[str]:
    """Remove ``.tmp-*`` files older than ``grace_s`` under ``prefixes`` of a local store; their keys."""
    root = store.local_path("x")
    if root is None:  # S3: a put is atomic, nothing is left behind
        return []
    root = root.parent
    cutoff = time.time() - grace_s
    removed = []
    for prefix in prefixes:
        for folder, _dirs, files in os.walk(root / prefix):
            for name in files:
                if not name.startswith(TMP_MARKER):
                    continue
                path = Path(folder) / name
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed.append(path.relative_to(root).as_posix())
                except FileNotFoundError:  # renamed into place or removed meanwhile
                    continue
    if removed:
        log.warning(
            "removed %d temporary file(s) left by killed writers under %s, e.g. %s",
            len(removed),
            store.url,
            removed[0],
        )
    return removed
