"""A small client of Airflow 3's REST API (``/api/v2``), for driving runs the way a user would.

``make demo`` triggers and follows DAG runs through it, so every run is visible in the Airflow UI.

A busy machine makes an API server answer 5xx now and then, or drop a connection; every call is
therefore retried with backoff (1, 2, 4, 8, 16, 16 s: about 47 s in all) when repeating it cannot do
anything twice: reads, PATCH/PUT/DELETE, the login, and a trigger, which carries its own
``dag_run_id`` so that a repeated POST finds the run already there (409) instead of creating another.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests

TERMINAL_STATES = {"success", "failed"}
RETRY_STATUS = frozenset({500, 502, 503, 504})
TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)

log = logging.getLogger(__name__)


class AirflowError(RuntimeError):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass
class AirflowClient:
    base_url: str
    username: str
    password: str
    timeout: float = 30.0
    retries: int = 6
    backoff_s: float = 1.0
    max_backoff_s: float = 16.0
    _session: requests.Session = field(default_factory=requests.Session, repr=False)

    def _login(self) -> None:
        resp = self._send(
            "POST",
            f"{self.base_url}/auth/token",
            retry=True,  # a second token is harmless
            json={"username": self.username, "password": self.password},
        )
        if resp.status_code >= 400:
            raise AirflowError(
                f"Airflow login failed ({resp.status_code}): {resp.text[:200]}", resp.status_code
            )
        self._session.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"

    def _send(self, method: str, url: str, *, retry: bool, **kwargs: Any) -> requests.Response:
        """One logical request; with ``retry``, repeated on connection errors, timeouts and 5xx."""
        delay = self.backoff_s
        for attempt in range(1, self.retries + 2):
            last = not retry or attempt > self.retries
            try:
                resp = self._session.request(method, url, timeout=self.timeout, **kwargs)
            except TRANSIENT as exc:
                if last:
                    raise
                problem = type(exc).__name__
            else:
                if resp.status_code not in RETRY_STATUS or last:
                    return resp
                problem = f"{resp.status_code} {resp.text[:120]}"
            log.warning(
                "Airflow: %s %s -> %s; retry %d/%d in %.3g s",
                method,
                url.removeprefix(self.base_url),
                problem,
                attempt,
                self.retries,
                delay,
            )
            time.sleep(delay)
            delay = min(delay * 2, self.max_backoff_s)
        raise AssertionError("unreachable")

    def request(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...] = (),
        idempotent: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call ``/api/v2{path}``; the parsed JSON answer.

        ``idempotent``: whether repeating the call is harmless (default: every method but POST).
        ``ok``: error statuses the caller handles itself (e.g. 409), returned as ``(status, body)``.
        """
        return self._call(
            method, f"{self.base_url}/api/v2{path}", path, ok=ok, idempotent=idempotent, **kwargs
        )

    def vigil(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the Vigil UI plugin's JSON API, ``/vigil{path}`` (e.g. ``/api/review/queue``), as this user."""
        return self._call(method, f"{self.base_url}/vigil{path}", f"/vigil{path}", **kwargs)

    def _call(
        self,
        method: str,
        url: str,
        path: str,
        *,
        ok: tuple[int, ...] = (),
        idempotent: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        retry = method != "POST" if idempotent is None else idempotent
        if "Authorization" not in self._session.headers:
            self._login()
        resp = self._send(method, url, retry=retry, **kwargs)
        if resp.status_code == 401:  # token expired
            self._login()
            resp = self._send(method, url, retry=retry, **kwargs)
        if resp.status_code in ok:
            return resp.status_code, (resp.json() if resp.content else None)
        if resp.status_code >= 400:
            raise AirflowError(f"{method} {path} -> {resp.status_code}: {resp.text[:300]}", resp.status_code)
        return resp.json() if resp.content else None

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 180.0) -> None:
        """Wait until the dag processor has parsed every DAG; report import errors if it never does."""
        deadline = time.monotonic() + timeout
        missing = set(dag_ids)
        while time.monotonic() < deadline:
            known = {d["dag_id"] for d in self.request("GET", "/dags", params={"limit": 1000})["dags"]}
            missing = set(dag_ids) - known
            if not missing:
                return
            time.sleep(2)
        errors = self.request("GET", "/importErrors").get("import_errors", [])
        details = (
            "; ".join(f"{e['filename']}: {e['stack_trace'][-300:]}" for e in errors) or "no import errors"
        )
        raise AirflowError(f"DAGs {sorted(missing)} not parsed after {timeout:.0f}s ({details})")

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(
        self, dag_id: str, conf: dict | None = None, note: str | None = None, run_id: str | None = None
    ) -> str:
        """Trigger a run under our own id (default ``manual__<time>_<random>``); returns the id.

        Safe to retry: when an attempt's answer was lost or a 500, the next one gets 409 for the run the
        first created, which is the run we asked for.
        """
        run_id = run_id or f"manual__{datetime.now(UTC):%Y-%m-%dT%H:%M:%S}_{uuid.uuid4().hex[:8]}"
        body: dict[str, Any] = {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}}
        if note:
            body["note"] = note
        answer = self.request("POST", f"/dags/{dag_id}/dagRuns", json=body, idempotent=True, ok=(409,))
        if isinstance(answer, tuple):  # already there: make sure it is visible
            return self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["dag_run_id"]
        return answer["dag_run_id"]

    def runs(self, dag_id: str, after: datetime | None = None) -> list[dict]:
        """Runs of a DAG, oldest first, optionally only those queued after ``after``."""
        params: dict[str, Any] = {"limit": 100, "order_by": "run_after"}
        if after is not None:
            params["run_after_gte"] = after.isoformat()
        return self.request("GET", f"/dags/{dag_id}/dagRuns", params=params)["dag_runs"]

    def wait_for_run(
        self, dag_id: str, run_id: str | None = None, after: datetime | None = None, timeout: float = 600.0
    ) -> dict:
        """Wait for a run (by id, or the first one queued after ``after``) to finish; returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if run_id:
                run = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            else:
                found = self.runs(dag_id, after=after)
                run = found[0] if found else None
            if run and run["state"] in TERMINAL_STATES:
                return run
            time.sleep(2)
        raise AirflowError(
            f"{dag_id} run {run_id or '(asset-triggered)'} did not finish within {timeout:.0f}s"
        )

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        entry = self.request(
            "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        )
        return entry.get("value")

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> list[str]:
        """One try's log as plain lines (Airflow 3 serves structured entries; errors keep their detail)."""
        entries = self.request(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true"},
        )["content"]
        lines = []
        for entry in entries:
            if not isinstance(entry, dict):
                lines.append(str(entry))
                continue
            lines.append(f"{entry.get('level', '')} {entry.get('event', '')}".strip())
            for detail in entry.get("error_detail") or []:
                if isinstance(detail, dict):
                    lines.append(f"  {detail.get('exc_type', '')}: {detail.get('exc_value', '')}")
        return lines
