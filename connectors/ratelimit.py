"""Client-side rate limiting, a per-run API budget, and call accounting.

- ``SlidingWindowLimiter``: at most ``max_calls`` per ``period`` seconds as the server counts them
  (a slot is free again a period after the call's answer, and the calls HubSpot's
  ``X-HubSpot-RateLimit-Remaining`` shows that it did not make take slots too; thread-safe);
  HubSpot's default is 190 per 10 s for ordinary calls and 5 per second for search (its own
  bucket), so 429s are rare.
- ``ApiBudget``: a per-run cap (``max_calls``) and/or a share of the daily quota the CRM reports
  (``daily_share``: e.g. 0.2 = at most 20 % of what remained when the run started); over it,
  ``BudgetExhausted`` is raised *before* the call, so the flow stops cleanly with its state saved.
- ``CallMeter``: one gate every connector call goes through: limiter, budget, counts by endpoint,
  and the remaining quota seen in response headers. ``usage()`` is what ``api_usage()`` returns.
- ``PrefectGlobalLimiter``: optional, the Prefect global concurrency limit ``leadflow-<crm>-api``
  (slot decay) that keeps a fleet of workers under the CRM's limit together.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any


class BudgetExhausted(RuntimeError):
    """This run's API budget is spent: stop cleanly, the next run resumes from the watermark."""


class SlidingWindowLimiter:
    """At most ``max_calls`` calls in any ``period`` seconds, as the server counts them.

    A call holds its slot from ``acquire`` until ``release`` and for ``period`` after that: the
    server counted the call at some moment before it answered, so a window measured from the answer
    covers the server's own whatever the network did. (Counting from the start of the call instead
    let a call that reached the server late share the server's window with one sent a window later:
    3 429s in 2,966 calls of a rate-limited 50k backfill, each costing its page a 10 s wait.)
    ``slot()`` pairs the two."""

    def __init__(
        self,
        max_calls: int,
        period: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if max_calls <= 0 or period <= 0:
            raise ValueError("max_calls and period must be positive")
        self.max_calls, self.period = max_calls, period
        self._clock, self._sleep = clock, sleep
        self._answered: deque[float] = deque()  # when each call of the last period was answered
        self._in_flight = 0
        self._lock = threading.Lock()
        self.waited = 0.0

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                while self._answered and now - self._answered[0] >= self.period:
                    self._answered.popleft()
                if len(self._answered) + self._in_flight < self.max_calls:
                    self._in_flight += 1
                    return
                # every slot is in flight or answered within the period: wait for the oldest answer
                # to leave the window, or (all in flight) for an answer
                wait = self.period - (now - self._answered[0]) if self._answered else 0.005
            self.waited += wait
            self._sleep(max(wait, 0.001))

    def release(self) -> None:
        """The call that ``acquire`` let through has its answer (or failed)."""
        with self._lock:
            self._in_flight -= 1
            self._answered.append(self._clock())

    def observe_remaining(self, remaining: int) -> None:
        """The server's count of calls left in its window (HubSpot's ``X-HubSpot-RateLimit-Remaining``),
        read off the answer to a call still held here. The window is the portal's, shared with its
        other apps and with the run before this one: the calls the server counted that this limiter
        did not make take slots too, from now (a little longer than the server holds them)."""
        with self._lock:
            now = self._clock()
            while self._answered and now - self._answered[0] >= self.period:
                self._answered.popleft()
            unknown = self.max_calls - max(remaining, 0) - len(self._answered) - self._in_flight
            self._answered.extend([now] * unknown)

    @property
    def held(self) -> int:
        """Slots taken now: calls in flight plus calls answered within the last period."""
        with self._lock:
            now = self._clock()
            return self._in_flight + sum(1 for t in self._answered if now - t < self.period)

    @contextmanager
    def slot(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


class PrefectGlobalLimiter:
    """The fleet-wide limit: one slot of the Prefect global concurrency limit ``name`` (created
    with a slot decay, see docs/operations.md) per CRM call, shared by every worker. Opt-in
    (``LEADFLOW_PREFECT_RATE_LIMIT``): it costs a Prefect API round trip per call."""

    def __init__(self, name: str, timeout_seconds: float | None = 300.0):
        self.name, self.timeout_seconds = name, timeout_seconds

    def acquire(self) -> None:
        from prefect.concurrency.sync import rate_limit

        rate_limit(self.name, occupy=1, timeout_seconds=self.timeout_seconds, strict=False)


@dataclass
class ApiBudget:
    max_calls: int | None = None
    daily_share: float | None = None
    used: int = 0
    daily_remaining_at_start: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def limit(self) -> int | None:
        limits = []
        if self.max_calls is not None:
            limits.append(self.max_calls)
        if self.daily_share is not None and self.daily_remaining_at_start is not None:
            limits.append(int(self.daily_remaining_at_start * self.daily_share))
        return min(limits) if limits else None

    def spend(self, endpoint: str) -> None:
        with self._lock:
            limit = self.limit
            if limit is not None and self.used >= limit:
                raise BudgetExhausted(f"API budget of {limit} calls for this run is spent (next call: {endpoint})")
            self.used += 1

    def observe_daily_remaining(self, remaining: int) -> None:
        with self._lock:
            if self.daily_remaining_at_start is None:
                self.daily_remaining_at_start = remaining


class CallMeter:
    """Counts, limits and budgets every call of one connector."""

    def __init__(
        self,
        limiters: dict[str, SlidingWindowLimiter] | None = None,
        budget: ApiBudget | None = None,
        fleet: PrefectGlobalLimiter | None = None,
    ):
        self.limiters = limiters or {}
        self.budget = budget or ApiBudget()
        self.fleet = fleet
        self.calls: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        self.quota: dict[str, Any] = {}
        self._lock = threading.Lock()

    @contextmanager
    def call(self, endpoint: str, bucket: str = "default") -> Iterator[None]:
        """One attempt of a call: budgeted, limited (its slot held until it has its answer) and counted."""
        self.budget.spend(endpoint)
        limiter = self.limiters.get(bucket) or self.limiters.get("default")
        with limiter.slot() if limiter is not None else nullcontext():
            if self.fleet is not None:
                self.fleet.acquire()
            with self._lock:
                self.calls[endpoint] += 1
            yield

    def retried(self, endpoint: str) -> None:
        with self._lock:
            self.retries[endpoint] += 1

    def observe_hubspot_headers(self, headers: Any) -> None:
        if not headers:
            return
        get = headers.get
        seen: dict[str, int] = {}  # this answer's values
        for header, key in (
            ("X-HubSpot-RateLimit-Daily", "daily_limit"),
            ("X-HubSpot-RateLimit-Daily-Remaining", "daily_remaining"),
            ("X-HubSpot-RateLimit-Max", "burst_limit"),
            ("X-HubSpot-RateLimit-Remaining", "burst_remaining"),
        ):
            value = get(header) or get(header.lower())
            if value is not None:
                try:
                    seen[key] = int(value)
                except ValueError:
                    continue
        self.quota.update(seen)
        if "daily_remaining" in self.quota:
            self.budget.observe_daily_remaining(self.quota["daily_remaining"])
        limiter = self.limiters.get("default")
        if limiter is not None and "burst_remaining" in seen:
            limiter.observe_remaining(seen["burst_remaining"])

    def observe_salesforce_usage(self, api_usage: dict[str, Any] | None) -> None:
        usage = (api_usage or {}).get("api-usage")
        if usage is None:
            return
        used, total = getattr(usage, "used", None), getattr(usage, "total", None)
        if used is None or total is None:
            return
        self.quota.update(daily_used=int(used), daily_limit=int(total), daily_remaining=int(total) - int(used))
        self.budget.observe_daily_remaining(int(total) - int(used))

    def usage(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": sum(self.calls.values()),
                "by_endpoint": dict(sorted(self.calls.items())),
                "retries": dict(sorted(self.retries.items())),
                "budget": {"limit": self.budget.limit, "used": self.budget.used},
                "quota": dict(self.quota),
            }
