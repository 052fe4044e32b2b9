"""A small client of Airflow 3's REST API (``/api/v2``), for driving runs the way a user would.

``make demo`` triggers and follows DAG runs through it, so every run is visible in the Airflow UI.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import requests

TERMINAL_STATES = {"success", "failed"}


class AirflowError(RuntimeError):
    pass


@dataclass
class AirflowClient:
    base_url: str
    username: str
    password: str
    timeout: float = 30.0
    _session: requests.Session = field(default_factory=requests.Session, repr=False)

    def _login(self) -> None:
        resp = self._session.post(
            f"{self.base_url}/auth/token",
            json={"username": self.username, "password": self.password},
            timeout=self.timeout,
        )
        if resp.status_code >= 400:
            raise AirflowError(f"Airflow login failed ({resp.status_code}): {resp.text[:200]}")
        self._session.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        if "Authorization" not in self._session.headers:
            self._login()
        resp = self._session.request(method, f"{self.base_url}/api/v2{path}", timeout=self.timeout, **kwargs)
        if resp.status_code == 401:  # token expired
            self._login()
            resp = self._session.request(
                method, f"{self.base_url}/api/v2{path}", timeout=self.timeout, **kwargs
            )
        if resp.status_code >= 400:
            raise AirflowError(f"{method} {path} -> {resp.status_code}: {resp.text[:300]}")
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

    def trigger(self, dag_id: str, conf: dict | None = None, note: str | None = None) -> str:
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if note:
            body["note"] = note
        return self.request("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

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
