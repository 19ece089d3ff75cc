"""Prefect settings for the ``leadflow`` command, in one place, applied before Prefect is imported.

``apply_defaults()`` sets each variable of ``DEFAULTS`` the user has not set:

- ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=180``: Prefect's temporary server must answer
  within this limit (Prefect's own default, 20 s, is exceeded on a busy 2-core machine, where a
  start with its SQLite migrations took 45-80 s);
- ``PREFECT_SERVER_ANALYTICS_ENABLED=false`` (the server's telemetry heartbeat, which logs a
  ``Failed to send telemetry`` traceback on a machine without internet) and ``DO_NOT_TRACK=1`` (the
  client library's usage analytics);
- ``PREFECT_SERVER_LOGGING_LEVEL=CRITICAL``: the temporary server's shutdown flush errors;
- the console handler at WARNING (``PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL``): Prefect's INFO lines
  ("Starting temporary server", "Finished in state Completed()", one per page and task) are left
  out of the terminal; they still reach the Prefect API and its UI. ``--debug`` keeps them;
- task-run recorder and event persister batch sizes that record a run's task runs in ~7 s instead
  of ~20 s (docs: the shared Prefect note, section 0.2).

``ensure_server()`` starts the temporary server up front when no ``PREFECT_API_URL`` is
configured, with a visible line and its elapsed time, and turns Prefect's start-up timeout into a
``PrefectStartTimeout`` that names the setting (exit code 8 in ``leadflow.errors``).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, MutableMapping

STARTUP_TIMEOUT_VARIABLE = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
DEFAULT_STARTUP_TIMEOUT_SECONDS = 180
PREFECT_START_TIMEOUT_TEXT = "Timed out while attempting to connect to ephemeral Prefect API server"

DEFAULTS: dict[str, str] = {
    STARTUP_TIMEOUT_VARIABLE: str(DEFAULT_STARTUP_TIMEOUT_SECONDS),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "200",
}
QUIET_CONSOLE: dict[str, str] = {"PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING"}


class PrefectStartTimeout(RuntimeError):
    """Prefect's temporary server did not answer within the start-up limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"the temporary Prefect server did not start within {limit} s: raise "
            f"{STARTUP_TIMEOUT_VARIABLE}, or set PREFECT_API_URL to a running Prefect server")


class PrefectSettingError(ValueError):
    """A Prefect setting leadflow depends on has a value Prefect would refuse."""


def check_startup_timeout(environ: MutableMapping[str, str] = os.environ) -> None:
    """The start-up limit must be whole seconds; checked before Prefect is imported (Prefect
    itself would print a validation error on import and go on)."""
    raw = environ.get(STARTUP_TIMEOUT_VARIABLE, "").strip()
    if raw and not (raw.isascii() and raw.isdigit() and int(raw) > 0):
        raise PrefectSettingError(f"{STARTUP_TIMEOUT_VARIABLE}={raw!r}: expected whole seconds, e.g. "
                                  f"{DEFAULT_STARTUP_TIMEOUT_SECONDS}")


def debug_requested(argv: list[str] | None = None, environ: MutableMapping[str, str] = os.environ) -> bool:
    """``--debug`` among the arguments, or ``LEADFLOW_DEBUG=1``."""
    args = sys.argv[1:] if argv is None else argv
    return "--debug" in args or environ.get("LEADFLOW_DEBUG", "").strip().lower() in ("1", "true", "on", "yes")


def apply_defaults(environ: MutableMapping[str, str] = os.environ, quiet: bool = True) -> dict[str, str]:
    """Set each default the environment lacks (a user's own value always wins); what was set."""
    wanted = {**DEFAULTS, **(QUIET_CONSOLE if quiet else {})}
    applied = {name: value for name, value in wanted.items() if not environ.get(name)}
    environ.update(applied)
    return applied


def startup_timeout() -> int:
    """The start-up limit in whole seconds, as Prefect reads it (environment or profile)."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    return int(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())


RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class _NoRunErrors(logging.Filter):
    """Keeps a flow or task run's error reports (with their tracebacks) off the terminal: the
    command's one-line error says what failed. They still reach the Prefect API."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and record.name.startswith(RUN_LOGGERS))


def quiet_run_errors() -> None:
    """Add ``_NoRunErrors`` to Prefect's console handlers (after Prefect configured logging)."""
    import prefect  # noqa: F401 - configures logging on import

    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PrefectConsoleHandler" and not any(
                isinstance(f, _NoRunErrors) for f in handler.filters):
            handler.addFilter(_NoRunErrors())


def api_configured() -> bool:
    """A Prefect API URL is set (environment, profile or ``temporary_settings``)."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def ensure_server(say: Callable[[str], None]) -> float | None:
    """Start Prefect's temporary server now, unless a Prefect API is configured; its start-up time.

    ``say`` gets one line before the start and one after it. The start-up limit is
    ``startup_timeout()``; past it, ``PrefectStartTimeout``."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_ENABLED

    if api_configured() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    if server.running:
        return None
    limit = startup_timeout()
    say("starting a temporary Prefect server (set PREFECT_API_URL to use a running one)...")
    started = time.monotonic()
    try:
        server.start(timeout=limit)
    except RuntimeError as exc:
        if PREFECT_START_TIMEOUT_TEXT in str(exc):
            server.stop()  # Prefect leaves the slow server process running
            raise PrefectStartTimeout(limit) from None
        raise
    elapsed = time.monotonic() - started
    say(f"Prefect server ready in {elapsed:.1f} s")
    return elapsed
