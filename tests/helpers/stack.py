"""Looking at a running embedded stack from outside, the way an operator would: its processes, their
environment and listening sockets (from /proc), and a loopback proxy that breaks chosen requests.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}


# -- processes ---------------------------------------------------------------------------------------


def group_pids(group: int) -> list[int]:
    """Live processes of a process group (a service's leader and everything it forked)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == group and fields[0] != "Z":
                pids.append(int(entry))
    return pids


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def children(pid: int) -> list[int]:
    """``pid`` and all its descendants (PostgreSQL's backends leave the postmaster's process group)."""
    parent_of: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parent_of.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parent_of.get(current, []))
    return found


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def tcp_listeners(pids: list[int]) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket (IPv4 and IPv6) that one of ``pids`` holds."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(int(link[8:-1]))
        except OSError:
            continue
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                address, port = local.split(":")
                raw = bytes.fromhex(address)
                # /proc prints each 32-bit word in host (little-endian) order
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.add((str(ipaddress.ip_address(raw)), int(port, 16)))
    return found


# -- a proxy that breaks chosen requests --------------------------------------------------------------


@dataclass
class Exchange:
    method: str
    path: str
    forwarded: bool
    status: int | None  # what the client got; None: the connection was dropped


@dataclass
class FlakyProxy:
    """A loopback HTTP proxy in front of ``upstream`` that forwards every request, except that the next
    requests matching a :meth:`fail` plan get its faults, in order:

    - ``"500-after"``: forwarded (the server does the work), then the client gets 500 instead of the answer;
    - ``"500-before"``: not forwarded, the client gets 500;
    - ``"drop"``: not forwarded, the connection is closed without an answer.
    """

    upstream: str
    exchanges: list[Exchange] = field(default_factory=list)
    _plans: list[tuple[str, str, list[str]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.split("?", 1)[0]
                fault = proxy._take_fault(self.command, path)
                if fault == "drop":
                    proxy.exchanges.append(Exchange(self.command, path, False, None))
                    self.close_connection = True
                    return
                if fault == "500-before":
                    proxy.exchanges.append(Exchange(self.command, path, False, 500))
                    self._answer(500, {"Content-Type": "application/json"}, b'{"detail": "proxy: 500"}')
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream = requests.request(
                    self.command, proxy.upstream + self.path, headers=headers, data=body, timeout=120
                )
                if fault == "500-after":
                    proxy.exchanges.append(Exchange(self.command, path, True, 500))
                    self._answer(500, {"Content-Type": "application/json"}, b'{"detail": "proxy: 500"}')
                    return
                proxy.exchanges.append(Exchange(self.command, path, True, upstream.status_code))
                kept = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
                self._answer(upstream.status_code, kept, upstream.content)

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def fail(self, method: str, path: str, *faults: str) -> None:
        with self._lock:
            self._plans.append((method, path, list(faults)))

    def _take_fault(self, method: str, path: str) -> str | None:
        with self._lock:
            for planned_method, planned_path, faults in self._plans:
                if planned_method == method and planned_path == path and faults:
                    return faults.pop(0)
        return None

    def seen(self, method: str, path: str) -> list[Exchange]:
        return [e for e in self.exchanges if e.method == method and e.path == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
