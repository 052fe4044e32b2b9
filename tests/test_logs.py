"""A child process's output re-logged at the right level (what the Airflow task log of `train` shows)."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest

from tasks.logs import run_logged

CHILD = textwrap.dedent(
    """
    import sys, time, warnings
    from tasks.logs import setup_logging
    import logging
    setup_logging()
    log = logging.getLogger("vigil.train")
    log.info("starting training with %d epochs", 3)
    log.warning("no GPU: training on the CPU")
    for i in range(50):  # a progress bar: carriage-return redraws, no newline until the end
        sys.stderr.write(f"\\rprogress {i + 1}/50")
        sys.stderr.flush()
        time.sleep(0.002)
    sys.stderr.write("\\n")
    warnings.warn("a library's deprecation")
    sys.stderr.write("  warnings.warn(...)\\n")  # what a warning from a file shows: its source line
    sys.stderr.write("2026/12/01 18:58:51 WARNING mlflow.pyfunc: a library's own log format\\n")
    log.info("registering")
    sys.stderr.write("Successfully registered model 'm'.\\n")  # a library's bare print
    try:
        raise ValueError("inner detail")
    except ValueError:
        log.exception("a step failed and was retried")
    log.info("done")
    print('{"version": "3"}')
    """
)


def test_a_childs_lines_keep_their_level_and_logger_and_a_bar_becomes_a_few_lines(caplog):
    caplog.set_level(logging.DEBUG)
    stdout = run_logged([sys.executable, "-c", CHILD], progress_interval_s=3600)
    records = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]

    assert ("vigil.train", "INFO", "starting training with 3 epochs") in records
    assert ("vigil.train", "WARNING", "no GPU: training on the CPU") in records
    assert ("vigil.train", "INFO", "done") in records
    # The traceback of log.exception continues its ERROR record, at ERROR; only those lines are errors.
    errors = [m for _, level, m in records if level == "ERROR"]
    assert errors[0] == "a step failed and was retried" and "ValueError: inner detail" in errors
    assert all("progress" not in m and "starting" not in m for m in errors)
    # The bar: its first redraw, then (throttled) only its final state, not 50 lines nor one long line.
    progress = [m for _, _, m in records if m.startswith("progress")]
    assert progress == ["progress 1/50", "progress 50/50"]
    warned = [(name, m) for name, level, m in records if level == "WARNING"]
    assert any("a library's deprecation" in m for _, m in warned)
    assert ("vigil.child", "  warnings.warn(...)") in warned  # the warning's source line, indented
    assert ("mlflow.pyfunc", "a library's own log format") in warned
    # A bare line is the child's own INFO, not a continuation of the last logger's record.
    assert ("vigil.child", "INFO", "Successfully registered model 'm'.") in records
    assert stdout.splitlines()[-1] == '{"version": "3"}'


def test_a_failing_child_raises_with_its_exit_status_and_its_traceback_is_logged_as_error(caplog):
    caplog.set_level(logging.INFO)
    with pytest.raises(subprocess.CalledProcessError) as failed:
        run_logged([sys.executable, "-c", "print('partial'); raise SystemExit('gave up: disk full')"])
    assert failed.value.returncode == 1
    assert ("INFO", "partial") in [(r.levelname, r.getMessage()) for r in caplog.records]
    assert "gave up: disk full" in caplog.text
    crash = [sys.executable, "-c", "import json; json.loads('{')"]
    caplog.clear()
    with pytest.raises(subprocess.CalledProcessError):
        run_logged(crash)
    levels = {r.getMessage(): r.levelname for r in caplog.records}
    assert levels["Traceback (most recent call last):"] == "ERROR"
    assert any(m.startswith("json.decoder.JSONDecodeError") and lvl == "ERROR" for m, lvl in levels.items())


def test_the_log_handler_writes_to_stderr_as_it_is_now_not_as_it_was_at_setup():
    """A stream that was stderr at setup and is closed since (a finished capture) must not break logging."""
    import contextlib
    import io
    import logging

    from tasks.logs import StderrHandler

    handler = StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("vigil.test.stderr")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        first, second = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(first):
            logger.warning("one")
        first.close()
        with contextlib.redirect_stderr(second):
            logger.warning("two")
        assert second.getvalue() == "two\n"
    finally:
        logger.removeHandler(handler)
