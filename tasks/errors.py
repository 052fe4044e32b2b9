"""The one error type that means "retrying cannot help": fix the cause first.

A missing credential, a bad configuration value, a model version that does not exist: a retry
would fail the same way, minutes later. Stage code raises :class:`PermanentError` (or a subclass);
the DAGs turn it into ``AirflowFailException`` through one helper (``dags/vigil_common.py``), so the
task fails at once, without its retries, with the message.
"""


class PermanentError(Exception):
    """A failure that retrying cannot fix; the message says what to fix."""
