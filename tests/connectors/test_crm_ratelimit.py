"""ratelimit.py: sliding window, budget, usage."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
        with limiter.slot():
            stamps.append(clock.now)
    for i in range(len(stamps) - 190):
        assert stamps[i + 190] - stamps[i] >= 10.0 - 1e-9
    assert clock.now >= 30.0


def test_window_thread_safe():
    limiter = SlidingWindowLimiter(1000, 60.0)
    def calls():
        for _ in range(100):
            with limiter.slot():
                pass

    threads = [threading.Thread(target=calls) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert limiter.held == 800


def test_a_slot_is_free_again_a_window_after_the_answer_not_after_the_start():
    """A call that reached the server late (here: answered 3 s after it started) was counted by the
    server as late as that: the next call in a one-call window waits for a full window after the answer."""
    clock = FakeClock()
    limiter = SlidingWindowLimiter(1, 10.0, clock=clock, sleep=clock.sleep)
    with limiter.slot():
        clock.sleep(3.0)
    limiter.acquire()
    assert clock.now >= 13.0


def test_a_call_that_fails_gives_its_slot_back():
    """A failed attempt (a timeout, a 5xx) has had its answer too: its slot is held a window after the
    failure, then free. A slot kept in flight for good would stall every call after a window's worth
    of failures."""
    clock = FakeClock()
    meter = CallMeter(limiters={"default": SlidingWindowLimiter(2, 10.0, clock=clock, sleep=clock.sleep)})
    for _ in range(2):
        with pytest.raises(TimeoutError), meter.call("contacts.list"):
            raise TimeoutError("the CRM did not answer")
    assert meter.limiters["default"].held == 2
    clock.sleep(10.0)
    assert meter.limiters["default"].held == 0
    with meter.call("contacts.list"):
        pass
    assert clock.now == 10.0 and meter.calls["contacts.list"] == 3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 2.0), st.floats(0, 0.5)), min_size=5, max_size=40))
def test_the_server_never_counts_more_than_the_limit_in_a_window_whatever_the_latencies(latencies):
    """Each call reaches the server ``to_server`` s after it starts and is answered ``answer`` s later;
    in the server's own view (arrival times) no window of 10 s holds more than 3 calls."""
    clock = FakeClock()
    limiter = SlidingWindowLimiter(3, 10.0, clock=clock, sleep=clock.sleep)
    arrivals = []
    for to_server, answer in latencies:
        with limiter.slot():
            clock.sleep(to_server)
            arrivals.append(clock.now)
            clock.sleep(answer)
    for i in range(len(arrivals) - 3):
        assert arrivals[i + 3] - arrivals[i] >= 10.0 - 1e-9


def test_budget_and_usage():
    meter = CallMeter(budget=ApiBudget(max_calls=3))
    for _ in range(3):
        with meter.call("search"):
            pass
    with pytest.raises(BudgetExhausted):
        with meter.call("search"):
            pass
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
