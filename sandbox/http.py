"""The request plumbing shared by every API: JSON, the per-request context, stats and the log."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

try:
    import orjson

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value)

    def loads(raw: bytes | str) -> Any:
        return orjson.loads(raw)

except ImportError:  # pragma: no cover - orjson ships with the locked environment
    import json

    def dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()

    def loads(raw: bytes | str) -> Any:
        return json.loads(raw)


class BadJson(ValueError):
    """The request body is not valid JSON."""


@dataclass
class Ctx:
    """One request as the API handlers see it."""

    request: Request
    endpoint: str
    body_bytes: bytes
    params: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)
    _json: Any = None
    _parsed: bool = False

    @property
    def query(self) -> Any:
        return self.request.query_params

    def json(self) -> Any:
        if not self._parsed:
            self._parsed = True
            if not self.body_bytes.strip():
                self._json = None
            else:
                try:
                    self._json = loads(self.body_bytes)
                except ValueError as exc:
                    raise BadJson(str(exc)) from None
        return self._json

    def header(self, name: str) -> str | None:
        return self.request.headers.get(name)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, headers=headers, media_type="application/json;charset=utf-8")


class Stats:
    """Counts by endpoint and status, plus a bounded log of recent requests (``at``: when the
    request was admitted, after any injected delay, i.e. when rate limits judged it)."""

    def __init__(self, log_size: int = 10_000):
        self._lock = threading.Lock()
        self.since = datetime.now(timezone.utc)
        self.total = 0
        self.endpoints: dict[str, dict[str, int]] = {}
        self.log: deque[dict[str, Any]] = deque(maxlen=log_size)

    def record(self, endpoint: str, method: str, status: int, started: float, duration: float) -> None:
        with self._lock:
            self.total += 1
            by_status = self.endpoints.setdefault(endpoint, {})
            key = str(status)
            by_status[key] = by_status.get(key, 0) + 1
            self.log.append(
                {"at": started, "method": method, "endpoint": endpoint, "status": status,
                 "duration_ms": round(duration * 1000, 3)}
            )

    def reset(self) -> None:
        with self._lock:
            self.since = datetime.now(timezone.utc)
            self.total = 0
            self.endpoints = {}
            self.log.clear()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "since": self.since.isoformat(),
                "total": self.total,
                "endpoints": {name: dict(counts) for name, counts in sorted(self.endpoints.items())},
            }

    def recent(self, limit: int | None = None, endpoint: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            rows = [row for row in self.log if endpoint is None or row["endpoint"] == endpoint]
        rows = rows[-limit:] if limit else rows
        return [dict(row, at_iso=datetime.fromtimestamp(row["at"], tz=timezone.utc).isoformat()) for row in rows]


def wall() -> float:
    return time.time()
