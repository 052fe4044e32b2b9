"""A lease in the object store: one curation at a time per store, on a local folder and on S3 alike.

The lock is a sequence of generations, ``locks/<name>/<generation>.json``, each created with an
exclusive put (a hard link locally, ``If-None-Match: *`` on S3), so of two processes taking the
same generation exactly one wins. The highest generation is the current one; it holds its owner
(``host:pid``), when it was taken and when it expires. The holder renews it every third of its
lease; a holder that was killed stops renewing, and its lease is *stale* once expired, or at once
when its host is this host and its pid is dead. A stale lock is taken over by creating the next
generation (never by deleting someone else's), and released by deleting one's own.

This serialises curations so that a second one waits (bounded) instead of redoing the work and losing
the race for the snapshot manifest; the manifest's exclusive create still keeps the data correct if a
lease is ever broken while its holder is alive (clocks far apart, a paused process).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasks.storage import ObjectStore

log = logging.getLogger(__name__)

LOCK_PREFIX = "locks"
POLL_S = 1.0


class LockBusy(RuntimeError):
    """The lock is held by a live owner and the wait is over; ``holder`` is its record."""

    def __init__(self, message: str, holder: dict[str, Any]) -> None:
        super().__init__(message)
        self.holder = holder


def _now() -> datetime:
    return datetime.now(UTC)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stale_reason(record: dict[str, Any], now: datetime | None = None) -> str | None:
    """Why a lock record no longer holds (expired, or its process on this host is gone), else None."""
    now = now or _now()
    try:
        expires = datetime.fromisoformat(record["expires_at"])
    except (KeyError, TypeError, ValueError):
        return "it has no valid expiry"
    if expires <= now:
        return f"its lease expired at {record['expires_at']}"
    pid = record.get("pid")
    if record.get("host") == socket.gethostname() and isinstance(pid, int) and not pid_alive(pid):
        return f"its process {pid} on this host is gone"
    return None


def describe(record: dict[str, Any]) -> str:
    return (
        f"held by {record.get('owner', '?')} since {record.get('acquired_at', '?')}, "
        f"lease until {record.get('expires_at', '?')}"
    )


@dataclass
class StoreLock:
    """``with StoreLock(store, "curate", ttl_s=120, wait_s=600):`` — raises :class:`LockBusy` after the wait."""

    store: ObjectStore
    name: str
    ttl_s: float
    wait_s: float
    poll_s: float = POLL_S
    key: str | None = field(default=None, init=False)
    record: dict[str, Any] = field(default_factory=dict, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _renewer: threading.Thread | None = field(default=None, init=False)

    @property
    def prefix(self) -> str:
        return f"{LOCK_PREFIX}/{self.name}"

    def _generations(self) -> list[str]:
        keys = [k for k in self.store.list(self.prefix) if k.endswith(".json")]
        return sorted(keys, key=lambda k: int(k.rsplit("/", 1)[-1].removesuffix(".json")))

    def _record(self, generation: int) -> dict[str, Any]:
        now = _now()
        return {
            "owner": f"{socket.gethostname()}:{os.getpid()}",
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "token": self.record.get("token") or uuid.uuid4().hex,
            "generation": generation,
            "acquired_at": self.record.get("acquired_at") or now.isoformat(timespec="seconds"),
            "renewed_at": now.isoformat(timespec="seconds"),
            "expires_at": (now + timedelta(seconds=self.ttl_s)).isoformat(timespec="seconds"),
        }

    def acquire(self) -> StoreLock:
        deadline = time.monotonic() + self.wait_s
        waited = False
        while True:
            generations = self._generations()
            generation = 1
            if generations:
                top = generations[-1]
                try:
                    holder = self.store.read_json(top)
                except FileNotFoundError:  # released meanwhile
                    continue
                reason = stale_reason(holder)
                if reason is None:
                    if time.monotonic() >= deadline:
                        raise LockBusy(
                            f"another {self.name} is running on {self.store.url} ({describe(holder)}); "
                            f"gave up after waiting {self.wait_s:.0f} s",
                            holder,
                        )
                    if not waited:
                        log.info(
                            "waiting up to %.0f s for the %s lock on %s (%s)",
                            self.wait_s,
                            self.name,
                            self.store.url,
                            describe(holder),
                        )
                        waited = True
                    time.sleep(self.poll_s)
                    continue
                log.warning(
                    "taking over the %s lock on %s: %s (%s)",
                    self.name,
                    self.store.url,
                    reason,
                    describe(holder),
                )
                generation = int(top.rsplit("/", 1)[-1].removesuffix(".json")) + 1
            key = f"{self.prefix}/{generation:010d}.json"
            record = self._record(generation)
            try:
                self.store.write_bytes(key, json.dumps(record, indent=2).encode(), exclusive=True)
            except FileExistsError:  # another process took this generation first: look again
                continue
            self.key, self.record = key, record
            for old in generations:  # released or stale: nobody holds them any more
                self.store.delete(old)
            self._start_renewing()
            log.info("took the %s lock on %s (%s)", self.name, self.store.url, self.key)
            return self

    def _start_renewing(self) -> None:
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_loop, name=f"{self.name}-lock", daemon=True)
        self._renewer.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                current = self.store.read_json(self.key)
                if current.get("token") != self.record["token"]:
                    log.error("the %s lock %s was taken over; stopped renewing it", self.name, self.key)
                    return
                self.record = self._record(self.record["generation"])
                self.store.write_json(self.key, self.record)
            except FileNotFoundError:
                log.error(
                    "the %s lock %s was removed by another process; stopped renewing it", self.name, self.key
                )
                return
            except Exception:  # a transient store error: the next renewal tries again
                log.warning("could not renew the %s lock %s", self.name, self.key, exc_info=True)

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=30)
            self._renewer = None
        if self.key is None:
            return
        try:
            if self.store.read_json(self.key).get("token") == self.record["token"]:
                self.store.delete(self.key)
        except FileNotFoundError:
            pass
        log.info("released the %s lock on %s", self.name, self.store.url)
        self.key = None
        self.record = {}

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
