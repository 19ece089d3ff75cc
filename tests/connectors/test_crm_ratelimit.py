"""ratelimit.py: sliding window, budget, usage."""

from __future__ import annotations

import threading

import pytest

from connectors.ratelimit import ApiBudget, BudgetExhausted, CallMeter, SlidingWindowLimiter


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_window_keeps_calls_under_limit():
    clock = FakeClock()
    limiter = SlidingWindowLimiter(190, 10.0, clock=clock, sleep=clock.sleep)
    stamps = []
    for _ in range(600):
        limiter.acquire()
        stamps.append(clock.now)
    for i in range(len(stamps) - 190):
        assert stamps[i + 190] - stamps[i] >= 10.0 - 1e-9
    assert clock.now >= 30.0


def test_window_thread_safe():
    limiter = SlidingWindowLimiter(1000, 60.0)
    threads = [threading.Thread(target=lambda: [limiter.acquire() for _ in range(100)]) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(limiter._calls) == 800


def test_budget_and_usage():
    meter = CallMeter(budget=ApiBudget(max_calls=3))
    for _ in range(3):
        meter.before("search")
    with pytest.raises(BudgetExhausted):
        meter.before("search")
    meter.observe_hubspot_headers({"X-HubSpot-RateLimit-Daily-Remaining": "999", "X-HubSpot-RateLimit-Daily": "1000"})
    usage = meter.usage()
    assert usage["calls"] == 3 and usage["by_endpoint"] == {"search": 3}
    assert usage["quota"]["daily_remaining"] == 999


def test_budget_share_of_daily_quota():
    budget = ApiBudget(daily_share=0.01)
    budget.observe_daily_remaining(500)
    budget.spend("a")
    budget.spend("b")
    budget.spend("c")
    budget.spend("d")
    budget.spend("e")
    with pytest.raises(BudgetExhausted):
        budget.spend("f")
