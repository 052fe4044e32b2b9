"""The one way Vigil renders HTML: Jinja2 templates with autoescaping (reports hold user-derived text).

Templates live next to the code that fills them and are named by package: ``ui/models.html``
(``tasks/ui/templates/``), ``serve/page.html`` (``tasks/serve/templates/``), ``promote/gate_report.html``
(``tasks/promote/templates/``).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parent
TEMPLATE_DIRS = {name: PACKAGE / name / "templates" for name in ("ui", "serve", "promote", "curate")}


@cache
def _environment():
    import jinja2

    loader = jinja2.PrefixLoader(
        {name: jinja2.FileSystemLoader(path) for name, path in TEMPLATE_DIRS.items()}
    )
    env = jinja2.Environment(
        loader=loader, autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    env.filters["num"] = number
    env.filters["pct"] = lambda v: "—" if v is None else f"{float(v):.0%}"
    env.filters["signed"] = lambda v, digits=3: "" if v is None else f"{float(v):+.{digits}f}"
    env.filters["compact_json"] = lambda v: json.dumps(v, sort_keys=True, default=str)
    return env


def number(value: Any, digits: int = 3) -> str:
    """A table cell: ``—`` for missing values, thousands separators for counts, ``digits`` decimals."""
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


def render(template: str, **context: Any) -> str:
    """Render ``<package>/<file>`` (e.g. ``ui/models.html``) with ``context``."""
    return _environment().get_template(template).render(**context)


def stylesheet(package: str, name: str) -> str:
    """A package's stylesheet, to inline into its pages (the pages load nothing from elsewhere)."""
    return (TEMPLATE_DIRS[package] / name).read_text()
