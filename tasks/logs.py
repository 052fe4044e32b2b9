"""One logging setup for every Vigil process (CLI, trainer, gate, tuning and serving entry points).

Lines go to stderr as ``time LEVEL logger: message``; the DAG tasks that run an entry point as a
subprocess read that shape back into log records of the right level (:func:`run_logged`,
:func:`parse_line`), so the Airflow task log shows a trainer's INFO as INFO, not as ERROR (Airflow
logs a task's raw stderr at level error, every line).
"""

from __future__ import annotations

import codecs
import logging
import os
import re
import subprocess
import sys
import threading
import time

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Chatty libraries: their INFO lines drown the stage's own progress lines.
QUIET = ("httpx", "urllib3", "mlflow.tracking.fluent", "botocore", "s3fs", "fsspec")
# FORMAT, and MLflow's own handler's variant of it (dates with slashes).
LINE = re.compile(
    r"^\d{4}[-/]\d\d[-/]\d\d[ T][\d:,.]+\s+(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+(?P<name>[\w.\-]+):\s?(?P<message>.*)$"
)
# Lines that are not in FORMAT but say their own level: Python's warnings and uncaught tracebacks.
WARNING_LINE = re.compile(r"^\S+:\d+: \w*Warning: ")
TRACEBACK_START = "Traceback (most recent call last):"
# A child's progress redraws ("\r" without "\n"): at most one line per this many seconds.
PROGRESS_INTERVAL_S = 30.0


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not the object it was at setup: a
    later redirection (``contextlib.redirect_stderr``, a test's capture) neither loses records nor
    makes a logging thread write to a closed file."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_logging(level: int = logging.INFO) -> None:
    """Configure the root logger once (a second call changes nothing)."""
    logging.basicConfig(level=level, handlers=[StderrHandler()], format=FORMAT)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)


def parse_line(line: str) -> tuple[int, str, str]:
    """(level, logger name, message) of one line in :data:`FORMAT`; other lines are INFO of ``child``."""
    match = LINE.match(line.rstrip("\n"))
    if match is None:
        return logging.INFO, "child", line.rstrip("\n")
    return logging.getLevelName(match["level"]), match["name"], match["message"]


class _Relay:
    """Re-logs one stream of a child process, line by line, each at the level the line states.

    A line in :data:`FORMAT` keeps its level and logger. Other lines: a traceback is an error up to the
    next line in FORMAT, a Python warning is a warning, an indented line continues the record before it
    (a multi-line message, a warning's source line), anything else is INFO of ``default``. Redraws
    (``\\r``-terminated, e.g. a progress bar) are throttled to one per :data:`PROGRESS_INTERVAL_S`
    seconds, and the last state is always logged.
    """

    def __init__(self, default: logging.Logger, progress_interval_s: float, keep: list[str] | None) -> None:
        self.default = default
        self.progress_interval_s = progress_interval_s
        self.keep = keep
        self.level, self.logger = logging.INFO, default
        self.in_traceback = False
        self._last_progress = float("-inf")
        self._pending: str | None = None

    def line(self, text: str) -> None:
        self._pending = None
        self._emit(text)

    def redraw(self, text: str) -> None:
        if not text.strip():
            return
        now = time.monotonic()
        if now - self._last_progress >= self.progress_interval_s:
            self._last_progress, self._pending = now, None
            self._emit(text)
        else:
            self._pending = text

    def flush(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._emit(pending)

    def _emit(self, text: str) -> None:
        text = text.rstrip()
        if not text:
            return
        if self.keep is not None:
            self.keep.append(text)
        match = LINE.match(text)
        if match is not None:
            self.level, self.logger = logging.getLevelName(match["level"]), logging.getLogger(match["name"])
            self.in_traceback = False
            self.logger.log(self.level, "%s", match["message"])
            return
        if text.startswith(TRACEBACK_START):
            self.in_traceback = True
            if self.level < logging.ERROR:  # a bare traceback; after log.exception it stays that record's
                self.level, self.logger = logging.ERROR, self.default
        elif WARNING_LINE.match(text):
            self.level, self.logger, self.in_traceback = logging.WARNING, self.default, False
        elif not self.in_traceback and not text[:1].isspace():
            self.level, self.logger = logging.INFO, self.default
        self.logger.log(self.level, "%s", text)


def _pump(stream, relay: _Relay) -> None:
    """Read ``stream`` as bytes arrive; split on ``\\n`` (lines) and lone ``\\r`` (redraws)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    buffer = ""
    fd = stream.fileno()
    while chunk := os.read(fd, 65536):
        buffer += decoder.decode(chunk)
        while (match := re.search(r"\r\n|\n|\r", buffer)) is not None:
            piece, separator, buffer = buffer[: match.start()], match.group(), buffer[match.end() :]
            if separator == "\r":
                relay.redraw(piece)
            elif piece.strip():
                relay.line(piece)
            else:
                relay.flush()  # "\n" right after a redraw: the bar's final state
    buffer += decoder.decode(b"", final=True)
    relay.flush()
    if buffer.strip():
        relay.line(buffer)


def run_logged(
    command: list[str],
    *,
    env: dict[str, str] | None = None,
    logger: logging.Logger | None = None,
    progress_interval_s: float = PROGRESS_INTERVAL_S,
) -> str:
    """Run ``command``, re-logging its stderr and stdout as they come (see :class:`_Relay`); its stdout.

    Raises ``subprocess.CalledProcessError`` when the command exits with a non-zero status.
    """
    logger = logger or logging.getLogger("vigil.child")
    stdout: list[str] = []
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, bufsize=0)
    errors = threading.Thread(
        target=_pump, args=(proc.stderr, _Relay(logger, progress_interval_s, None)), daemon=True
    )
    errors.start()
    try:
        _pump(proc.stdout, _Relay(logger, progress_interval_s, stdout))
        errors.join()
    except BaseException:  # a timeout or a kill of this task: the child must not outlive it
        proc.kill()
        raise
    finally:
        returncode = proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    if returncode:
        raise subprocess.CalledProcessError(returncode, command)
    return "\n".join(stdout)
