"""Start-up cost of a pipeline command: seconds from ``leadflow sync`` starting to its first CRM
request, with no Prefect server (the command starts a temporary one) and with a running one
(``PREFECT_API_URL``). Part of ``leadflow bench`` (``startup_to_first_request_s``).

Each case runs the real command, ``leadflow sync --crm CRM --dry-run --quiet``, ``repeat`` times in
a fresh process against one sandbox process; the first request's time is read from the sandbox's
request log (wall clock, same machine). Both cases keep their ``PREFECT_HOME`` across repeats, as a
user's machine does, so the temporary server's first start (with its database migrations) is one
of the measurements and the median is the usual start.

Also the helpers every bench command shares: where stderr files go (``bench_log_dir``), Prefect's
start-up limit (``startup_limit``) and the checkout's revision (``git_revision``).
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SEED_LEADS = 50

# Prefect's temporary server must answer within this limit. leadflow's own default
# (``leadflow.prefect_env``, 180 s) fits a user's machine; the bench runs beside other jobs on a
# busy 2-core machine, where a start with its migrations took 45-80 s and exceeded 120 s twice.
# The start is outside every timed run; a user's own value of the variable wins.
BENCH_STARTUP_TIMEOUT_SECONDS = 600
LOG_DIR_VARIABLE = "LEADFLOW_BENCH_LOG_DIR"  # where each measurement's full stderr is kept


def git_revision() -> str | None:
    """The checkout's short HEAD (``+dirty`` with uncommitted changes to tracked files), None outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "") if head else None


def bench_log_dir() -> Path:
    """Where each measurement's stderr is kept: ``$LEADFLOW_BENCH_LOG_DIR``, else
    ``<temp dir>/leadflow-bench-logs`` (outside the measurement's own dir, which is removed)."""
    return Path(os.environ.get(LOG_DIR_VARIABLE) or Path(tempfile.gettempdir()) / "leadflow-bench-logs")


def startup_limit() -> str:
    """Prefect's start-up limit for a measurement: the user's, else ``BENCH_STARTUP_TIMEOUT_SECONDS``
    (the ``leadflow`` command has set leadflow's default by the time the bench runs: that value
    counts as unset)."""
    from leadflow.prefect_env import DEFAULT_STARTUP_TIMEOUT_SECONDS, STARTUP_TIMEOUT_VARIABLE

    value = os.environ.get(STARTUP_TIMEOUT_VARIABLE, "").strip()
    return value if value and value != str(DEFAULT_STARTUP_TIMEOUT_SECONDS) else str(BENCH_STARTUP_TIMEOUT_SECONDS)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _base_env(handle: Any, workdir: Path) -> dict[str, str]:
    from leadflow.prefect_env import STARTUP_TIMEOUT_VARIABLE
    from sandbox.environment import sandbox_environment

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and not k.startswith("LEADFLOW_")}
    env[STARTUP_TIMEOUT_VARIABLE] = startup_limit()
    env.update(sandbox_environment(handle))
    env.update({"LEADFLOW_HOME": str(workdir / "home"), "LEADFLOW_DATABASE_URL": f"sqlite:///{workdir / 'state.db'}",
                "LEADFLOW_SALESFORCE_SKIP_OWN_WRITES": "1", "LEADFLOW_HUBSPOT_RATE_LIMIT": "off",
                "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)})
    return env


def _first_request_after(handle: Any, crm: str, started: float) -> float | None:
    times = [row["at"] for row in handle.requests() if row["endpoint"].startswith(crm + ".") and row["at"] >= started]
    return round(min(times) - started, 2) if times else None


def time_to_first_request(handle: Any, crm: str, env: dict[str, str], stderr_path: Path) -> float | None:
    """One ``leadflow sync --dry-run`` in a new process; seconds until the sandbox saw its first CRM
    call. Its whole stderr is kept in ``stderr_path``."""
    handle.reset_stats()
    started = time.time()
    with open(stderr_path, "w") as stderr:
        done = subprocess.run([sys.executable, "-m", "leadflow.cli", "sync", "--crm", crm, "--dry-run", "--quiet"],
                              cwd=str(ROOT), env=env, stdout=subprocess.DEVNULL, stderr=stderr, timeout=900)
    if done.returncode not in (0, 3):
        raise RuntimeError(f"leadflow sync exited {done.returncode} (stderr: {stderr_path})")
    return _first_request_after(handle, crm, started)


def _prefect_server(env: dict[str, str], port: int, stderr_path: Path) -> subprocess.Popen:
    import httpx

    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                    "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"prefect server start exited {process.returncode} (stderr: {stderr_path})")
        time.sleep(0.5)
    process.terminate()
    raise RuntimeError(f"prefect server start did not answer within 300 s (stderr: {stderr_path})")


def _summary(values: list[float | None]) -> dict[str, Any]:
    known = [v for v in values if v is not None]
    return {"median": round(statistics.median(known), 2) if known else None, "all": values}


def measure_startup(crm: str, repeat: int = 5) -> dict[str, Any]:
    """``{"no_prefect_server": {"median", "all"}, "running_prefect_server": {...}}`` in seconds, and
    ``stderr_dir``: the full stderr of every command and of the Prefect server, one file each."""
    from connectors.crm.factory import connector_from_env
    from sandbox.environment import environment
    from sandbox.server import start_sandbox_process

    with tempfile.TemporaryDirectory(prefix="leadflow-startup-") as tmp, \
            start_sandbox_process(SEED_LEADS, random_seed=1) as handle:
        workdir = Path(tmp)
        logs = bench_log_dir() / f"startup-{crm}-{time.strftime('%Y%m%dT%H%M%S')}-{workdir.name}"
        logs.mkdir(parents=True, exist_ok=True)
        env = _base_env(handle, workdir)
        if crm == "hubspot":
            from connectors.crm.setup import hubspot_setup

            with environment({k: v for k, v in env.items() if k.startswith(("HUBSPOT_", "LEADFLOW_"))}):
                hubspot_setup(connector_from_env("hubspot"))
        ephemeral = {**env, "PREFECT_HOME": str(workdir / "prefect-ephemeral")}
        no_server = [time_to_first_request(handle, crm, ephemeral, logs / f"sync-no-server-{i}.stderr")
                     for i in range(repeat)]
        port = _free_port()
        server_env = {**env, "PREFECT_HOME": str(workdir / "prefect-server"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        server = _prefect_server(server_env, port, logs / "prefect-server.stderr")
        try:
            client_env = {**server_env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
            running = [time_to_first_request(handle, crm, client_env, logs / f"sync-running-server-{i}.stderr")
                       for i in range(repeat)]
        finally:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(5)
    return {"no_prefect_server": _summary(no_server), "running_prefect_server": _summary(running), "repeat": repeat,
            "command": f"leadflow sync --crm {crm} --dry-run --quiet", "stderr_dir": str(logs)}
