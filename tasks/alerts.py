"""Deadline alerts of the Vigil DAGs (Airflow 3's replacement of SLAs): what happens when one is missed.

Airflow marks the run "Deadline missed" in its UI (the run's header and Browse → Deadlines) by itself;
:func:`deadline_missed` is the alert's callback and says in the triggerer's log which run is late, by
how much, and where to look. It runs in the triggerer (an ``AsyncCallback``), which imports it by its
dotted path: it must live in an importable package, not in a DAG file, and import nothing heavy.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("vigil.alerts")


def duration_text(minutes: float) -> str:
    """480 -> "8 h", 90 -> "1 h 30 min", 20 -> "20 min", 0.05 -> "3 s"."""
    if minutes < 1:
        return f"{minutes * 60:.3g} s"
    hours, rest = divmod(round(minutes), 60)
    return " ".join(part for part in (f"{hours} h" if hours else "", f"{rest} min" if rest else "") if part)


def deadline_message(what: str, minutes: float, hint: str, context: dict[str, Any] | None) -> str:
    """The alert in one sentence: the run, when it was queued, the deadline, what to check."""
    context = context or {}
    run = context.get("dag_run") or {}
    deadline = context.get("deadline") or {}
    return (
        f"DEADLINE MISSED: {run.get('dag_id', '?')} run {run.get('dag_run_id', '?')} ({what}) is not finished "
        f"{duration_text(minutes)} after it was queued at {run.get('queued_at', '?')} (deadline "
        f"{deadline.get('deadline_time', '?')}; state {run.get('state', '?')}). {hint}"
    )


async def deadline_missed(
    *, what: str, minutes: float, hint: str, context: dict[str, Any] | None = None, **_: Any
) -> None:
    """The ``AsyncCallback`` of the DAGs' deadline alerts (Airflow adds ``context``: the run and deadline)."""
    log.error("%s", deadline_message(what, minutes, hint, context))
