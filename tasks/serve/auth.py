"""Who a client is and what it may do: bearer tokens with scopes, hashed at rest, and rate limits.

A token is configured by its SHA-256 only (``serving.tokens``, ``serving.tokens_file``; ``vigil
serve-token`` mints one), so a leaked settings file or environment dump grants nothing. A request's
token is hashed and compared with every configured hash in constant time. ``VIGIL_ADMIN_TOKEN`` is the
token ``admin`` with the scope ``reload`` (the deploy step's reload). A client without a token has
``serving.anonymous_scopes``; a token adds its scopes to those. The tokens file is re-read when it
changes, so a token is rotated by adding the new hash, moving clients over and removing the old one,
without a restart; a file that does not parse grants nothing until it is fixed (fail closed).

Rate limits are token buckets per client: the token's name, else the client address.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from tasks.serve.errors import ApiError, busy
from tasks.settings import ApiToken, ConfigError, RateLimit, Section, Settings, load_yaml

log = logging.getLogger("vigil.serve")

ADMIN_TOKEN_NAME = "admin"
MAX_TRACKED_CLIENTS = 10_000  # rate-limit buckets kept; the least recently seen client is forgotten


class TokenFile(Section):
    """The tokens file: ``tokens: [{name, sha256, scopes}, ...]``."""

    tokens: tuple[ApiToken, ...] = ()


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(name: str, scopes: list[str]) -> tuple[str, ApiToken]:
    """A fresh random token and its configuration entry (only the entry is stored)."""
    token = "vgl_" + secrets.token_urlsafe(32)
    return token, ApiToken(name=name, sha256=token_sha256(token), scopes=frozenset(scopes))


@dataclass(frozen=True)
class Client:
    """The caller of one request: ``key`` names it in rate limits and claims."""

    key: str  # "token:<name>" or "ip:<address>"
    token: str | None  # the token's name, None for an anonymous client
    scopes: frozenset[str]

    def can(self, scope: str) -> bool:
        return scope in self.scopes


class Tokens:
    """The configured tokens: settings, the admin token and the tokens file (re-read when it changes)."""

    def __init__(self, settings: Settings) -> None:
        serving = settings.serving
        self.anonymous = frozenset(serving.anonymous_scopes)
        fixed = list(serving.tokens)
        if settings.admin_token is not None and settings.admin_token.get_secret_value():
            fixed.append(
                ApiToken(
                    name=ADMIN_TOKEN_NAME,
                    sha256=token_sha256(settings.admin_token.get_secret_value()),
                    scopes=frozenset({"reload"}),
                )
            )
        self.fixed = tuple(fixed)
        self.file: Path | None = serving.tokens_file
        self._from_file: tuple[ApiToken, ...] = ()
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()
        if self.file is not None:
            load_yaml(self.file, TokenFile)  # a broken file at start is a configuration error
        self.entries()

    def entries(self) -> tuple[ApiToken, ...]:
        return self.fixed + self._file_tokens()

    def _file_tokens(self) -> tuple[ApiToken, ...]:
        if self.file is None:
            return ()
        try:
            stat = os.stat(self.file)
            stamp = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._from_file = load_yaml(self.file, TokenFile).tokens if stamp else ()
                except ConfigError as exc:
                    log.error("tokens file rejected, its tokens are refused until it is fixed: %s", exc)
                    self._from_file = ()
                else:
                    log.info("tokens file %s: %d tokens", self.file, len(self._from_file))
            return self._from_file

    def has_scope(self, scope: str) -> bool:
        return scope in self.anonymous or any(scope in entry.scopes for entry in self.entries())

    def identify(self, authorization: str | None, address: str | None) -> Client:
        """The client of a request; 401 for a malformed or unknown bearer token (never silently anonymous)."""
        if not authorization:
            return Client(f"ip:{address or 'unknown'}", None, self.anonymous)
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(401, "unauthorized", "the Authorization header must be 'Bearer <token>'")
        digest = token_sha256(given.strip())
        match = None
        for entry in self.entries():  # every entry is compared: the time does not tell which matched
            if hmac.compare_digest(entry.sha256, digest) and match is None:
                match = entry
        if match is None:
            raise ApiError(401, "unauthorized", "the bearer token is not a known token")
        return Client(f"token:{match.name}", match.name, frozenset(match.scopes) | self.anonymous)

    def require(self, client: Client, scope: str, what: str) -> None:
        """403/401 unless ``client`` has ``scope``."""
        if client.can(scope):
            return
        if client.token is None:
            raise ApiError(401, "unauthorized", f"{what} needs a bearer token with the scope {scope!r}")
        raise ApiError(403, "forbidden", f"token {client.token!r} lacks the scope {scope!r} ({what})")


class RateLimiter:
    """Token buckets per client key; :meth:`take` raises 429 with Retry-After when a bucket is empty."""

    def __init__(self, name: str, limit: RateLimit | None) -> None:
        self.name, self.limit = name, limit
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str) -> None:
        """Spend one token of ``key``'s bucket; 429 when none is left."""
        self._spend(key, 1.0, check=True)

    def charge(self, key: str, cost: float) -> None:
        """Spend ``cost`` more without refusing (the bucket may go into debt, which later requests repay)."""
        self._spend(key, cost, check=False)

    def _spend(self, key: str, cost: float, check: bool) -> None:
        limit = self.limit
        if limit is None or cost <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.pop(key, (float(limit.burst), now))
            tokens = min(float(limit.burst), tokens + (now - at) * limit.per_s)
            if check and tokens < 1:
                self._buckets[key] = (tokens, now)
                raise busy(
                    "rate_limited",
                    f"too many {self.name} requests from this client (serving.rate_limits.{self.name}: "
                    f"{limit.per_s:g}/s, burst {limit.burst})",
                    (1 - tokens) / limit.per_s,
                    status=429,
                )
            self._buckets[key] = (tokens - cost, now)
            while len(self._buckets) > MAX_TRACKED_CLIENTS:
                self._buckets.popitem(last=False)
