"""A real Prefect server, process workers and the Prefect CLI, as an operator would run them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PREFECT = [sys.executable, "-m", "prefect"]

# Fast polling and batched recording, as docs/operations.md recommends for production.
SERVER_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    "PREFECT_UI_ENABLED": "false",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(home: Path, extra: dict[str, str]) -> dict[str, str]:
    """The parent's environment without any Prefect settings of the test session, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(SERVER_ENV)
    env["PREFECT_HOME"] = str(home)
    env.update(extra)
    return env


@contextmanager
def prefect_server(home: Path, database_url: str | None) -> Iterator[dict[str, str]]:
    """``prefect server start`` on a free port; yields the environment clients use to reach it."""
    port = free_port()
    extra = {"PREFECT_SERVER_EPHEMERAL_ENABLED": "false"}
    if database_url:
        extra["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
    env = clean_env(home, extra)
    log = open(home / "server.log", "w")
    process = subprocess.Popen([*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                               env=env, stdout=log, stderr=subprocess.STDOUT, cwd=home)
    api = f"http://127.0.0.1:{port}/api"
    try:
        _wait_healthy(api, process, home / "server.log")
        yield {**env, "PREFECT_API_URL": api}
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _wait_healthy(api: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"prefect server not healthy after {timeout}s: {log.read_text()[-2000:]}")


def prefect_cli(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    done = subprocess.run([*PREFECT, "--no-prompt", *args], env=env, cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"prefect {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                           f"{done.stderr[-3000:]}")
    return done.stdout


@contextmanager
def workers(env: dict[str, str], pool: str, count: int, logs: Path) -> Iterator[list[subprocess.Popen]]:
    """``count`` process workers on ``pool``, each with its own name and log file."""
    procs, files = [], []
    for n in range(count):
        handle = open(logs / f"worker-{n}.log", "w")
        files.append(handle)
        procs.append(subprocess.Popen(
            [*PREFECT, "worker", "start", "--pool", pool, "--name", f"worker-{n}", "--limit", "4"],
            env=env, cwd=PROJECT_ROOT, stdout=handle, stderr=subprocess.STDOUT))
    try:
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for handle in files:
            handle.close()
