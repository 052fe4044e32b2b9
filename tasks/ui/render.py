"""Server-side HTML for the UI pages: Jinja2 templates with autoescaping (reports hold user-derived text)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).with_name("templates")
# No script, no external resource: the pages are plain HTML with one inline stylesheet.
PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'self'; form-action 'self'"
# Stored report sites (Data Docs, gate report.html) run sandboxed in an origin of their own: their
# scripts (Data Docs' tables) may run but cannot read Airflow's cookie or call its API as the user.
STORED_CSP = "sandbox allow-scripts allow-popups"


@cache
def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _num
    env.filters["pct"] = lambda v: "—" if v is None else f"{float(v):.0%}"
    env.filters["compact_json"] = lambda v: json.dumps(v, sort_keys=True, default=str)
    return env


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def render(template: str, *, base: str, title: str, nav: str = "", **context: Any) -> str:
    """One page: ``base`` is the URL prefix the plugin app is mounted at (links are built from it)."""
    css = (TEMPLATES / "vigil.css").read_text()
    return _environment().get_template(template).render(base=base, title=title, nav=nav, css=css, **context)
