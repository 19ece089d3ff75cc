"""One retry policy for every outside call - both CRMs and the NPPES registry (tenacity); what is
retryable is decided in ``classify`` only, the wait in ``RetryPolicy.wait_for`` (a server's
``Retry-After`` first), the attempt budget in ``RetryPolicy.attempts``.

- 429 HubSpot ``TEN_SECONDLY_ROLLING`` (or any 429 without a DAILY policy): wait ``Retry-After``
  if sent, else ``X-HubSpot-RateLimit-Interval-Milliseconds``, else exponential backoff;
- 429 HubSpot ``DAILY`` and Salesforce 403 ``REQUEST_LIMIT_EXCEEDED``: ``QuotaExhausted`` - the flow
  stops cleanly with its state saved and resumes next run;
- 5xx, 423/477, timeouts, connection errors (urllib3 / requests / socket), ``UNABLE_TO_LOCK_ROW``:
  retried with backoff;
- Salesforce 401 ``INVALID_SESSION_ID``: re-authenticate once (when the connector can), then retry;
- any other 4xx (validation, not found, missing scopes): never retried.

Records a CRM answered with a per-record ``UNABLE_TO_LOCK_ROW`` inside a successful batch call are
sent again up to ``RECORD_RETRY_ROUNDS`` times (the call itself succeeded, so no call retry applies).

Waits go through an injectable ``sleep`` (``async_sleep`` for the async NPPES client), so tests
measure the waits without waiting. Exceptions raised from here never carry
credentials (the clients' exceptions hold response headers and bodies, not request headers).
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

import httpx
import requests
import urllib3
from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from connectors.ratelimit import BudgetExhausted

T = TypeVar("T")
RECORD_RETRY_ROUNDS = 3  # re-sends of records a batch answered locked (UNABLE_TO_LOCK_ROW)

__all__ = ["Action", "BudgetExhausted", "Decision", "QuotaExhausted", "RetryPolicy", "classify", "error_codes",
           "error_message", "is_request_error", "is_retryable"]


class QuotaExhausted(RuntimeError):
    """The CRM's daily API quota is used up: stop the run cleanly, resume on the next one."""


class Action(Enum):
    RETRY = "retry"
    REAUTH = "reauth"
    QUOTA = "quota"
    FATAL = "fatal"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    wait: float | None = None  # seconds the server asked for, if it said


def _header(headers: Any, name: str) -> str | None:
    if not headers:
        return None
    try:
        value = headers.get(name)
        if value is None and hasattr(headers, "items"):
            lowered = name.lower()
            value = next((v for k, v in headers.items() if str(k).lower() == lowered), None)
        return value
    except Exception:  # noqa: BLE001
        return None


def _json(body: Any) -> Any:
    if body is None or isinstance(body, (dict, list)):
        return body
    try:
        return json.loads(body.decode() if isinstance(body, bytes) else body)
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None


def error_codes(body: Any) -> list[str]:
    """Error codes in a CRM error body (Salesforce list / HubSpot object)."""
    data = _json(body)
    codes: list[str] = []
    items = data if isinstance(data, list) else [data] if isinstance(data, dict) else []
    for item in items:
        if not isinstance(item, dict):
            continue
        for key in ("errorCode", "statusCode", "category", "policyName", "code", "subCategory"):
            if item.get(key):
                codes.append(str(item[key]))
        for sub in item.get("errors") or []:
            if isinstance(sub, dict):
                codes.extend(str(sub[k]) for k in ("code", "statusCode", "errorCode") if sub.get(k))
    return codes


def error_message(exc: BaseException) -> str:
    """A short message for logs and pending reasons: status, codes and the CRM's message."""
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None) if hasattr(exc, "body") else getattr(exc, "content", None)
    data = _json(body)
    message = None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        message = data[0].get("message")
    elif isinstance(data, dict):
        message = data.get("message")
    parts = [str(p) for p in (status, ",".join(error_codes(body)) or None, message) if p]
    return " ".join(parts)[:500] if parts else f"{type(exc).__name__}: {str(exc)[:300]}"


def _wait_hint(headers: Any, rate_limited: bool = False) -> float | None:
    """``Retry-After`` when sent; for a 429 without it, HubSpot's rolling-window length."""
    retry_after = _header(headers, "Retry-After")
    if retry_after:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            pass
    if not rate_limited:
        return None
    interval = _header(headers, "X-HubSpot-RateLimit-Interval-Milliseconds")
    if interval:
        try:
            return max(0.0, float(interval) / 1000.0)
        except ValueError:
            pass
    return None


_NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,  # MaxRetryError, ProtocolError, timeouts, NewConnectionError
    httpx.TransportError,  # the NPPES client: timeouts, connection and protocol errors
    socket.timeout,
    ConnectionError,
    TimeoutError,
)


def classify(exc: BaseException) -> Decision:
    """Retryable, re-authenticate, quota exhausted, or fatal - the one place this is decided."""
    if isinstance(exc, (QuotaExhausted, BudgetExhausted)):
        return Decision(Action.QUOTA, str(exc))
    status = getattr(exc, "status", None)
    if isinstance(status, int) and status > 0:
        body = getattr(exc, "body", None) if hasattr(exc, "body") else getattr(exc, "content", None)
        headers = getattr(exc, "headers", None)
        codes = error_codes(body)
        message = error_message(exc)
        if status == 429:
            if "DAILY" in codes:
                return Decision(Action.QUOTA, f"daily API limit reached: {message}")
            return Decision(Action.RETRY, f"rate limited: {message}", _wait_hint(headers, rate_limited=True))
        if status == 403 and "REQUEST_LIMIT_EXCEEDED" in codes:
            return Decision(Action.QUOTA, f"API request limit exceeded: {message}")
        if status == 401 and ("INVALID_SESSION_ID" in codes or exc.__class__.__name__ == "SalesforceExpiredSession"):
            return Decision(Action.REAUTH, f"session expired: {message}")
        if "UNABLE_TO_LOCK_ROW" in codes:
            return Decision(Action.RETRY, f"record locked: {message}", _wait_hint(headers))
        if status >= 500 or status in (408, 423, 477):
            return Decision(Action.RETRY, f"server error: {message}", _wait_hint(headers))
        return Decision(Action.FATAL, message)
    if isinstance(exc, _NETWORK_ERRORS):
        return Decision(Action.RETRY, f"network: {type(exc).__name__}")
    if status == 0:  # hubspot: SSL errors come as ApiException(status=0)
        return Decision(Action.RETRY, "network: TLS error")
    return Decision(Action.FATAL, f"{type(exc).__name__}: {str(exc)[:300]}")


def is_retryable(exc: BaseException) -> bool:
    """True for errors worth retrying later (network, 5xx, 429 burst, row locks)."""
    return classify(exc).action is Action.RETRY


def is_request_error(exc: BaseException) -> bool:
    """A 4xx about the request's content (validation, unknown field or record): splitting the
    batch can isolate the bad record. Auth and permission errors are not: they fail every call."""
    status = getattr(exc, "status", None)
    return isinstance(status, int) and status in (400, 404, 409, 422) and classify(exc).action is Action.FATAL


def is_lock_error(codes: list[str]) -> bool:
    return "UNABLE_TO_LOCK_ROW" in codes


@dataclass
class RetryPolicy:
    """Backoff settings; ``sleep`` is injectable (tests pass a no-op)."""

    attempts: int = 6
    base_wait: float = 0.5
    max_wait: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    jitter: bool = True

    async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def wait_for(self, exc: BaseException | None, attempt_number: int) -> float:
        """Seconds to wait after failed attempt ``attempt_number``: what the server asked for
        (``Retry-After``, HubSpot's rolling window), else exponential backoff with jitter."""
        hint = classify(exc).wait if exc is not None else None
        if hint is not None:
            return min(hint, self.max_wait)
        backoff = self.base_wait * (2 ** (attempt_number - 1))
        if self.jitter:
            backoff *= 0.5 + random.random() / 2
        return min(backoff, self.max_wait)

    def _wait(self, state: RetryCallState) -> float:
        return self.wait_for(state.outcome.exception() if state.outcome else None, state.attempt_number)

    async def call_async(self, fn: Callable[[], Awaitable[T]], first_failure: BaseException | None = None,
                         on_retry: Callable[[], None] | None = None) -> T:
        """``await fn()`` with retries, for the async registry client. ``first_failure``: the error
        of an attempt the caller already made (setting tenacity up costs more CPU than a loopback
        request, so callers try once before calling this)."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=self._wait,
            retry=retry_if_exception(lambda e: classify(e).action is Action.RETRY),
            sleep=self.async_sleep,
            reraise=True,
        )
        pending = first_failure
        async for attempt in retrying:
            with attempt:
                if pending is not None:  # attempt 1 is the caller's failed first attempt
                    failed, pending = pending, None
                    raise failed
                if on_retry is not None:
                    on_retry()
                result = await fn()
        return result

    def call(
        self,
        fn: Callable[..., T],
        *args: Any,
        reauth: Callable[[], None] | None = None,
        on_retry: Callable[[Decision], None] | None = None,
        **kwargs: Any,
    ) -> T:
        """``fn(*args, **kwargs)`` with retries; QuotaExhausted on quota; the error otherwise."""

        def before_sleep(state: RetryCallState) -> None:
            if on_retry and state.outcome and state.outcome.exception():
                on_retry(classify(state.outcome.exception()))

        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=self._wait,
            retry=retry_if_exception(lambda e: classify(e).action is Action.RETRY),
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        reauthenticated = False
        while True:
            try:
                return retrying(fn, *args, **kwargs)
            except Exception as exc:
                decision = classify(exc)
                if decision.action is Action.REAUTH and reauth is not None and not reauthenticated:
                    reauth()
                    reauthenticated = True
                    continue
                if decision.action is Action.QUOTA:
                    if isinstance(exc, (QuotaExhausted, BudgetExhausted)):
                        raise
                    raise QuotaExhausted(decision.reason) from None
                raise
