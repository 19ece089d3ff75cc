"""Fixtures for the connector tests: a running sandbox, state engines, fast retries."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from connectors.retry import RetryPolicy


def fast_retry(**kw: Any) -> RetryPolicy:
    kw.setdefault("sleep", lambda s: None)
    kw.setdefault("jitter", False)
    return RetryPolicy(**kw)


class _Served:
    """Fallback while ``sandbox.start_sandbox`` is not there: the Sandbox app under uvicorn."""

    def __init__(self) -> None:
        import uvicorn

        from sandbox.app import Sandbox

        self.sandbox = Sandbox()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        config = uvicorn.Config(self.sandbox.app(), host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                break
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"
        creds = self.sandbox.credentials
        self.credentials = creds
        self.hubspot_token = creds.hubspot_token
        self.state = self.sandbox

    def stats(self) -> dict[str, Any]:
        return self.sandbox.stats.snapshot()

    def reset_stats(self) -> None:
        self.sandbox.stats.reset()

    def set_faults(self, spec: Any) -> None:
        self.sandbox.set_faults(spec)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


@pytest.fixture()
def sandbox() -> Iterator[Any]:
    try:
        from sandbox import start_sandbox  # type: ignore[attr-defined]
    except ImportError:
        served = _Served()
        try:
            yield served
        finally:
            served.stop()
        return
    with start_sandbox() as running:
        yield running


@pytest.fixture()
def engine(sqlite_url):
    from leadflow.store import make_engine

    eng = make_engine(sqlite_url)
    yield eng
    eng.dispose()
