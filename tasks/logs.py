"""One logging setup for every Vigil process (CLI, trainer, gate, tuning and serving entry points).

Lines go to stderr as ``time LEVEL logger: message``; the DAG tasks that run an entry point as a
subprocess parse that shape back into log records of the right level (:func:`parse_line`), so the
Airflow task log shows a trainer's INFO as INFO, not as ERROR.
"""

from __future__ import annotations

import logging
import re
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Chatty libraries: their INFO lines drown the stage's own progress lines.
QUIET = ("httpx", "urllib3", "mlflow.tracking.fluent", "botocore", "s3fs", "fsspec")
LINE = re.compile(
    r"^\d{4}-\d\d-\d\d[ T][\d:,.]+\s+(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+(?P<name>[\w.\-]+):\s?(?P<message>.*)$"
)


def setup_logging(level: int = logging.INFO) -> None:
    """Configure the root logger once (a second call changes nothing)."""
    logging.basicConfig(level=level, stream=sys.stderr, format=FORMAT)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)


def parse_line(line: str) -> tuple[int, str, str]:
    """(level, logger name, message) of one line in :data:`FORMAT`; other lines are INFO of ``child``."""
    match = LINE.match(line.rstrip("\n"))
    if match is None:
        return logging.INFO, "child", line.rstrip("\n")
    return logging.getLevelName(match["level"]), match["name"], match["message"]
