"""Running the sandbox: in-process (a uvicorn thread) or as a subprocess (``leadflow sandbox serve``).

``start_sandbox(...)`` and ``start_sandbox_process(...)`` are context managers yielding a
``SandboxHandle``: ``.url``, ``.hubspot_token``, ``.salesforce`` (credentials), ``.stats()``,
``.reset_stats()``, ``.set_faults(spec)``, ``.set_rate_limits(spec)``, ``.requests()``,
``.dump_state(...)``, ``.expire_salesforce_sessions()``, client factories (``salesforce_client(user="rep")``:
a sales rep's session, for a person's edits), and, in-process only,
``.state`` (the live ``Sandbox``: direct access to the records for assertions).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sandbox.app import Credentials, Sandbox

SeedSpec = int | str | os.PathLike | dict | Any | None


def build_sandbox(seed: SeedSpec = None, random_seed: int = 42, faults: Any = None, rate_limits: Any = None,
                  credentials: Credentials | None = None, fault_seed: int | None = None,
                  anchor_ms: int | None = None) -> Sandbox:
    """A seeded ``Sandbox``: ``seed`` is a lead count, a JSON file path, a raw dict or ``SeedData``."""
    from sandbox import seed as seeding

    sandbox = Sandbox(credentials, faults, rate_limits, random_seed if fault_seed is None else fault_seed)
    data = None
    if isinstance(seed, bool):
        raise TypeError("seed must be a lead count, a path, a dict or SeedData")
    if isinstance(seed, int):
        data = seeding.generate(seed, random_seed, anchor_ms)
    elif isinstance(seed, str) and seed.isdigit():
        data = seeding.generate(int(seed), random_seed, anchor_ms)
    elif isinstance(seed, (str, os.PathLike)):
        data = seeding.from_json(json.loads(Path(seed).read_text()))
    elif isinstance(seed, dict):
        data = seeding.from_json(seed)
    elif seed is not None:
        data = seed
    if data is not None:
        seeding.load(sandbox, data)
    else:
        seeding.load(sandbox, seeding.SeedData({}, {}, []))
    return sandbox


class SandboxHandle:
    """A running sandbox, in-process or not; admin calls go over HTTP."""

    def __init__(self, url: str, credentials: Credentials, sandbox: Sandbox | None = None,
                 process: subprocess.Popen | None = None):
        self.url = url
        self.credentials = credentials
        self._sandbox = sandbox
        self.process = process

    @property
    def hubspot_token(self) -> str:
        return self.credentials.hubspot_token

    @property
    def salesforce(self) -> Credentials:
        """Salesforce credentials: ``username, password, security_token, client_id, client_secret, session_id``."""
        return self.credentials

    @property
    def nppes_url(self) -> str:
        return f"{self.url}/api/"

    @property
    def state(self) -> Sandbox:
        if self._sandbox is None:
            raise RuntimeError("direct state access needs an in-process sandbox; use dump_state() over HTTP")
        return self._sandbox

    def _admin(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        response = httpx.request(method, f"{self.url}/_sandbox/{path}", timeout=30, **kwargs)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        return self._admin("GET", "stats")

    def reset_stats(self) -> dict[str, Any]:
        return self._admin("POST", "stats/reset")

    def requests(self, limit: int | None = None, endpoint: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("limit", limit), ("endpoint", endpoint)) if v}
        return self._admin("GET", "requests", params=params)["requests"]

    def set_faults(self, spec: str | list[dict[str, Any]] | None, seed: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"faults": spec}
        if seed is not None:
            body["seed"] = seed
        return self._admin("POST", "faults", json=body)

    def set_rate_limits(self, spec: str | dict[str, Any] | None) -> dict[str, Any]:
        return self._admin("POST", "faults", json={"rate_limits": spec})

    def reset_limits(self) -> None:
        self._admin("POST", "limits/reset")

    def set_notify(self, url: str | None, hubspot_secret: str | None = None, delay_s: float | None = None,
                   retry_delays_s: list[float] | None = None) -> dict[str, Any]:
        """Send change notifications (HubSpot webhooks, Salesforce Outbound Messages) to ``url``
        (loopback only; None stops them), batched for ``delay_s``, a failed delivery retried after
        each of ``retry_delays_s`` (default 0.5, 1 and 2 s), then dropped; see sandbox/notify.py."""
        return self._admin("POST", "notify", json={"url": url, "hubspot_secret": hubspot_secret, "delay_s": delay_s,
                                                   "retry_delays_s": retry_delays_s})

    def notify_status(self) -> dict[str, Any]:
        return self._admin("GET", "notify")

    def expire_salesforce_sessions(self) -> None:
        self._admin("POST", "salesforce/expire_sessions")

    def restore_salesforce_session(self) -> None:
        self._admin("POST", "salesforce/restore_session")

    def dump_state(self, api: str | None = None, object: str | None = None, id: str | None = None) -> dict[str, Any]:
        params = {k: v for k, v in (("api", api), ("object", object), ("id", id)) if v}
        return self._admin("GET", "state", params=params)

    def hubspot_client(self, **kwargs: Any) -> Any:
        from sandbox.clients import hubspot_client

        return hubspot_client(self.url, self.hubspot_token, **kwargs)

    def salesforce_client(self, flow: str = "session", version: str = "59.0", user: str = "integration") -> Any:
        """A simple-salesforce client as ``user``: ``"integration"`` (leadflow's) or ``"rep"`` (a person)."""
        from sandbox.clients import salesforce_client

        return salesforce_client(self.url, self.credentials, flow, version, user=user)


@contextlib.contextmanager
def start_sandbox(seed: SeedSpec = None, *, random_seed: int = 42, faults: Any = None, rate_limits: Any = None,
                  credentials: Credentials | None = None, fault_seed: int | None = None, port: int = 0,
                  anchor_ms: int | None = None, sandbox: Sandbox | None = None) -> Iterator[SandboxHandle]:
    """Serve a sandbox from a background thread on 127.0.0.1 (a free port unless ``port``)."""
    import uvicorn

    sandbox = sandbox or build_sandbox(seed, random_seed, faults, rate_limits, credentials, fault_seed, anchor_ms)
    sock = _bind(port)
    config = uvicorn.Config(sandbox.app(), log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=1, timeout_keep_alive=30)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="leadflow-sandbox", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the sandbox server did not start")
        time.sleep(0.01)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        yield SandboxHandle(url, sandbox.credentials, sandbox=sandbox)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # proto set: asyncio then sets TCP_NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(512)
    sock.set_inheritable(True)
    return sock


READY = re.compile(r"leadflow sandbox listening on (http://127\.0\.0\.1:\d+)")


@contextlib.contextmanager
def start_sandbox_process(seed: int | str | os.PathLike | None = None, *, random_seed: int = 42,
                          faults: str | None = None, rate_limits: str | None = None, port: int = 0,
                          startup_timeout: float = 120.0, extra_args: list[str] | None = None,
                          ) -> Iterator[SandboxHandle]:
    """Run ``leadflow sandbox serve`` in a child process (its own GIL) and wait until it answers."""
    args = [sys.executable, "-m", "leadflow.cli", "sandbox", "serve", "--port", str(port),
            "--random-seed", str(random_seed)]
    if seed is not None:
        args += ["--seed", str(seed)]
    if faults:
        args += ["--faults", faults]
    if rate_limits:
        args += ["--rate-limit", rate_limits]
    args += extra_args or []
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=str(Path(__file__).resolve().parent.parent))
    try:
        url = _wait_for_url(process, startup_timeout)
        wait_ready(url, startup_timeout)
        yield SandboxHandle(url, Credentials(), process=process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _wait_for_url(process: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                raise RuntimeError("leadflow sandbox serve exited:\n" + "".join(lines[-40:]))
            continue
        lines.append(line)
        match = READY.search(line)
        if match:
            threading.Thread(target=_drain, args=(process,), daemon=True).start()
            return match.group(1)
    raise TimeoutError("leadflow sandbox serve did not print its URL in time:\n" + "".join(lines[-40:]))


def _drain(process: subprocess.Popen) -> None:
    assert process.stdout is not None
    for _ in process.stdout:
        pass


def wait_ready(url: str, timeout: float = 30.0) -> None:
    """Poll ``GET /_sandbox/health`` until it answers 200."""
    import httpx

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/_sandbox/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"sandbox at {url} not ready: {last}")
