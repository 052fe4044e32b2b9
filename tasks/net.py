"""The one safe URL fetcher: collectors use it for media and API pages, the serving API for URL input.

A URL given by someone else must not reach into our own network (SSRF). :func:`fetch` therefore

* accepts ``http`` and ``https`` only, and follows redirects itself (at most ``MAX_REDIRECTS``),
  checking every hop like the first;
* resolves the host and refuses it when any of its addresses is private, loopback, link-local,
  multicast, reserved or unspecified (IPv4, IPv6, and IPv4 addresses embedded in IPv6:
  ``::ffff:10.0.0.1``, 6to4, NAT64);
* checks the address of the socket it actually connected to, before sending a byte. This closes
  DNS rebinding (a name that resolves to a public address for the check and to a private one for
  the connection) without pinning: whatever the resolver says, the peer is what gets checked.
  Environment proxies are ignored for the same reason (through a proxy the peer is the proxy).

``DownloadSettings.allow_private_networks`` lifts the private and loopback refusal (tests and
closed networks). Link-local (``169.254.169.254`` is the cloud metadata service), multicast,
reserved and unspecified addresses stay refused even then: no image lives there.

Bodies are streamed with a size cap (``Content-Length`` first, then the bytes counted), connect and
read timeouts apply, and ``deadline_s`` bounds the whole fetch: connect, headers, every read, every
redirect and retry. A per-read timeout alone does not: a server that drips one byte a second never
trips it. At the deadline a watchdog shuts the sockets of the fetch down, which wakes any blocked read
in any phase. Timeouts / 429 / 5xx are retried with exponential backoff honouring
``Retry-After`` (and the ``x-rate-limit-reset`` headers of X and Mastodon), and requests to one host
are spaced by a politeness delay. Failures raise :class:`FetchError` with a stable ``reason`` code.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

if TYPE_CHECKING:
    from tasks.settings import DownloadSettings

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_CHUNK = 64 * 1024
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# -- errors ---------------------------------------------------------------------------------------


class FetchError(Exception):
    """A URL could not be fetched. ``reason`` is a stable code; ``str(error)`` says what happened.

    Reasons: ``invalid_url``, ``blocked_address``, ``dns_failure``, ``too_large``, ``timeout``,
    ``connection_failed``, ``http_status``, ``rate_limited``, ``too_many_redirects``.
    ``http_status`` is the status an API should answer with when it passes the error on.
    """

    HTTP_STATUS: ClassVar[dict[str, int]] = {
        "invalid_url": 400,
        "blocked_address": 400,
        "dns_failure": 400,
        "too_large": 413,
        "timeout": 504,
        "rate_limited": 503,
    }

    def __init__(
        self, reason: str, message: str, *, url: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.url = url
        self.status = status  # the remote server's HTTP status, when there was one

    @property
    def http_status(self) -> int:
        return self.HTTP_STATUS.get(self.reason, 502)

    def to_dict(self) -> dict[str, object]:
        return {"reason": self.reason, "message": str(self), "url": self.url, "status": self.status}


class BlockedAddress(FetchError):
    """The URL's host is (or resolves to, or connected to) an address Vigil must not reach."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__("blocked_address", message, url=url)


class TooLarge(FetchError):
    """The body is larger than ``DownloadSettings.max_bytes``."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__("too_large", message, url=url)


# -- address policy ---------------------------------------------------------------------------------


def blocked_reason(ip: IPAddress, allow_private: bool = False) -> str | None:
    """Why Vigil must not connect to ``ip`` (e.g. ``"loopback"``), or None when it may."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
        if embedded is not None:
            return blocked_reason(embedded, allow_private)
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if ip.is_link_local:
        return "link-local"
    if ip.is_loopback:
        return None if allow_private else "loopback"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private or not ip.is_global:
        return None if allow_private else "private"
    return None


def _parse_ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 scope id (fe80::1%eth0)


def check_host(host: str, port: int, allow_private: bool, url: str | None = None) -> list[IPAddress]:
    """Resolve ``host`` and refuse it if any address is blocked; returns the addresses."""
    try:
        addresses = [_parse_ip(host.strip("[]"))]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise FetchError("dns_failure", f"cannot resolve host {host!r}: {exc}", url=url) from None
        addresses = list(dict.fromkeys(_parse_ip(info[4][0]) for info in infos))
    for ip in addresses:
        reason = blocked_reason(ip, allow_private)
        if reason:
            raise BlockedAddress(
                f"refused to fetch {url or host}: host {host!r} is a {reason} address ({ip})", url=url
            )
    return addresses


# -- a session whose connections check their peer ---------------------------------------------------


class Deadline:
    """The total time budget of one fetch. While active (``with``), every socket the fetch uses is watched:
    when the budget runs out they are shut down, so a read blocked in any phase returns at once."""

    _active = threading.local()

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        self._previous = getattr(Deadline._active, "current", None)
        Deadline._active.current = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        Deadline._active.current = self._previous

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    @property
    def spent(self) -> bool:
        """The budget is used up (the watchdog may not have fired yet: a socket timeout can be first)."""
        return self.expired or self.remaining() <= 0

    def timeout(self, per_operation: float) -> float:
        """The timeout of one connect or read: ``per_operation``, or less when the budget is nearly spent."""
        return max(0.001, min(per_operation, self.remaining()))

    @classmethod
    def watch(cls, sock: socket.socket) -> None:
        """Put ``sock`` under the active deadline of this thread (no-op without one)."""
        current = getattr(cls._active, "current", None)
        if current is None:
            return
        with current._lock:
            current._sockets.append(sock)
            if current.expired:
                _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the file descriptor, also under a TLS wrapper


class _PeerCheck:
    """Mixin for urllib3 connections: refuse a socket connected to a blocked address; put every socket
    under the fetch's :class:`Deadline`."""

    allow_private: ClassVar[bool] = False

    def _new_conn(self):  # type: ignore[no-untyped-def]
        sock = super()._new_conn()  # type: ignore[misc]
        Deadline.watch(sock)
        peer = sock.getpeername()[0]
        reason = blocked_reason(_parse_ip(peer), self.allow_private)
        if reason:
            sock.close()
            raise BlockedAddress(
                f"refused to talk to {self.host!r}: it connected to a {reason} address ({peer})"
            )
        return sock

    def getresponse(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.sock is not None:  # type: ignore[attr-defined]  # a kept-alive connection, reused
            Deadline.watch(self.sock)  # type: ignore[attr-defined]
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


@functools.lru_cache(maxsize=2)
def _pool_classes(allow_private: bool) -> dict[str, type]:
    attrs = {"allow_private": allow_private}
    http_conn = type("GuardedHTTPConnection", (_PeerCheck, HTTPConnection), attrs)
    https_conn = type("GuardedHTTPSConnection", (_PeerCheck, HTTPSConnection), attrs)
    return {
        "http": type("GuardedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
        "https": type("GuardedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
    }


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self.allow_private)


def new_session(limits: DownloadSettings) -> requests.Session:
    """A requests session for :func:`fetch`: peer-checked connections, no environment proxies."""
    session = requests.Session()
    session.trust_env = False
    for scheme in ("http://", "https://"):
        session.mount(scheme, _GuardedAdapter(limits.allow_private_networks))
    session.headers["User-Agent"] = limits.user_agent
    return session


# -- politeness ---------------------------------------------------------------------------------------


class HostThrottle:
    """Spaces requests to one host by at least ``delay`` seconds (thread-safe: slots are reserved)."""

    def __init__(self) -> None:
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, host: str, delay: float) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next.get(host, now))
            self._next[host] = start + delay
        if start > now:
            time.sleep(start - now)


_THROTTLE = HostThrottle()


# -- fetching -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetched:
    """A fetched body and where it finally came from."""

    data: bytes
    final_url: str
    content_type: str | None
    status: int
    headers: Mapping[str, str] = field(repr=False)
    redirects: tuple[str, ...] = ()


class _Retry(Exception):
    """A failure worth another attempt (timeouts, connection errors, 429, 5xx)."""

    def __init__(self, error: FetchError, wait_s: float | None = None) -> None:
        self.error = error
        self.wait_s = wait_s


def server_wait_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asks us to wait: ``Retry-After`` (seconds or HTTP date), else the
    ``x-rate-limit-reset`` header (epoch seconds, X; ISO 8601, Mastodon). None when absent."""
    now = time.time() if now is None else now
    value = headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - now)
            except (TypeError, ValueError):
                return None
    value = headers.get("x-rate-limit-reset") or headers.get("X-RateLimit-Reset")
    if value:
        try:
            return max(0.0, float(value) - now)
        except ValueError:
            try:
                when = datetime.fromisoformat(value.replace("Z", "+00:00"))
                return max(0.0, when.replace(tzinfo=when.tzinfo or UTC).timestamp() - now)
            except ValueError:
                return None
    return None


def fetch(
    url: str,
    limits: DownloadSettings,
    *,
    session: requests.Session | None = None,
    accept: str = "image/*",
    headers: Mapping[str, str] | None = None,
    deadline_s: float | None = None,
) -> Fetched:
    """GET ``url`` safely within ``limits``; raises :class:`FetchError` (with a ``reason``) on failure.

    Pass a session from :func:`new_session` (built with the same ``limits``) to reuse connections.
    ``deadline_s`` bounds the whole call (connect, headers, body, redirects, retries and their waits);
    past it the fetch fails with reason ``timeout``.
    """
    if session is None:
        with new_session(limits) as own:
            return fetch(url, limits, session=own, accept=accept, headers=headers, deadline_s=deadline_s)
    adapter = session.get_adapter("http://x")
    if not isinstance(adapter, _GuardedAdapter) or adapter.allow_private != limits.allow_private_networks:
        raise ValueError("fetch() needs a session from tasks.net.new_session() built with the same limits")
    request_headers = {"Accept": accept, **(headers or {})}
    if deadline_s is None:
        return _attempts(url, limits, session, request_headers, None)
    with Deadline(deadline_s) as deadline:
        try:
            fetched = _attempts(url, limits, session, request_headers, deadline)
        except FetchError:
            if deadline.spent:
                raise _deadline_error(url, deadline) from None
            raise
        if deadline.spent:  # a body cut short by the watchdog is not a body
            raise _deadline_error(url, deadline)
        return fetched


def _deadline_error(url: str, deadline: Deadline) -> FetchError:
    return FetchError("timeout", f"{url}: not fetched within {deadline.seconds:g}s", url=url)


def _attempts(
    url: str,
    limits: DownloadSettings,
    session: requests.Session,
    headers: dict[str, str],
    deadline: Deadline | None,
) -> Fetched:
    for attempt in range(limits.retries + 1):
        try:
            return _follow(url, limits, session, headers, deadline)
        except _Retry as retry:
            if attempt == limits.retries:
                raise retry.error from None
            wait = retry.wait_s if retry.wait_s is not None else limits.backoff_s * 2**attempt
            if deadline is not None and wait >= deadline.remaining():
                raise retry.error from None
            if wait > limits.max_wait_s:
                raise FetchError(
                    "rate_limited",
                    f"{retry.error}; the server asks to wait {wait:.0f}s, more than "
                    f"download.max_wait_s={limits.max_wait_s:.0f}s",
                    url=url,
                    status=retry.error.status,
                ) from None
            log.info("%s; retry %d of %d in %.1fs", retry.error, attempt + 1, limits.retries, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def _follow(
    url: str,
    limits: DownloadSettings,
    session: requests.Session,
    headers: dict[str, str],
    deadline: Deadline | None = None,
) -> Fetched:
    """One attempt: request, following redirects by hand so that every hop is checked."""
    redirects: list[str] = []
    while True:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise FetchError(
                "invalid_url", f"refused to fetch {url!r}: only http and https URLs are accepted", url=url
            )
        if not parts.hostname:
            raise FetchError("invalid_url", f"refused to fetch {url!r}: the URL has no host", url=url)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise FetchError("invalid_url", f"refused to fetch {url!r}: invalid port", url=url) from None
        check_host(parts.hostname, port, limits.allow_private_networks, url)
        _THROTTLE.wait(parts.hostname, limits.politeness_delay_s)
        response = _get(session, url, headers, limits, deadline)
        with response:
            if response.is_redirect:
                location = response.headers.get("Location", "")
                if len(redirects) >= MAX_REDIRECTS:
                    raise FetchError(
                        "too_many_redirects", f"{url}: more than {MAX_REDIRECTS} redirects", url=url
                    )
                redirects.append(url)
                url = urljoin(url, location)
                continue
            if response.status_code in RETRY_STATUSES:
                error = FetchError(
                    "http_status",
                    f"{url}: HTTP {response.status_code} {response.reason}",
                    url=url,
                    status=response.status_code,
                )
                raise _Retry(error, server_wait_seconds(response.headers))
            if not 200 <= response.status_code < 300:
                raise FetchError(
                    "http_status",
                    f"{url}: HTTP {response.status_code} {response.reason}",
                    url=url,
                    status=response.status_code,
                )
            data = _read_capped(response, url, limits)
            return Fetched(
                data,
                url,
                response.headers.get("Content-Type"),
                response.status_code,
                response.headers,
                tuple(redirects),
            )


def _get(
    session: requests.Session,
    url: str,
    headers: dict[str, str],
    limits: DownloadSettings,
    deadline: Deadline | None = None,
) -> requests.Response:
    timeout = deadline.timeout(limits.timeout_s) if deadline else limits.timeout_s
    try:
        return session.get(
            url, headers=headers, stream=True, allow_redirects=False, timeout=(timeout, timeout)
        )
    except requests.Timeout:
        raise _Retry(
            FetchError("timeout", f"{url}: no answer within {limits.timeout_s:g}s", url=url)
        ) from None
    except requests.ConnectionError as exc:
        raise _Retry(
            FetchError("connection_failed", f"{url}: connection failed ({_root_cause(exc)})", url=url)
        ) from None
    except requests.RequestException as exc:
        raise FetchError("invalid_url", f"refused to fetch {url!r}: {exc}", url=url) from None


def _read_capped(response: requests.Response, url: str, limits: DownloadSettings) -> bytes:
    """The body, refusing more than ``max_bytes`` and more than ``timeout_s`` spent reading it."""
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limits.max_bytes:
        raise TooLarge(
            f"{url}: body of {int(declared):,} bytes exceeds the limit of {limits.max_bytes:,} bytes", url=url
        )
    deadline = time.monotonic() + limits.timeout_s
    chunks, total = [], 0
    try:
        for chunk in response.iter_content(_CHUNK):
            total += len(chunk)
            if total > limits.max_bytes:
                raise TooLarge(f"{url}: body exceeds the limit of {limits.max_bytes:,} bytes", url=url)
            if time.monotonic() > deadline:
                raise _Retry(
                    FetchError("timeout", f"{url}: body not received within {limits.timeout_s:g}s", url=url)
                )
            chunks.append(chunk)
    except requests.RequestException as exc:
        raise _Retry(
            FetchError(
                "timeout" if "timed out" in str(exc).lower() else "connection_failed",
                f"{url}: reading the body failed ({_root_cause(exc)})",
                url=url,
            )
        ) from None
    return b"".join(chunks)


def _root_cause(exc: BaseException) -> str:
    for _ in range(10):
        if exc.__cause__ is None and exc.__context__ is None:
            break
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return f"{type(exc).__name__}: {exc}"
