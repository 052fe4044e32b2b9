"""tasks.net: the safe fetcher refuses internal addresses (also after redirects), caps sizes, retries."""

from __future__ import annotations

import ipaddress
import itertools
import time

import pytest

from tasks import net
from tasks.settings import DownloadSettings

LOOPBACK = DownloadSettings(allow_private_networks=True, politeness_delay_s=0, backoff_s=0.05, timeout_s=5)
PUBLIC_ONLY = DownloadSettings(politeness_delay_s=0, backoff_s=0.05, timeout_s=5)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100


def test_fetch_returns_body_type_and_sends_user_agent(http_server):
    http_server.route("/a.png", (200, {"Content-Type": "image/png"}, PNG))
    got = net.fetch(f"{http_server.url}/a.png", LOOPBACK)
    assert got.data == PNG and got.content_type == "image/png" and got.status == 200
    assert http_server.requests[0].headers["user-agent"] == LOOPBACK.user_agent
    assert http_server.requests[0].headers["accept"] == "image/*"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("100.64.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("::1", "loopback"),
        ("fc00::1", "private"),
        ("fe80::1", "link-local"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("2002:a00:1::", "private"),
        ("64:ff9b::a9fe:a9fe", "link-local"),
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
    ],
)
def test_blocked_reason_classifies_addresses(address, reason):
    assert net.blocked_reason(ipaddress.ip_address(address)) == reason


def test_private_networks_allowed_only_when_asked():
    assert net.blocked_reason(ipaddress.ip_address("10.0.0.1"), allow_private=True) is None
    assert net.blocked_reason(ipaddress.ip_address("::ffff:127.0.0.1"), allow_private=True) is None
    # The metadata service and friends stay refused even then.
    assert net.blocked_reason(ipaddress.ip_address("169.254.169.254"), allow_private=True) == "link-local"
    assert net.blocked_reason(ipaddress.ip_address("0.0.0.0"), allow_private=True) == "unspecified"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x.png",
        "http://10.0.0.1/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x.png",
        "http://[::ffff:127.0.0.1]/x.png",
        "http://[::ffff:10.0.0.1]/x.png",
        "http://localhost/x.png",
        "https://0.0.0.0/x.png",
    ],
)
def test_internal_urls_are_refused(url):
    with pytest.raises(net.BlockedAddress) as info:
        net.fetch(url, PUBLIC_ONLY)
    assert info.value.reason == "blocked_address" and info.value.http_status == 400
    assert "address" in str(info.value)


def test_loopback_fixture_is_refused_without_any_request(http_server):
    http_server.route("/a.png", (200, {}, PNG))
    with pytest.raises(net.BlockedAddress, match="loopback"):
        net.fetch(f"{http_server.url}/a.png", PUBLIC_ONLY)
    assert http_server.requests == []


def test_connection_level_check_catches_what_resolution_did_not(http_server):
    """The socket's peer is checked too: a session used without fetch()'s host check still refuses."""
    http_server.route("/a.png", (200, {}, PNG))
    with pytest.raises(net.BlockedAddress, match="connected to a loopback address"):
        net.new_session(PUBLIC_ONLY).get(f"{http_server.url}/a.png", timeout=5)
    assert http_server.requests == []


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::ffff:169.254.169.254]/latest/meta-data/", "link-local"),
        ("http://0.0.0.0:{port}/a.png", "unspecified"),
        ("file:///etc/passwd", "only http and https"),
    ],
)
def test_every_redirect_hop_is_checked(http_server, target, error):
    """The first hop (a loopback fixture) is allowed here; the redirect target is not."""
    port = http_server.httpd.server_address[1]
    http_server.route("/r", (302, {"Location": target.format(port=port)}, b""))
    with pytest.raises(net.FetchError, match=error):
        net.fetch(f"{http_server.url}/r", LOOPBACK)
    assert len(http_server.requests) == 1


def test_redirects_are_followed_and_bounded(http_server):
    http_server.route("/a.png", (200, {"Content-Type": "image/png"}, PNG))
    http_server.route("/r1", (301, {"Location": "/r2"}, b""))
    http_server.route("/r2", (302, {"Location": f"{http_server.url}/a.png"}, b""))
    got = net.fetch(f"{http_server.url}/r1", LOOPBACK)
    assert got.data == PNG and got.final_url == f"{http_server.url}/a.png"
    assert got.redirects == (f"{http_server.url}/r1", f"{http_server.url}/r2")

    http_server.route("/loop", (302, {"Location": "/loop"}, b""))
    with pytest.raises(net.FetchError) as info:
        net.fetch(f"{http_server.url}/loop", LOOPBACK)
    assert info.value.reason == "too_many_redirects"
    assert len(http_server.hits("/loop")) == net.MAX_REDIRECTS + 1


def test_declared_size_over_the_cap_is_refused_before_reading(http_server):
    http_server.route("/big", (200, {"Content-Length": "5000"}, b"x" * 5000))
    with pytest.raises(net.TooLarge, match="5,000 bytes exceeds the limit of 1,000") as info:
        net.fetch(f"{http_server.url}/big", LOOPBACK.model_copy(update={"max_bytes": 1000}))
    assert info.value.reason == "too_large" and info.value.http_status == 413


def test_undeclared_size_is_counted_while_streaming(http_server):
    # No Content-Length: the body runs until the server closes the connection.
    http_server.route("/big", (200, {"Connection": "close"}, b"x" * 200_000))
    with pytest.raises(net.TooLarge, match="exceeds the limit of 100,000"):
        net.fetch(f"{http_server.url}/big", LOOPBACK.model_copy(update={"max_bytes": 100_000}))
    http_server.route("/small", (200, {"Connection": "close"}, b"y" * 5000))
    assert net.fetch(f"{http_server.url}/small", LOOPBACK).data == b"y" * 5000


def test_timeouts_are_retried_then_reported(http_server):
    def slow(req):
        time.sleep(1.0)
        return 200, {}, PNG

    http_server.route("/slow", slow)
    limits = LOOPBACK.model_copy(update={"timeout_s": 0.3, "retries": 1})
    with pytest.raises(net.FetchError) as info:
        net.fetch(f"{http_server.url}/slow", limits)
    assert info.value.reason == "timeout" and info.value.http_status == 504
    assert len(http_server.hits("/slow")) == 2


def test_server_errors_are_retried_with_backoff(http_server):
    replies = iter([(503, {}, b"busy"), (500, {}, b"oops"), (200, {}, PNG)])
    http_server.route("/flaky", lambda req: next(replies))
    assert net.fetch(f"{http_server.url}/flaky", LOOPBACK).data == PNG
    hits = http_server.hits("/flaky")
    assert len(hits) == 3
    # backoff_s=0.05 doubles: at least 0.05 s then 0.1 s between attempts.
    assert hits[1].at - hits[0].at >= 0.05 and hits[2].at - hits[1].at >= 0.1


def test_retry_after_is_honoured(http_server):
    replies = iter([(429, {"Retry-After": "1"}, b"slow down"), (200, {}, PNG)])
    http_server.route("/limited", lambda req: next(replies))
    assert net.fetch(f"{http_server.url}/limited", LOOPBACK).data == PNG
    first, second = http_server.hits("/limited")
    assert second.at - first.at >= 0.95


def test_a_wait_longer_than_allowed_fails_at_once(http_server):
    http_server.route("/limited", (429, {"Retry-After": "3600"}, b""))
    with pytest.raises(net.FetchError, match="asks to wait 3600s") as info:
        net.fetch(f"{http_server.url}/limited", LOOPBACK)
    assert info.value.reason == "rate_limited" and info.value.status == 429
    assert len(http_server.hits("/limited")) == 1


def test_client_errors_are_not_retried(http_server):
    with pytest.raises(net.FetchError, match="HTTP 404") as info:
        net.fetch(f"{http_server.url}/missing", LOOPBACK)
    assert info.value.reason == "http_status" and info.value.status == 404
    assert len(http_server.requests) == 1


def test_politeness_delay_spaces_requests_to_one_host(http_server):
    http_server.route("/a.png", (200, {}, PNG))
    limits = LOOPBACK.model_copy(update={"politeness_delay_s": 0.3})
    session = net.new_session(limits)
    for _ in range(3):
        net.fetch(f"{http_server.url}/a.png", limits, session=session)
    times = [r.at for r in http_server.requests]
    assert all(b - a >= 0.29 for a, b in itertools.pairwise(times))


def test_invalid_urls_say_what_is_accepted():
    for url in ("ftp://example.com/a.png", "file:///etc/passwd", "http:///nohost"):
        with pytest.raises(net.FetchError, match="only http and https|has no host") as info:
            net.fetch(url, PUBLIC_ONLY)
        assert info.value.reason == "invalid_url"


def test_session_must_match_the_limits():
    with pytest.raises(ValueError, match="same limits"):
        net.fetch("http://example.com/", PUBLIC_ONLY, session=net.new_session(LOOPBACK))


def test_server_wait_seconds_reads_the_usual_headers():
    now = 1_700_000_000.0
    assert net.server_wait_seconds({"Retry-After": "7"}, now) == 7
    assert net.server_wait_seconds({"x-rate-limit-reset": str(int(now) + 30)}, now) == 30
    assert net.server_wait_seconds({"X-RateLimit-Reset": "2023-11-14T22:13:50Z"}, now) == pytest.approx(30)
    assert net.server_wait_seconds({}, now) is None


@pytest.mark.parametrize("phase", ["body", "headers"])
def test_a_deadline_bounds_a_slow_drip_in_every_phase(phase):
    """One byte every 0.2 s never trips a 5 s read timeout; the 1 s deadline of the whole fetch does."""
    from tests.helpers.serve import DripServer

    drip = DripServer(phase=phase, size=200, interval=0.2)
    try:
        with pytest.raises(net.FetchError, match="not fetched within 1s") as info:
            net.fetch(drip.url + "/slow.png", LOOPBACK.model_copy(update={"retries": 0}), deadline_s=1)
        assert info.value.reason == "timeout" and info.value.http_status == 504
        assert drip.sent < 200  # cut off, not read to the end
    finally:
        drip.close()


def test_the_deadline_spans_redirects_and_retries(http_server):
    def slow_redirect(req):
        time.sleep(0.4)
        return 302, {"Location": "/hop"}, b""

    http_server.route("/hop", slow_redirect)
    with pytest.raises(net.FetchError, match="not fetched within 1s") as info:
        net.fetch(f"{http_server.url}/hop", LOOPBACK, deadline_s=1)
    assert info.value.reason == "timeout"
    assert len(http_server.hits("/hop")) < net.MAX_REDIRECTS + 1  # stopped before the redirect limit

    http_server.route("/busy", (503, {"Retry-After": "5"}, b""))
    with pytest.raises(net.FetchError) as info:  # a retry wait longer than the budget is not waited
        net.fetch(f"{http_server.url}/busy", LOOPBACK, deadline_s=1)
    assert info.value.reason == "http_status" and len(http_server.hits("/busy")) == 1


def test_a_fetch_within_its_deadline_is_unchanged(http_server):
    http_server.route("/a.png", (200, {"Content-Type": "image/png"}, PNG))
    assert net.fetch(f"{http_server.url}/a.png", LOOPBACK, deadline_s=5).data == PNG
