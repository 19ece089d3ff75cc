"""A rate limit shared by every worker of the fleet, on a Prefect global concurrency limit.

With ``LEADFLOW_FLEET_RATE_LIMIT=true`` (set for deployments in prefect.yaml), each CRM call also
takes one slot of the GCL ``leadflow-<crm>-api``, whose slots decay at a fixed rate: with
capacity C and decay D per second, no window of W seconds sees more than C + D·W calls from the
whole fleet. ``strict=True``: a missing GCL is an error, not a silently unlimited fleet.
"""

from __future__ import annotations

import os
from typing import Any

ENV = "LEADFLOW_FLEET_RATE_LIMIT"


def limit_name(crm: str) -> str:
    return f"leadflow-{crm}-api"


def enabled() -> bool:
    return os.environ.get(ENV, "").lower() in ("1", "true", "yes")


class PrefectRateLimiter:
    def __init__(self, name: str):
        self.name = name

    def acquire(self) -> None:
        from prefect.concurrency.sync import rate_limit

        rate_limit(self.name, occupy=1, strict=True)


class ChainedLimiter:
    """Acquire each limiter in turn: the local one first, so the fleet's slots are not held idle."""

    def __init__(self, *limiters: Any):
        self.limiters = limiters

    def acquire(self) -> None:
        for limiter in self.limiters:
            limiter.acquire()


def apply_fleet_limit(connector: Any, crm: str) -> None:
    """Route the connector's ordinary calls through the fleet limit too (when enabled)."""
    if not enabled():
        return
    limiters = connector.meter.limiters
    fleet = PrefectRateLimiter(limit_name(crm))
    limiters["default"] = ChainedLimiter(limiters["default"], fleet) if "default" in limiters else fleet
